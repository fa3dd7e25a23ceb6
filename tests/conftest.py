"""Shared test set-up, generic to every test file."""
import os

import pytest
import torch

# Tests use tiny tensors: extra intra-op threads only spin and fight over shared CPUs (several times
# slower on a busy 2-core machine). An explicit OMP_NUM_THREADS still wins.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same random state."""
    torch.manual_seed(0)
