"""What the contract kit returns: one result per checked property, and the error that names the broken ones."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["passed", "failed", "skipped"]


class ContractViolation(AssertionError):
    """A plugin breaks one or more contract properties; ``report`` holds every result. An ``AssertionError``
    so pytest shows it as a plain test failure with the message below."""

    def __init__(self, message: str, report: "ContractReport | None" = None) -> None:
        super().__init__(message)
        self.report = report


class CheckSkipped(Exception):
    """Raised by a check that does not apply to this plugin (e.g. no ``generate``)."""


@dataclass(frozen=True)
class CheckResult:
    check: str  # the property's name, e.g. "causality"
    status: Status
    message: str = ""  # why it failed or was skipped
    seconds: float = 0.0


@dataclass
class ContractReport:
    plugin: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def violated(self) -> list[str]:
        """Names of the violated properties."""
        return [r.check for r in self.failed]

    def result(self, check: str) -> CheckResult:
        for r in self.results:
            if r.check == check:
                return r
        raise KeyError(f"no result for check {check!r}; ran: {', '.join(r.check for r in self.results)}")

    def __str__(self) -> str:
        failed = self.failed
        lines = [f"plugin {self.plugin!r} violates {len(failed)} contract propert{'y' if len(failed) == 1 else 'ies'}:"
                 if failed else f"plugin {self.plugin!r} honours the contract"]
        lines += [f"  - {r.check}: {r.message}" for r in failed]
        passed = [r.check for r in self.results if r.status == "passed"]
        skipped = [f"{r.check} ({r.message})" for r in self.results if r.status == "skipped"]
        lines += [f"  {label}: {', '.join(names)}" for label, names in (("passed", passed), ("skipped", skipped))
                  if names]
        return "\n".join(lines)
