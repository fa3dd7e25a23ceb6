"""Every shipped YAML composes and instantiates; every experiment runs a few steps; model YAMLs hold only what
they change from their plugin's config dataclass (the one place a default lives)."""
from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

import conf
from framework.hydra_search_path import model_options
from framework.registry import get_plugin, list_plugins, make_config
from framework.train import split_model_config, train
from hydra_compose import FAST, compose_train

CONF = Path(conf.__file__).parent


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("model", sorted(model_options()))
def test_every_model_option_builds(model, tmp_path):
    cfg = compose_train([f"model={model}"], tmp_path)
    name, values = split_model_config(cfg)
    module = get_plugin(name).build(make_config(name, **values))
    assert sum(p.numel() for p in module.parameters()) > 0


# ---- one source of truth: the config dataclass holds every default, YAML only what it changes ----------


def builtin_plugins() -> list[str]:
    return sorted(n for n, p in list_plugins().items() if (p.config_package or "").startswith("plugins."))


def builtin_yamls() -> list[tuple[str, str]]:
    """(plugin, option) for every model YAML a built-in plugin ships."""
    return sorted((plugin, option) for option, plugin in model_options().items() if plugin in builtin_plugins())


def unchanged_keys(values: dict, parent: dict, where: str = "") -> list[str]:
    """Keys (dotted, into nested sections) that ``values`` sets to what ``parent`` already holds."""
    same = []
    for key, value in values.items():
        given = parent.get(key, "<absent>") if isinstance(parent, dict) else "<absent>"
        if isinstance(value, dict) and isinstance(given, dict):
            same += unchanged_keys(value, given, f"{where}{key}.")
        elif value == given:
            same.append(f"{where}{key}")
    return same


@pytest.mark.parametrize("plugin, option", builtin_yamls())
def test_every_model_yaml_holds_only_what_it_changes(plugin, option):
    """A model YAML lists ``<plugin>_defaults`` (generated from the config dataclass) or a parent preset of the
    same plugin, and every key it sets differs from what that parent gives: a default lives in one place."""
    preset = yaml.safe_load((resources.files(get_plugin(plugin).config_package) / "model" / f"{option}.yaml")
                            .read_text()) or {}
    defaults = preset.pop("defaults", None)
    assert defaults and defaults[-1] == "_self_", f"{option}.yaml: defaults must be [<parent>, _self_]"
    (parent,) = defaults[:-1]
    siblings = {o for o, p in model_options().items() if p == plugin}
    assert parent == f"{plugin}_defaults" or parent in siblings, (option, parent)
    parent_cfg = OmegaConf.to_container(compose_train([f"model={parent}"]).model, resolve=False)
    assert unchanged_keys(preset, parent_cfg) == [], f"{option}.yaml restates what {parent} gives"


@pytest.mark.parametrize("plugin", builtin_plugins())
def test_every_plugin_defaults_node_equals_its_dataclass_defaults(plugin, tmp_path):
    """``model=<plugin>_defaults`` composes to exactly the config dataclass's defaults (vocab_size and
    max_seq_len follow the data), so the generated node, hence every YAML above it, cannot drift."""
    config_class = get_plugin(plugin).config_class
    cfg = compose_train([f"model={plugin}_defaults"], tmp_path)
    node = OmegaConf.to_container(cfg.model, resolve=False)
    expected = {"plugin": plugin, **dataclasses.asdict(config_class())}
    follows = {"vocab_size": "${data.vocab_size}", "max_seq_len": "${data.seq_len}"}
    expected.update({k: v for k, v in follows.items() if k in expected})
    assert node == expected
    name, values = split_model_config(cfg)
    data = {k: v for k, v in (("vocab_size", cfg.data.vocab_size), ("max_seq_len", cfg.data.seq_len)) if k in values}
    assert name == plugin and make_config(name, **values) == config_class(**data)


