"""The plugin contract kit: every built-in plugin (and preset) honours the contract, fixture plugins that
honour it pass for each objective, and each deliberately broken fixture is reported with the property it
violates."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from framework.hydra_search_path import model_options
from framework.registry import Discovery
from framework.testing import (
    CHECKS,
    ContractViolation,
    check_plugin,
    checks_for,
    contract_cases,
    parametrize_with_checks,
    plugin_names,
)

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "contract_plugins"))
from kit_fixtures import BROKEN, GOOD  # noqa: E402

# Built-in = registered by archlab's own pyproject.toml: plugins added there are checked automatically.
BUILTIN = plugin_names(distribution="archlab")
PRESETS = sorted((option, plugin) for option, plugin in model_options().items() if plugin in BUILTIN and option != plugin)


@parametrize_with_checks(*BUILTIN)
def test_builtin_plugin_honours_the_contract(contract_check):
    contract_check()


@pytest.mark.slow  # presets share their plugin's code: the fast suite checks each plugin's own YAML
@pytest.mark.parametrize("option,plugin", PRESETS, ids=[o for o, _ in PRESETS])
def test_builtin_preset_honours_the_contract(option, plugin):
    check_plugin(plugin, model=option)


@pytest.mark.parametrize("objective", sorted(GOOD))
def test_fixture_honouring_the_contract_passes_every_check_of_its_objective(objective):
    report = check_plugin(GOOD[objective])
    ran = {r.check for r in report.results if r.status == "passed"}
    assert set(checks_for(objective)) - {"generate"} <= ran, str(report)
    if objective == "seq2seq":  # the fixture exposes encode(): the independence check really ran
        assert report.result("encoder_independence").status == "passed"


@pytest.mark.parametrize("prop", sorted(BROKEN))
def test_broken_fixture_is_reported_naming_the_violated_property(prop):
    with pytest.raises(ContractViolation) as caught:
        check_plugin(BROKEN[prop])
    report = caught.value.report
    assert report.violated == [prop], str(report)  # exactly that property, nothing collateral
    assert f"  - {prop}: " in str(caught.value)


def test_leaky_causal_model_message_says_what_leaked():
    report = check_plugin(BROKEN["causality"], raise_on_failure=False)
    message = report.result("causality").message
    assert "future tokens leak into the past" in message and "position 0" in message


def test_every_check_has_a_broken_fixture_or_is_generic():
    # Each property the kit checks is proven able to fail by a fixture (encoder_visibility/independence and
    # forward_contract are exercised by the good fixtures; their failure paths are plain asserts).
    untested = set(CHECKS) - set(BROKEN) - {"forward_contract", "encoder_visibility", "encoder_independence"}
    assert not untested, untested


def test_pytest_cases_fail_with_the_property_name():
    cases = {c.check: c for c in contract_cases(BROKEN["causality"])}
    assert set(cases) == set(checks_for("causal_lm"))
    cases["forward_contract"]()  # passes
    with pytest.raises(ContractViolation, match="violates causality"):
        cases["causality"]()
    assert cases["causality"].id == "kit_leaky-causality"


def test_skip_is_reported_with_its_reason():
    report = check_plugin(BROKEN["causality"], skip={"causality": "studied on purpose"}, checks=["causality"])
    assert report.ok and report.result("causality").status == "skipped"
    assert "studied on purpose" in str(report)
    with pytest.raises(ValueError, match="unknown check"):
        check_plugin(GOOD["causal_lm"], checks=["causalty"])


def test_plugin_that_fails_to_import_is_reported(monkeypatch):
    import framework.testing.kit as kit
    import framework.testing.subject as subject

    found = Discovery(plugins={}, errors={"kaput": "failed to import kaput:PLUGIN: ModuleNotFoundError: nope"},
                      sources={})
    monkeypatch.setattr(subject, "discover", lambda: found)
    monkeypatch.setattr(kit, "discover", lambda: found)
    with pytest.raises(ContractViolation, match="loads: .*does not load.*ModuleNotFoundError: nope") as caught:
        check_plugin("kaput")
    assert caught.value.report.violated == ["loads"]
    (case,) = contract_cases("kaput")
    with pytest.raises(LookupError, match="ModuleNotFoundError"):
        case()


def test_guide_documents_every_property():
    guide = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()
    missing = [name for name in CHECKS if f"`{name}`" not in guide]
    assert not missing, f"docs/plugins.md does not describe {missing}"
