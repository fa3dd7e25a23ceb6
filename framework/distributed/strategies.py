"""Lightning's DDP and model-parallel (FSDP2) strategies, started by ``JobLauncher``. Configured in
``conf/trainer/ddp_cpu.yaml``, ``ddp.yaml``, ``fsdp_cpu.yaml``, ``fsdp.yaml``."""
from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

from .launcher import JobLauncher


class JobDDPStrategy(DDPStrategy):
    """DDP (gloo on CPU, NCCL on GPUs) whose extra ranks train the job's config (``JobLauncher``)."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if self._start_method == "popen" and not self.cluster_environment.creates_processes_externally:
            self._launcher = JobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


class JobModelParallelStrategy(ModelParallelStrategy):
    """FSDP2 (``fully_shard``, through ``LightningModule.configure_model``) whose extra ranks train the job's config.
    Runs on CPU too, where Lightning's ``fsdp`` strategy refuses."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if not self.cluster_environment.creates_processes_externally:
            self._launcher = JobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


def set_job_config(strategy: object, cfg: object) -> None:
    """Hand the job's config to the launcher that starts the other ranks (no-op for other strategies)."""
    launcher = getattr(strategy, "launcher", None)
    if isinstance(launcher, JobLauncher):
        launcher.job_config = cfg


def end_job(strategy: object) -> None:
    """The end of a job that may have started other ranks (no-op otherwise): see ``JobLauncher.end_job``."""
    launcher = getattr(strategy, "launcher", None)
    if isinstance(launcher, JobLauncher):
        launcher.end_job()