@pytest.mark.parametrize("option", options("data"))
def test_every_data_option_instantiates(option, tmp_path):
    if option == "text":  # needs the user's files
        sample = tmp_path / "corpus.txt"
        sample.write_text("to be or not to be, that is the question\n" * 200)
        extra = [f"data.paths=[{sample}]", "data.seq_len=32"]
    else:
        extra = []
    cfg = compose_train([f"data={option}", *extra], tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape
    assert int(batch["input_ids"].max()) < cfg.model.vocab_size


@pytest.mark.parametrize("override, message", [
    ("+data.lenght=4", r"^data: unknown field\(s\) lenght; allowed fields: .*length"),
    ("data.n_train=many", r"^data\.n_train: got 'many'; allowed: int$"),
    ("data.task=mqar", r"^data\.task: got 'mqar'; allowed: one of 'copy', 'reverse', 'sort', 'addition'$"),
    ("data.min_length=9", r"^data\.min_length: 9 exceeds data\.length=8$"),
])
def test_bad_data_options_fail_like_model_options(override, message):
    """Data options are a config dataclass checked by the models' validator, before anything is built."""
    from framework.data import DataConfigError, build_datamodule

    cfg = compose_train(["data=seq2seq", override])
    with pytest.raises(DataConfigError, match=message):
        build_datamodule(cfg.data, objective="seq2seq")


@pytest.mark.parametrize("option", options("optimizer"))
def test_every_optimizer_option_instantiates(option, tmp_path):
    cfg = compose_train([f"optimizer={option}"], tmp_path)
    opt = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    assert opt.param_groups[0]["lr"] == cfg.optimizer.lr
    if option == "adamw":  # the default runs PyTorch's fused kernel (CPU and CUDA alike)
        assert opt.defaults["fused"] is True


@pytest.mark.parametrize("option", options("scheduler"))
def test_every_scheduler_option_instantiates(option, tmp_path):
    cfg = compose_train([f"scheduler={option}"], tmp_path)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    sched = instantiate(cfg.scheduler)(opt, total_steps=1000)
    lrs = []
    for _ in range(1000):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(1.0) and min(lrs) >= 0.0


def test_cosine_schedule_shape(tmp_path):
    cfg = compose_train(["scheduler=cosine", "scheduler.warmup_steps=10", "scheduler.min_lr_ratio=0.1"], tmp_path)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    sched = instantiate(cfg.scheduler)(opt, total_steps=110)
    lrs = []
    for _ in range(111):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up
    assert lrs[60] == pytest.approx(0.55, abs=1e-6)  # half-way through the cosine
    assert lrs[110] == pytest.approx(0.1)  # floor


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks"])
def test_every_trainer_logger_callback_option_instantiates(group, tmp_path):
    for option in options(group):
        cfg = compose_train([f"{group}={option}"], tmp_path)
        if group == "trainer":
            if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
                continue
            assert instantiate(cfg.trainer, logger=False, enable_checkpointing=False) is not None
        else:
            for sub in (cfg.get(group) or {}).values():
                assert instantiate(sub) is not None


@pytest.mark.slow
@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_runs_a_few_steps(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}", *FAST, "callbacks=none"], tmp_path)
    result = train(cfg)
    assert torch.isfinite(torch.tensor(result["metrics"]["val/loss"]))


def test_adamw_does_not_decay_norms_biases_embeddings():
    from framework import build_model
    from framework.optim import param_groups

    model = build_model("decoder", d_model=32, n_layers=1, n_heads=2, vocab_size=16, max_seq_len=8)
    decay, no_decay = param_groups(model, 0.1)
    decay_ids = {id(p) for p in decay["params"]}
    assert id(model.tok_emb.weight) not in decay_ids  # embedding (tied to the head)
    assert id(model.blocks[0].mixer_norm.weight) not in decay_ids
    assert id(model.blocks[0].mixer.q_proj.bias) not in decay_ids
    assert id(model.blocks[0].mixer.q_proj.weight) in decay_ids
    n_total = sum(1 for _ in model.parameters())
    assert len(decay["params"]) + len(no_decay["params"]) == n_total
