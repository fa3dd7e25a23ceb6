"""``python -m framework.distributed.rank CONFIG``: one extra rank of a distributed job (started by ``JobLauncher``
with LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT set): trains the job's composed config. Rank 0 writes W&B, checkpoints
and samples; this process only computes."""
from __future__ import annotations

import os
import sys
import threading
import time

from omegaconf import OmegaConf


def _exit_with_parent() -> None:
    """A rank whose rank 0 died (killed, crashed before the first collective) would wait for it forever."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    from framework.train import train

    _exit_with_parent()
    train(OmegaConf.load(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
