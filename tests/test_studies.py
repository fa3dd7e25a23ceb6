"""The studies of experiments/: their configs compose into what their READMEs claim, their sweeps run for a few
steps (so the commands never rot), and `archlab report` on each study's archived W&B runs regenerates its table
byte for byte, with the exact command its README gives."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from framework.cli import main
from framework.registry import get_plugin, make_config
from framework.wandb_records import read_runs
from hydra_compose import compose_train

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/runs") if p.is_dir())
MOE_VARIANTS = yaml.safe_load((ROOT / "conf/experiment/moe_vs_dense.yaml").read_text())[
    "hydra"]["sweeper"]["params"]["+study/moe_vs_dense"].split(",")
HYBRID_VARIANTS = yaml.safe_load((ROOT / "conf/experiment/hybrids.yaml").read_text())[
    "hydra"]["sweeper"]["params"]["+study/hybrids"].split(",")


def _main(argv: list[str]) -> int:
    try:
        return main(argv) or 0
    except SystemExit as exit_:
        return exit_.code


def _model(overrides: list[str]):
    cfg = OmegaConf.to_container(compose_train(overrides).model, resolve=True)
    name = cfg.pop("plugin")
    return get_plugin(name).build(make_config(name, **cfg))


def _regenerate_command(study: str) -> list[str]:
    """The README's `archlab report experiments/<study>/runs ...` command, continuation lines joined."""
    text = (ROOT / "experiments" / study / "README.md").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()  # the archive alone (a chunk's command adds a sweep dir)
             if line.strip().startswith(f"archlab report experiments/{study}/runs --")]
    assert len(lines) == 1, f"experiments/{study}/README.md must give the one command that regenerates its table"
    return shlex.split(lines[0])[2:]  # after "archlab report"


def test_every_sweep_variant_of_moe_vs_dense_is_a_file_and_only_those():
    files = sorted(p.stem for p in (ROOT / "conf/study/moe_vs_dense").glob("*.yaml"))
    assert sorted(MOE_VARIANTS) == files


def test_moe_vs_dense_variants_match_the_dense_baseline_in_active_parameters_and_attention():
    dense = _model(["experiment=moe_vs_dense", "+study/moe_vs_dense=dense"])
    attention = {k: v.shape for k, v in dense.state_dict().items() if ".ffn." not in k}
    for variant in MOE_VARIANTS:
        model = _model(["experiment=moe_vs_dense", f"+study/moe_vs_dense={variant}"])
        # Same embeddings, norms and attention: only the channel mixers differ.
        assert {k: v.shape for k, v in model.state_dict().items() if ".ffn." not in k and "router" not in k} \
            == attention, variant
        # Equal active compute: a token's active parameters within 0.7% of the dense model's (experts' gates and
        # router weights are the difference), while MoE variants hold 2.5-3.4x the parameters in all.
        assert model.n_params_active == pytest.approx(dense.n_params_total, rel=7e-3), variant
        if variant != "dense":
            assert 2.5 < model.n_params_total / dense.n_params_total < 3.5, variant


def test_moe_vs_dense_sweep_runs_every_variant_for_a_few_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = tmp_path / "sweep"
    code = _main(["train", "-m", "experiment=moe_vs_dense", "hydra.sweeper.params.seed=1337", "debug=fast",
                 "model.d_model=32", "model.n_heads=2", "callbacks=none", "sample.prompt=null",
                 "data.max_bytes=20000", f"hydra.sweep.dir={sweep}"])
    assert code == 0
    runs = read_runs(sweep, wait_s=20)
    assert len(runs) == len(MOE_VARIANTS)
    assert all(r.exit_code == 0 and r.series("val/loss", step_key="trainer/global_step") for r in runs)


def test_every_hybrids_variant_is_a_file_and_only_those():
    assert sorted(HYBRID_VARIANTS) == sorted(p.stem for p in (ROOT / "conf/study/hybrids").glob("*.yaml"))


