"""``check_plugin``: run every contract property on one plugin; ``parametrize_with_checks``: the same as
one pytest case per property (in the spirit of scikit-learn's ``check_estimator``)."""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..plugin import Plugin
from ..registry import discover
from .checks import CHECKS, checks_for
from .report import CheckResult, CheckSkipped, ContractReport, ContractViolation
from .subject import Subject, build_subject, resolve_plugin

LOADS = "loads"  # the pseudo-property of a plugin whose entry point fails to import


def plugin_names(distribution: str | None = None) -> list[str]:
    """Names of the loaded plugins, optionally only those whose entry point comes from ``distribution``."""
    found = discover()
    return sorted(n for n in found.plugins if distribution is None or found.sources[n].split(" ")[0] == distribution)


def _name(plugin: str | Plugin) -> str:
    return plugin if isinstance(plugin, str) else plugin.name


def _caller_skip(check: str, skip: Mapping[str, str] | None) -> str | None:
    """How a check the caller skips is reported, or None when it runs."""
    return f"skipped by the caller: {skip[check]}" if skip and check in skip else None


def run_check(subject: Subject, check: str) -> CheckResult:
    """Run one property; never raises (the result says passed, failed with why, or skipped with why)."""
    func, _ = CHECKS[check]
    start = time.perf_counter()
    status, message = "passed", ""
    try:
        func(subject)
    except CheckSkipped as why:
        status, message = "skipped", str(why)
    except ContractViolation as err:
        status, message = "failed", str(err)
    except Exception as err:  # the plugin crashed inside a check: that check is violated
        where = traceback.extract_tb(err.__traceback__)[-1]
        status, message = "failed", f"raised {type(err).__name__}: {err} (at {where.filename}:{where.lineno})"
    return CheckResult(check, status, message, time.perf_counter() - start)


def check_plugin(
    plugin: str | Plugin,
    *,
    model: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    checks: Iterable[str] | None = None,
    skip: Mapping[str, str] | None = None,
    raise_on_failure: bool = True,
) -> ContractReport:
    """Check that ``plugin`` (an installed plugin's name, or a ``Plugin`` object) honours the contract.

    model:     which ``model=<option>`` to compose (the plugin's own YAML by default; a preset name works).
    overrides: config values applied after the kit shrinks the shared size keys (for plugin-specific sizes).
    checks:    run only these properties (default: every one that applies to the plugin's objective).
    skip:      property -> reason, for a documented exception (reported as skipped, with the reason).
    Raises ``ContractViolation`` naming every violated property (after running all of them) unless
    ``raise_on_failure=False``; returns the ``ContractReport`` either way.
    """
    try:
        resolved = resolve_plugin(plugin)
    except LookupError as err:
        report = ContractReport(_name(plugin), [CheckResult(LOADS, "failed", str(err))])
    else:
        names = list(checks) if checks is not None else checks_for(resolved.objective)
        unknown = sorted(set(names) - set(CHECKS))
        if unknown:
            raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
        subject = build_subject(resolved, model, overrides)
        report = ContractReport(resolved.name if model is None else f"{resolved.name} (model={model})")
        report.results = [CheckResult(name, "skipped", why) if (why := _caller_skip(name, skip))
                          else run_check(subject, name) for name in names]
    if raise_on_failure and not report.ok:
        raise ContractViolation(str(report), report)
    return report


@dataclass
class ContractCase:
    """One (plugin, property) pair as a pytest parameter; calling it runs the check."""

    plugin: str | Plugin
    check: str
    model: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    skip_reason: str | None = None

    @property
    def id(self) -> str:
        return f"{self.model or _name(self.plugin)}-{self.check}"

    def __call__(self) -> None:
        import pytest

        if self.skip_reason:
            pytest.skip(self.skip_reason)
        if self.check == LOADS:
            resolve_plugin(self.plugin)  # raises with the import error
            return
        (result,) = check_plugin(self.plugin, model=self.model, overrides=self.overrides, checks=[self.check],
                                 raise_on_failure=False).results  # a plugin no longer loading: result is `loads`
        if result.status == "skipped":
            pytest.skip(result.message)
        if result.status == "failed":
            raise ContractViolation(f"plugin {_name(self.plugin)!r} violates {result.check}: {result.message}")


def contract_cases(
    *plugins: str | Plugin,
    model: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    skip: Mapping[str, str] | None = None,
) -> list[ContractCase]:
    """One case per applicable property of each plugin; a plugin that does not load gives one failing case."""
    cases: list[ContractCase] = []
    for plugin in plugins:
        try:
            objective = resolve_plugin(plugin).objective
        except LookupError:
            cases.append(ContractCase(plugin, LOADS, model))
            continue
        cases += [ContractCase(plugin, check, model, dict(overrides or {}), _caller_skip(check, skip))
                  for check in checks_for(objective)]
    return cases


def parametrize_with_checks(
    *plugins: str | Plugin,
    model: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    skip: Mapping[str, str] | None = None,
):
    """A ``pytest.mark.parametrize`` over every contract property of ``plugins``; the test gets ``contract_check``::

        @parametrize_with_checks("mynet")
        def test_contract(contract_check):
            contract_check()
    """
    import pytest

    cases = contract_cases(*plugins, model=model, overrides=overrides, skip=skip)
    return pytest.mark.parametrize("contract_check", cases, ids=[c.id for c in cases])
