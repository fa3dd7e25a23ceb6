"""Turn the W&B run(s) of an experiment into a curve plot (PNG) and a markdown results table.

usage: python experiments/report.py RUN_DIR [RUN_DIR ...] --out experiments/<study> [--keys val/loss train/loss]
Each RUN_DIR is a Hydra run (or sweep) folder; every offline W&B run under it is read back.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from framework.wandb_records import RunRecord, read_runs

STEP = "trainer/global_step"


def label(run: RunRecord) -> str:
    model = run.config.get("model", {})
    data = run.config.get("data", {})
    return f"{model.get('plugin', '?')}/{model.get('position', '')} on {data.get('source', data.get('task', '?'))}"


def table(runs: list[RunRecord]) -> str:
    rows = ["| run | params | steps | wall time (s) | tokens/s (median) | best val/loss | final val/loss |",
            "|---|---|---|---|---|---|---|"]
    for run in runs:
        val = [v for _, v in run.series("val/loss", step_key=STEP)]
        tps = sorted(v for _, v in run.series("perf/tokens_per_sec", step_key=STEP))
        steps = max((s for s, _ in run.series("train/loss", step_key=STEP)), default=0)
        runtime = max((row.get("_runtime", 0) for row in run.history), default=0)
        params = run.config.get("model_params", "?")
        rows.append(
            f"| {label(run)} | {params:,} | {steps + 1} | {runtime:.0f} | {tps[len(tps) // 2] if tps else 0:,.0f} "
            f"| {min(val) if val else float('nan'):.3f} | {val[-1] if val else float('nan'):.3f} |"
        )
    return "\n".join(rows)


def plot(runs: list[RunRecord], keys: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        for key in keys:
            points = run.series(key, step_key=STEP)
            if points:
                ax.plot(*zip(*points), label=f"{label(run)}: {key}", marker="o" if key.startswith("val") else None,
                        markersize=3, linewidth=1)
    ax.axhline(1.9, color="grey", linestyle="--", linewidth=0.8, label="target 1.9")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / byte)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keys", nargs="+", default=["train/loss", "val/loss"])
    args = parser.parse_args()
    runs = [r for d in args.runs for r in read_runs(d, wait_s=10)]
    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, args.keys, args.out / "curve.png")
    (args.out / "results.md").write_text(table(runs) + "\n")
    print(table(runs))


if __name__ == "__main__":
    main()