def test_hybrids_variants_have_the_layer_patterns_of_their_papers_at_equal_active_parameters():
    models = {v: _model(["experiment=hybrids", f"+study/hybrids={v}"]) for v in HYBRID_VARIANTS}
    tokens = {v: [s.name for s in m.token_specs] for v, m in models.items()}
    assert set(tokens["attention"]) == {"attention"} and set(tokens["mamba"]) == {"mamba"}
    assert set(tokens["rglru"]) == {"rglru"}
    assert tokens["jamba"] == ["mamba"] * 4 + ["attention"] + ["mamba"] * 3  # Jamba: 1 attention in 8, offset 4
    assert [s.name for s in models["jamba"].channel_specs] == ["swiglu", "moe"] * 4
    assert tokens["griffin"] == ["rglru", "rglru", "sliding_window"] * 2  # RecurrentGemma's block_types
    assert tokens["samba"] == ["mamba", "sliding_window"] * 2
    # Equal budgets: every variant's active parameters within 5% of pure attention's (0.85M); jamba's experts
    # hold more in all, as in moe_vs_dense.
    base = models["attention"].n_params_total
    for variant, model in models.items():
        assert model.n_params_active == pytest.approx(base, rel=0.05), variant
    assert models["jamba"].n_params_total > 1.2 * models["jamba"].n_params_active
    # The windowed layers see a quarter of the 256-byte context.
    cfg = compose_train(["experiment=hybrids", "+study/hybrids=griffin"])
    assert cfg.data.seq_len == cfg.model.max_seq_len == 4 * cfg.model.sparse.window


def test_hybrids_recall_cell_runs_the_hybrids_models_unchanged_on_the_mqar_recipe_at_t128():
    params = yaml.safe_load((ROOT / "conf/experiment/hybrids_mqar.yaml").read_text())["hydra"]["sweeper"]["params"]
    mqar = yaml.safe_load((ROOT / "conf/experiment/mqar.yaml").read_text())["hydra"]["sweeper"]["params"]
    assert params["+study/hybrids"].split(",") == HYBRID_VARIANTS and params["optimizer.lr"] == mqar["optimizer.lr"]
    for variant in HYBRID_VARIANTS:
        recall = compose_train(["experiment=hybrids_mqar", f"+study/hybrids={variant}"])
        lm = compose_train(["experiment=hybrids", f"+study/hybrids={variant}"])
        cell = compose_train(["experiment=mqar", "+study/mqar/mixer=attention", "+study/mqar/length=t128"])
        # The model is the hybrids study's but for the task's vocabulary and the positions it needs.
        task_sized = ("max_seq_len", "vocab_size")
        assert {k: v for k, v in recall.model.items() if k not in task_sized} == \
            {k: v for k, v in lm.model.items() if k not in task_sized}, variant
        assert recall.model.max_seq_len == recall.data.seq_len == 128
        # Everything else is the MQAR study's recipe at its T=128 cell.
        for section in ("data", "optimizer", "scheduler", "trainer", "callbacks"):
            assert recall[section] == cell[section], (variant, section)
    model = _model(["experiment=hybrids_mqar", "+study/hybrids=griffin"])
    assert [s.name for s in model.token_specs] == ["rglru", "rglru", "sliding_window"] * 2
    assert model.tok_emb.num_embeddings == 64

def test_hybrids_sweep_trains_every_variant_for_a_few_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = tmp_path / "sweep"
    code = _main(["train", "-m", "experiment=hybrids", "debug=fast", "model.d_model=32", "model.n_heads=2",
                  "data.seq_len=128", "model.max_seq_len=128", "callbacks=none", "sample.prompt=null", "data.max_bytes=20000", f"hydra.sweep.dir={sweep}"])
    assert code == 0
    runs = read_runs(sweep, wait_s=20)
    assert len(runs) == len(HYBRID_VARIANTS)
    assert all(r.exit_code == 0 and r.series("val/loss", step_key="trainer/global_step") for r in runs)


def test_hybrids_recall_cell_trains_a_hybrid_and_logs_recall_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = tmp_path / "sweep"
    code = _main(["train", "-m", "experiment=hybrids_mqar", "+study/hybrids=samba", "optimizer.lr=3e-3", "debug=fast",
                  "model.d_model=32", "model.n_heads=2", "data.n_train=256", "data.n_val=64", "data.batch_size=8",
                  f"hydra.sweep.dir={sweep}"])
    assert code == 0
    (run,) = read_runs(sweep, wait_s=20)
    acc = run.series("val/acc", step_key="trainer/global_step")
    assert run.exit_code == 0 and acc and all(0.0 <= a <= 1.0 for _, a in acc)

