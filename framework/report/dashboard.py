"""The lab's W&B workspace, defined in code (``wandb_workspaces``): one section per family of logged keys, a
run-comparison section, the MoE load histograms and the attention pattern images.

``SECTIONS`` is the spec (plain data, what ``archlab dashboard --dry-run`` prints); ``build_workspace`` turns it into
a ``wandb_workspaces.workspaces.Workspace`` whose ``.save()`` creates the view on a W&B server.
Every key here is one the core or a built-in mixer logs (tests/test_dashboard.py checks them against real runs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from . import keys as K


@dataclass(frozen=True)
class Panel:
    title: str
    keys: tuple[str, ...]
    # line: values over steps; histogram: a wandb.Histogram per step (W&B draws it as a heatmap over steps);
    # media: images (the sparse attention pattern)
    kind: Literal["line", "histogram", "media"] = "line"


def _means(family: str, *names: str) -> tuple[Panel, ...]:
    """One panel per metric, its mean over the layers that have it (``<family>/<name>/mean``)."""
    return tuple(Panel(f"{family} {name}", (f"{family}/{name}/mean",)) for name in names)


# Sections in workspace order. Per-layer values (``.../layer<i>``) are left to W&B's own search; the means compare runs.
SECTIONS: dict[str, tuple[Panel, ...]] = {
    "train": (Panel("train loss", (K.TRAIN_LOSS,)), Panel("learning rate", ("train/lr",)),
              Panel("gradient norm", ("train/grad_norm",))),
    "val": (Panel("val loss", (K.VAL_LOSS,)), Panel("val bits per byte", (K.VAL_BPB,)),
            Panel("val perplexity", ("val/ppl",)), Panel("val accuracy", ("val/acc", "val/exact_match"))),
    "perf": (Panel("tokens per second", (K.TOKENS_PER_SEC,)),
             Panel("parameters", (K.PARAMS, "model/params_trainable"))),
    "attn": _means("attn", "entropy", "topk_mass", "density")
            + (Panel("sparse attention pattern", ("attn/pattern",), kind="media"),),
    "moe": (Panel("expert load", ("moe/load",), kind="histogram"), Panel("aux (balance) loss", ("train/aux_loss",)))
           + _means("moe", "load_cv", "load_entropy", "load_min", "load_max", "max_over_mean_load", "dropped_frac",
                    "router_confidence", "balance_loss", "z_loss", "coselect_entropy")
           + (Panel("moe parameters", ("moe/params/active", "moe/params/total")),),
    "rnn": _means("rnn", "hidden_norm", "saturation")
           + (Panel("rnn hidden norm by time", tuple(f"rnn/hidden_norm_by_time/t{i}" for i in range(4))),),
    "mixer statistics": (Panel("residual rms", ("resid/rms/mean",)),)
                        + _means("ssm", "dt", "decay", "long_memory", "state_norm")
                        + _means("rglru", "decay", "input_gate", "long_memory", "state_norm")
                        + _means("linear", "decay", "beta", "long_memory", "state_norm"),
}
# Run comparison: the runset grouped by these config keys (nested paths of the logged config).
GROUP_BY: tuple[str, ...] = ("plugin_name",)
COMPARE_SECTION = "compare runs"
DEFAULT_NAME = "archlab"


def build_workspace(project: str, entity: str = "", name: str = DEFAULT_NAME) -> Any:
    """The workspace object (not saved): a section per ``SECTIONS`` entry, then the run comparison."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def panel(p: Panel) -> Any:
        if p.kind == "media":
            return wr.MediaBrowser(title=p.title, media_keys=list(p.keys), num_columns=1)
        return wr.LinePlot(title=p.title, x=K.STEP, y=list(p.keys))

    sections = [ws.Section(name=title, panels=[panel(p) for p in panels], is_open=title in ("train", "val"))
                for title, panels in SECTIONS.items()]
    compare = [wr.RunComparer(diff_only="split"),
               wr.ScatterPlot(title="final val loss vs parameters", x=wr.SummaryMetric(K.PARAMS),
                              y=wr.SummaryMetric(K.VAL_LOSS), log_x=True),
               wr.LinePlot(title="val loss by architecture", x=K.STEP, y=[K.VAL_LOSS], groupby=wr.Config(GROUP_BY[0]))]
    sections.append(ws.Section(name=COMPARE_SECTION, panels=compare, is_open=True))
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections,
                        settings=ws.WorkspaceSettings(x_axis=K.STEP),
                        runset_settings=ws.RunsetSettings(groupby=[ws.Config(key) for key in GROUP_BY]))


def panel_keys(workspace: Any) -> dict[str, list[str]]:
    """Section name -> the log keys its panels show, read back from a built workspace (line plots' ``y``, media
    keys, scatter axes): what ``--dry-run`` prints and what the tests compare with the keys runs log."""
    import wandb_workspaces.reports.v2 as wr

    out: dict[str, list[str]] = {}
    for section in workspace.sections:
        found: list[str] = []
        for p in section.panels:
            if isinstance(p, wr.LinePlot):
                found += [_name(k) for k in p.y]
            elif isinstance(p, wr.MediaBrowser):
                found += list(p.media_keys)
            elif isinstance(p, wr.ScatterPlot):
                found += [_name(p.x), _name(p.y)]
        out[section.name] = list(dict.fromkeys(found))
    return out


def config_keys(workspace: Any) -> list[str]:
    """The config paths the workspace groups runs by (runset and panels)."""
    found = [g.name for g in workspace.runset_settings.groupby]
    for section in workspace.sections:
        found += [_name(p.groupby) for p in section.panels if getattr(p, "groupby", None) is not None]
    return list(dict.fromkeys(found))


def _name(key: Any) -> str:
    return key if isinstance(key, str) else key.name
