"""Plots and the markdown tables of docs/quality.md from the real-data study's JSON.

    python benches/quality/plot_real.py [benches/results/quality_real.json]

Writes docs/quality_real_r1.png (R@1 per strategy with 95% intervals), docs/quality_real_fn.png
(false-negative rate vs R@1) and docs/quality_real_scores.png (base-model scores of positives vs
mined negatives), and prints the tables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def tables(results: dict) -> str:
    lines = []
    for name, data in results["datasets"].items():
        base = data["base"]
        title = (f"### {name}: {data['train']:,} training pairs, {data['test']:,} test queries against "
                 f"{data['documents']:,} documents (pairs sha256 `{data['sha256'][:16]}…`)")
        lines += [title, "",
                  f"Distilled model before training: R@1 {base['R@1']:.2f}, R@10 {base['R@10']:.2f}.", "",
                  "| strategy | R@1 | R@5 | R@10 | MRR@10 | false negatives among mined (%) |",
                  "|---|---|---|---|---|---|"]
        for label, run in data["runs"].items():
            cells = [f"{run[m]['mean']:.2f} ± {run[m]['ci95']:.2f}" for m in ("R@1", "R@5", "R@10", "MRR@10")]
            fn = run.get("false_negative_rate")
            fn_cell = "–" if fn is None else f"{fn['mean']:.2f}"
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {fn_cell} |")
        lines += ["", "| paired R@1 difference (points) | mean | 95% interval | p |", "|---|---|---|---|"]
        for label, p in data["paired"].items():
            lines.append(f"| {label} | {p['diff']:+.2f} | [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] | {p['p']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def _figure(results: dict, height: float, draw, path: str) -> None:
    """One panel per data set, ``draw(ax, data)`` filling each; saved under docs/."""
    from matplotlib import pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), height), squeeze=False)
    for ax, name in zip(axes[0], names):
        draw(ax, results["datasets"][name])
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / path, dpi=90)
    plt.close(fig)


def _recall(ax, data: dict) -> None:
    runs = data["runs"]
    labels = list(runs)
    means = [runs[x]["R@1"]["mean"] for x in labels]
    errors = [runs[x]["R@1"]["ci95"] for x in labels]
    ax.barh(np.arange(len(labels)), means, xerr=errors, color="tab:blue", alpha=0.7, capsize=3)
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(min(means) - 3, min(100, max(means) + 3))
    ax.set_xlabel("R@1 (mean, 95% interval over seeds)")


def _false_negatives(ax, data: dict) -> None:
    runs = data["runs"]
    for label, run in runs.items():
        if "false_negative_rate" in run:
            ax.errorbar(run["false_negative_rate"]["mean"], run["R@1"]["mean"], yerr=run["R@1"]["ci95"], fmt="o")
            ax.annotate(label, (run["false_negative_rate"]["mean"], run["R@1"]["mean"]), fontsize=7)
    ax.axhline(runs["inbatch"]["R@1"]["mean"], color="gray", linestyle="--", linewidth=1, label="in-batch only")
    ax.set_xlabel("false negatives among mined negatives (%)")
    ax.set_ylabel("R@1")
    ax.legend(fontsize=7)


def _scores(ax, data: dict) -> None:
    bins = np.array(data["bins"])
    centres = (bins[:-1] + bins[1:]) / 2
    positives = np.array(data["positive_histogram"], dtype=float)
    ax.fill_between(centres, positives / positives.sum(), step="mid", alpha=0.3, color="tab:green", label="positives")
    for label, run in data["runs"].items():
        if "score_histogram" in run and label.endswith("n=3"):
            counts = np.array(run["score_histogram"], dtype=float)
            ax.step(centres, counts / max(counts.sum(), 1), where="mid", label=label)
    ax.set_xlabel("score under the distilled model (cosine)")
    ax.set_ylabel("share")
    ax.legend(fontsize=7)


def plots(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    _figure(results, 4.2, _recall, "quality_real_r1.png")
    _figure(results, 3.8, _false_negatives, "quality_real_fn.png")
    _figure(results, 3.8, _scores, "quality_real_scores.png")


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else ROOT / "benches" / "results" / "quality_real.json"
    results = json.loads(path.read_text())
    plots(results)
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