@pytest.mark.parametrize("study", STUDIES)
def test_report_on_the_archived_runs_regenerates_the_table_byte_for_byte(study, tmp_path, capsys):
    argv = _regenerate_command(study)
    out = argv.index("--out")
    assert argv[0] == f"experiments/{study}/runs" and argv[out + 1] == f"experiments/{study}"
    argv = [str(ROOT / a) if a.startswith("experiments/") else a for a in argv]  # e.g. --reference's file
    argv[out + 1] = str(tmp_path)
    argv = [a for a in argv if a != "--archive"]  # the archive is the input here: nothing to keep
    assert _main(["report", *argv]) == 0, capsys.readouterr().err
    assert (tmp_path / "report.md").read_text() == (ROOT / "experiments" / study / "report.md").read_text()


@pytest.mark.parametrize("length", ["t64", "t128", "t256"])
def test_every_mqar_mixer_composes_and_builds_a_two_layer_stack_without_channel_mixers(length):
    params = yaml.safe_load((ROOT / "conf/experiment/mqar.yaml").read_text())["hydra"]["sweeper"]["params"]
    mixers = params["+study/mqar/mixer"].split(",")
    assert sorted(mixers) == sorted(p.stem for p in (ROOT / "conf/study/mqar/mixer").glob("*.yaml"))
    for mixer in mixers:
        model = _model(["experiment=mqar", f"+study/mqar/mixer={mixer}", f"+study/mqar/length={length}",
                        "model.d_model=64"])
        assert len(model.blocks) == 2 and all(s.name == "none" for s in model.channel_specs), mixer
        assert model.tok_emb.num_embeddings == 64, mixer
    cfg = compose_train(["experiment=mqar", "+study/mqar/mixer=attention", f"+study/mqar/length={length}"])
    data = instantiate(cfg.data)  # validates: 4 * num_kv <= seq_len, enough keys in the vocabulary
    assert (data.seq_len, data.num_kv) == {"t64": (64, 4), "t128": (128, 8), "t256": (256, 16)}[length]
    assert data.vocab_size == model.tok_emb.num_embeddings and cfg.model.max_seq_len == data.seq_len


@pytest.mark.parametrize("study", STUDIES)
def test_every_archived_run_holds_its_wandb_log_and_git_does_not_ignore_it(study):
    """A study's runs/ is its evidence: a .gitignore rule (wandb/ is ignored elsewhere) must not drop it from commits."""
    runs = sorted(p.parent for p in (ROOT / "experiments" / study / "runs").rglob(".hydra"))
    logs = [sorted(run.glob("wandb/offline-run-*/run-*.wandb.gz")) for run in runs]
    assert runs and all(len(found) == 1 for found in logs), dict(zip((r.name for r in runs), logs))
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("no git checkout to ask")
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", *map(str, (f[0] for f in logs))],
                             capture_output=True, text=True).stdout.split()
    assert ignored == [], f"git ignores these archived runs: {ignored}"


def _window_reach():
    import importlib.util

    spec = importlib.util.spec_from_file_location("window_reach", ROOT / "experiments/mqar/window_reach.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mqar_window_reach_bound_is_exact_at_its_extremes_and_grows_with_the_reach():
    """The bound experiments/mqar/README.md reads the windowed rows against: a reach past the whole sequence answers
    every query; a reach of nothing answers none and guesses among all values (chance = 1/kv); a longer reach or the
    global first pair can only help."""
    bound = _window_reach().reach_bound
    assert bound(64, 4, reach=64, global_first_pair=False, examples=500) == (1.0, 1.0)
    hit, acc = bound(64, 4, reach=0, global_first_pair=False, examples=500)
    assert hit == 0.0 and acc == pytest.approx(0.25)
    one, two, glob = (bound(128, 8, r, g, examples=2000) for r, g in ((15, False), (30, False), (15, True)))
    assert 0 < one[0] < two[0] < 1 and one[0] < glob[0] and one[1] < two[1] and one[1] < glob[1]
