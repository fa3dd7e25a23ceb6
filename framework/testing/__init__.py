"""The plugin contract kit: checks every property an archlab plugin must honour.

One call::

    from framework.testing import check_plugin
    check_plugin("mynet")            # raises ContractViolation naming each violated property

or one pytest case per property::

    from framework.testing import parametrize_with_checks

    @parametrize_with_checks("mynet")
    def test_contract(contract_check):
        contract_check()

The properties (``CHECKS``) and what each verifies are listed in docs/plugins.md.
"""
from .checks import CHECKS, checks_for, describe
from .kit import (ContractCase, build_subject, check_plugin, contract_cases, parametrize_with_checks, plugin_names,
                  run_check)
from .report import CheckResult, CheckSkipped, ContractReport, ContractViolation

__all__ = [
    "CHECKS", "CheckResult", "CheckSkipped", "ContractCase", "ContractReport", "ContractViolation", "build_subject",
    "check_plugin", "checks_for", "contract_cases", "describe", "parametrize_with_checks", "plugin_names", "run_check",
]
