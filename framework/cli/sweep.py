"""``archlab train -m``: the jobs of a sweep checked before the first one starts.

Under Hydra's basic sweeper the jobs are known up front (the cross product of the comma-separated overrides and of
``hydra.sweeper.params``): every one is composed and checked, whatever launcher then runs them (in this process,
joblib workers, submitit). Other sweepers (Optuna: ``hparams_search=...``) choose their jobs as they go, so the whole
set cannot be listed; what is checked up front instead is every value a parameter can take one at a time against
the fixed overrides: each choice, the ends of each range and interval (``probes``). A combination that fails only
together is caught when its trial starts and recorded as that job's failure. Results and the final table:
``sweep_results.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import open_dict

from ..config_schema import ConfigError
from ..data.errors import DataConfigError

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@dataclass
class SweepPlan:
    jobs: list[list[str]]     # the overrides of each config checked before the sweep starts
    complete: bool            # True: these are exactly the sweep's jobs (basic sweeper); False: probes
    expected: int | None      # how many jobs the sweep will run (None: unknown)
    sweeper: str              # the sweeper's _target_


def _is_hydra(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _compose(overrides: list[str], hydra: bool = False):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


def plan(overrides: list[str]) -> SweepPlan:
    """The configs to check before a sweep of ``overrides`` starts (see the module docstring)."""
    fixed = [o for o in overrides if "," not in o and not _is_hydra(o)]
    # The sweeper and its params may come from the command line (hydra/sweeper=..., hydra.sweeper.params.x=...).
    hydra_args = [o for o in overrides if _is_hydra(o)]
    base = _compose(fixed + hydra_args, hydra=True)
    sweeper = base.hydra.sweeper
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + [o for o in overrides if not _is_hydra(o)])
    target = str(sweeper.get("_target_", BASIC_SWEEPER))
    if target == BASIC_SWEEPER:
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        return SweepPlan(jobs, complete=True, expected=len(jobs), sweeper=target)
    by_key = {o.get_key_element(): o for o in parsed}  # as the sweeper does: the command line replaces a param
    fixed_args = [o.input_line for o in by_key.values() if not o.is_sweep_override()]
    probes = [fixed_args] + [fixed_args + [f"{key}={v}"]
                             for key, o in by_key.items() if o.is_sweep_override() for v in _values(o)]
    n_trials = sweeper.get("n_trials")
    return SweepPlan(probes, complete=False, expected=n_trials if isinstance(n_trials, int) else None, sweeper=target)


def _values(override: Override) -> list[str]:
    """The values a sweep parameter is probed at: every choice, the first and last of a range, an interval's ends."""
    if override.is_interval_sweep():
        value = override.value()
        return [str(value.start), str(value.end)]
    values = list(override.sweep_string_iterator())
    return values if override.is_choice_sweep() else sorted({values[0], values[-1]}, key=values.index)


def check_jobs(jobs: list[list[str]]) -> list[str]:
    """One line per job whose config is wrong (``job N (overrides): field: message``); [] when all are good."""
    from ..train import check_config

    problems = []
    shared = set.intersection(*(set(job) for job in jobs)) if len(jobs) > 1 else set()
    for number, job in enumerate(jobs):
        named = " ".join(o for o in job if o not in shared) or "no overrides"  # what makes this job itself
        try:
            cfg = _compose(job)
            with open_dict(cfg):
                cfg.paths.output_dir = "<sweep job directory>"  # made by Hydra when the job starts
            check_config(cfg, output_dir_exists=False)
        except (ConfigError, DataConfigError) as err:
            problems.append(f"job {number} ({named}): {err}")
        except Exception as err:  # noqa: BLE001 - e.g. Hydra's composition errors: said per job, not raised
            problems.append(f"job {number} ({named}): {type(err).__name__}: {err}")
    return problems
