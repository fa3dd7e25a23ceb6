"""Starts ranks 1..N-1 of a job as ``python -m framework.distributed.rank <job config>``.

Lightning's subprocess launcher re-runs the parent's command line in each child. Under ``archlab train -m`` that
command is the sweep, so every rank re-launched every job (Lightning #11300, lightning-hydra-template #393). Here
rank 0 writes the job's composed config (``cfg``, interpolations resolved) to its run directory and each child
trains exactly that config: one job, whatever the launcher or sweeper that started rank 0.

The launcher also leaves rank 0's process as it found it: Lightning sets LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT
in the parent's own environment and keeps the process group, so the next job of a sweep run in the same process
(Hydra's basic launcher) would take itself for an already-launched rank and wait forever for the old children.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import torch.distributed as dist
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf

CONFIG_NAME = ".ddp_job_config.yaml"  # in the run directory, beside .hydra/
_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
CHILD_EXIT_TIMEOUT_S = 120  # at the end of the job the other ranks only finish their own teardown


class JobLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher (environment variables, process observer) with the children's command
    built from the job's config instead of ``sys.argv``."""

    job_config: DictConfig | None = None  # set by ``train`` before ``fit``

    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        self.spawned = not self.cluster_environment.creates_processes_externally
        self.saved_env = {k: os.environ.get(k) for k in _ENV}
        return super().launch(function, *args, trainer=trainer, **kwargs)

    def end_job(self) -> None:
        """After the job (fit, final checkpoint, sample: the ranks still meet in collectives until then): wait for
        the other ranks to exit, then give this process back its environment and no process group."""
        if not getattr(self, "spawned", False):
            return
        for proc in self.procs:
            try:
                proc.wait(timeout=CHILD_EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        self.spawned = False

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        self.procs = []
        if self.job_config is None:
            raise RuntimeError("JobLauncher: no job config to start the other ranks from (framework.train sets it)")
        path = Path(str(self.job_config.paths.output_dir)) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(OmegaConf.to_yaml(self.job_config, resolve=True))
        env = self.cluster_environment
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            command = [sys.executable, "-m", "framework.distributed.rank", str(path)]
            self.procs.append(subprocess.Popen(command, env=child_env))
