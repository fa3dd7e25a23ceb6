"""`archlab dashboard`: the lab's W&B workspace, built (never saved: that needs a server) and checked against the keys
real runs log: a tiny gpt (what every architecture logs) and a tiny hybrid stack whose layers use every mixer family
with statistics (sparse attention, LSTM, Mamba, RG-LRU, Gated DeltaNet) and MoE channel mixers."""
from __future__ import annotations

import pytest

from framework.cli import main
from framework.report.dashboard import SECTIONS, build_workspace, config_keys, panel_keys
from framework.wandb_records import RunRecord, read_runs

TINY = ["debug=fast", "logger=wandb", "callbacks=none", "model.d_model=32", "sample.prompt=null",
        "trainer.max_steps=3", "trainer.val_check_interval=3"]
RUNS = {
    # on text, so val/bpb is logged too
    "gpt": ["model=gpt", "model.n_layers=1", "data=shakespeare", "data.max_bytes=20000", "data.seq_len=32"],
    "hybrid": ["model=gpt", "model.layers=[sliding_window,lstm,mamba,rglru,gated_deltanet]", "model.n_layers=5",
               "model.ffn=moe", "data=synthetic"],
}
CORE = ("train", "val", "perf")  # sections of keys the core logs for any architecture (val/bpb: on text)
QUIET_WANDB = (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_CONSOLE", "off"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, RunRecord]:
    root = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp:
        for var, value in QUIET_WANDB:
            mp.setenv(var, value)
        for name, overrides in RUNS.items():
            try:
                code = main(["train", *overrides, *TINY, f"hydra.run.dir={root / name}"])
            except SystemExit as exit_:
                code = exit_.code
            assert code == 0, name
    return {name: read_runs(root / name, wait_s=20)[0] for name in RUNS}


@pytest.fixture(scope="module")
def workspace():
    return build_workspace("archlab", "lab-entity")


def test_the_workspace_has_the_lab_sections_and_serializes(workspace):
    names = [s.name for s in workspace.sections]
    assert names == [*SECTIONS, "compare runs"]
    assert {"train", "val", "perf", "attn", "moe", "rnn", "mixer statistics"} <= set(names)
    assert all(section.panels for section in workspace.sections)
    keys = panel_keys(workspace)
    assert keys["moe"][:1] == ["moe/load"] and "attn/pattern" in keys["attn"]
    view = workspace._to_model()  # what .save() uploads; building it needs no network
    assert view.model_dump_json()


def test_core_sections_show_only_keys_a_plain_run_logs(runs, workspace):
    keys = panel_keys(workspace)
    for section in CORE:
        missing = set(keys[section]) - set(runs["gpt"].keys())
        assert not missing, (section, sorted(missing))


def test_every_panel_key_is_logged_by_a_real_run(runs, workspace):
    logged = set(runs["gpt"].keys()) | set(runs["hybrid"].keys())
    for section, keys in panel_keys(workspace).items():
        missing = set(keys) - logged
        assert not missing, (section, sorted(missing))
    # Architecture-specific sections: every key there comes from the run of that architecture.
    for section in ("attn", "moe", "rnn", "mixer statistics"):
        assert set(panel_keys(workspace)[section]) <= set(runs["hybrid"].keys()), section


def test_media_panels_show_the_logged_images_and_histograms(runs, workspace):
    import wandb_workspaces.reports.v2 as wr

    hybrid = runs["hybrid"]
    media = [k for s in workspace.sections for p in s.panels if isinstance(p, wr.MediaBrowser) for k in p.media_keys]
    assert media == ["attn/pattern"]
    assert all(m["_type"].startswith("image") for _, m in hybrid.media("attn/pattern")) and hybrid.media("attn/pattern")
    histograms = [p.keys[0] for panels in SECTIONS.values() for p in panels if p.kind == "histogram"]
    assert histograms == ["moe/load"]
    assert hybrid.media("moe/load") and all(m["_type"] == "histogram" for _, m in hybrid.media("moe/load"))


def test_runs_are_grouped_by_a_config_key_the_runs_have(runs, workspace):
    for key in config_keys(workspace):
        for run in runs.values():
            node = run.config
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, (key, sorted(run.config))
                node = node[part]
    assert {run.config["plugin_name"] for run in runs.values()} == {"decoder"}


def test_offline_and_dry_run_print_the_sections_and_save_nothing(monkeypatch, capsys):
    import wandb_workspaces.workspaces as ws

    def no_network(self):  # noqa: ANN001
        raise AssertionError("save() called offline")

    monkeypatch.setattr(ws.Workspace, "save", no_network)
    for env, extra in (("offline", []), ("online", ["--dry-run"])):
        monkeypatch.setenv("WANDB_MODE", env)
        assert main(["dashboard", "--project", "p", "--entity", "e", *extra]) == 0
        out = capsys.readouterr().out
        assert "e/p (not saved" in out
        for section in [*SECTIONS, "compare runs"]:
            assert f"  {section}: " in out
        assert "moe/load_cv/mean" in out and "train/loss" in out
    assert main(["dashboard"]) == 2  # --project is required
    assert "--project" in capsys.readouterr().err
