"""The evaluation's PNG figures, drawn from the run's arrays (the markdown embeds them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.offline import simulate
from detector.offline.evaluation.baselines import BASELINES, OURS, TITLES
from detector.offline.evaluation.simworld import BASE
from detector.offline.plots import precision_recall_curve, pyplot

__all__ = ["save_figures"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Figure size (inches) and resolution (dots per inch) of every PNG.
_FIG_SIZE = (8.0, 5.0)
_FIG_DPI = 110
# Histogram bins of the score figure (count over the observed score range).
_SCORE_BINS = 80
_COLORS = {
    OURS: "#4c72b0",
    BASELINES[0]: "#dd8452",
    BASELINES[1]: "#55a868",
    BASELINES[2]: "#c44e52",
}


def save_figures(
    directory: Path,
    stem: str,
    sim: Mapping[str, Any],
    arrays: Mapping[str, Any],
    spk: Mapping[str, Any],
    spk_arrays: Mapping[str, Any] | None,
) -> dict[str, str]:
    """Write every figure beside the markdown; return their file names by key."""
    names = {
        "pr": f"{stem}_pr.png",
        "scores": f"{stem}_scores.png",
        "worlds": f"{stem}_worlds.png",
    }
    base = arrays[BASE]
    labels = base["labels"]
    positive = np.isin(labels, simulate.SCENARIOS)
    keep = positive | (labels == simulate.NORMAL_LABEL)
    _pr_png(
        directory / names["pr"],
        {m: s[keep] for m, s in base["scores"].items()},
        {m: w[keep] for m, w in base["policy_weights"].items()},
        positive[keep],
        "Simulator (unshifted), test period: precision vs recall "
        "(dots: every method at our policy's normal rate)",
    )
    _scores_png(directory / names["scores"], base["scores"][OURS], labels, sim[BASE]["model"])
    _worlds_png(directory / names["worlds"], sim, spk)
    if spk_arrays is not None:
        names["sparkov_pr"] = f"{stem}_sparkov_pr.png"
        fraud = spk_arrays["fraud"]
        _pr_png(
            directory / names["sparkov_pr"],
            spk_arrays["scores"],
            {m: mask.astype(np.float64) for m, mask in spk_arrays["masks"].items()},
            fraud,
            "Sparkov, test part: precision vs recall (dots: the 1% review budget)",
        )
    return names


def _pr_png(
    path: Path,
    curves: Mapping[str, FloatArray],
    points: Mapping[str, FloatArray],
    positive: BoolArray,
    title: str,
) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=_FIG_SIZE, dpi=_FIG_DPI)
    for method, scores in curves.items():
        if positive.any():
            precision, recall, _ = precision_recall_curve(scores, positive)
            ax.plot(recall, precision, color=_COLORS[method], label=TITLES[method].replace("`", ""))
        weights = points[method]
        flagged = float(weights.sum())
        if flagged > 0 and positive.any():
            hit = float(weights[positive].sum())
            ax.scatter(
                [hit / positive.sum()],
                [hit / flagged],
                color=_COLORS[method],
                edgecolor="black",
                zorder=3,
            )
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _scores_png(
    path: Path, scores: FloatArray, labels: npt.NDArray[np.str_], model: Mapping[str, Any]
) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=_FIG_SIZE, dpi=_FIG_DPI)
    normal = labels == simulate.NORMAL_LABEL
    attack = np.isin(labels, simulate.SCENARIOS)
    if scores.size and float(scores.max()) > float(scores.min()):
        edges = np.linspace(float(scores.min()), float(scores.max()), _SCORE_BINS + 1)
        for sel, color, name in ((normal, "#4c72b0", "normal"), (attack, "#c44e52", "attack")):
            if sel.any():
                ax.hist(
                    scores[sel],
                    bins=edges,
                    density=True,
                    log=True,
                    alpha=0.6,
                    color=color,
                    label=f"{name} ({int(sel.sum())})",
                )
    for name, key, color in (
        ("delay", "delay_threshold", "#dd8452"),
        ("refuse", "refuse_threshold", "#8c1c13"),
    ):
        threshold = float(model[key])
        ax.axvline(threshold, color=color, linestyle="--", label=f"{name} >= {threshold:.3f}")
    ax.set_xlabel("our score (higher = more anomalous)")
    ax.set_ylabel("density (log scale)")
    ax.set_title("Simulator (unshifted), test period: our scores, normal vs attack")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _worlds_png(path: Path, sim: Mapping[str, Any], spk: Mapping[str, Any]) -> None:
    """Recall at the 1% budget of every method in every world, side by side."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=_FIG_SIZE, dpi=_FIG_DPI)
    groups = [(world["title"], world["methods"]) for world in sim.values()]
    values: dict[str, list[float]] = {m: [] for m in (OURS, *BASELINES)}
    for _, methods in groups:
        for m, column in values.items():
            column.append(float(methods[m]["budget"]["attack_recall"] or 0.0))
    titles = [f"sim: {t}" for t, _ in groups]
    if "methods" in spk:
        titles.append("Sparkov")
        for m, column in values.items():
            column.append(float(spk["methods"][m]["budget"]["recall"] or 0.0))
    x = np.arange(len(titles))
    width = 0.8 / len(values)
    for k, (method, heights) in enumerate(values.items()):
        ax.bar(
            x + (k - (len(values) - 1) / 2) * width,
            heights,
            width,
            color=_COLORS[method],
            label=TITLES[method].replace("`", ""),
        )
    ax.set_xticks(x)
    ax.set_xticklabels(titles, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("recall at the 1% budget")
    ax.set_title("Recall at a 1% review budget, every world (simulator: 1% of normals)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
