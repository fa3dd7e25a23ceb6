"""More than one process: Lightning's DDP and FSDP2 strategies with a launcher that is safe under Hydra multirun
(docs/distributed.md). Each extra rank is started from the job's own composed config, never from ``sys.argv``: a
``-m`` sweep's command line would otherwise re-run the whole sweep in every rank."""
from .strategies import JobDDPStrategy, JobModelParallelStrategy, end_job, set_job_config

__all__ = ["JobDDPStrategy", "JobModelParallelStrategy", "end_job", "set_job_config"]
