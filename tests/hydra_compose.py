"""Compose the real `conf/` tree (with plugin search paths) for tests, shrunk to test size."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, open_dict

from framework.hydra_search_path import register_search_path

# Shrinks any composed config to a seconds-long run that still validates, checkpoints and logs.
FAST = ["debug=fast", "logger=csv"]


def compose_train(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    register_search_path()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg
