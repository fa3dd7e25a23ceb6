"""Read the moe_balance sweep's offline W&B runs: plot the expert-load entropy with vs without the
balancing loss and write results.md.

usage: python experiments/moe_balance/analyze.py SWEEP_DIR [--out experiments/moe_balance]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from framework.wandb_records import RunRecord, read_runs

STEP = "trainer/global_step"
TRAIN_KEY, VAL_KEY = "train/moe/load_entropy/mean", "moe/load_entropy/mean"


def weight(run: RunRecord) -> float:
    return float(run.config["model"]["moe"]["balance_loss_weight"])


def dedup(series: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """One value per step (a step can be logged in two rows)."""
    return sorted(dict(series).items())


def last(run: RunRecord, key: str) -> float:
    values = run.series(key, step_key=STEP)
    return values[-1][1] if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("sweep_dir")
    p.add_argument("--out", default=str(Path(__file__).parent))
    a = p.parse_args()
    runs = sorted(read_runs(a.sweep_dir, wait_s=10), key=weight, reverse=True)
    out = Path(a.out)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        label = f"balance_loss_weight={weight(run):g}"
        for ax, key in zip(axes, (TRAIN_KEY, "train/moe/load_max/mean")):
            steps, values = zip(*dedup(run.series(key, step_key=STEP)))
            ax.plot(steps, values, marker=".", label=label)
    axes[0].axhline(0.9, color="grey", ls="--", lw=1)
    axes[0].set(title="normalised entropy of the expert load (1 = balanced)", xlabel="step", ylim=(0, 1.02))
    axes[1].axhline(1 / runs[0].config["model"]["moe"]["n_experts"], color="grey", ls="--", lw=1)
    axes[1].set(title="largest expert's fraction of tokens (dashed: 1/E)", xlabel="step")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "load_entropy.png", dpi=110)

    rows = ["| balance_loss_weight | val load entropy (mean over layers) | per layer | min train entropy after step 100 "
            "| val load max / min (mean) | val dropped | val/loss |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        layers = sorted(k for k in run.keys() if k.startswith("moe/load_entropy/layer"))
        per_layer = ", ".join(f"{last(run, k):.3f}" for k in layers)
        late = [v for s, v in dedup(run.series(TRAIN_KEY, step_key=STEP)) if s >= 100]
        rows.append(f"| {weight(run):g} | {last(run, VAL_KEY):.3f} | {per_layer} | {min(late) if late else float('nan'):.3f} "
                    f"| {last(run, 'moe/load_max/mean'):.3f} / {last(run, 'moe/load_min/mean'):.3f} "
                    f"| {last(run, 'moe/dropped_frac/mean'):.3f} | {last(run, 'val/loss'):.3f} |")
    (out / "results.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
