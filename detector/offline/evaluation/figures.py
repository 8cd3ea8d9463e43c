"""The evaluation's PNG figures (precision-recall, score distributions)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from detector.model import Model
from detector.offline import simulate
from detector.offline.evaluation.measures import (
    _COLORS,
    _FIG_DPI,
    _FIG_SIZE,
    _METHOD_TITLES,
    _SCORE_BINS,
)
from detector.offline.plots import precision_recall_curve, pyplot

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _save_pr_png(
    path: Path,
    curves: Mapping[str, FloatArray],
    points: Mapping[str, FloatArray],
    positive: BoolArray,
) -> None:
    """Precision-recall curves of every method, each with its matched operating point."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=_FIG_SIZE, dpi=_FIG_DPI)
    for method, scores in curves.items():
        precision, recall, _ = precision_recall_curve(scores, positive)
        ax.plot(recall, precision, color=_COLORS[method], label=_METHOD_TITLES[method])
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
    ax.set_xlabel("recall (attack withdrawals flagged, all scenarios)")
    ax.set_ylabel("precision (flagged withdrawals that are attacks)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Test set: precision vs recall (dots: operating points at our normal rate)")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _save_scores_png(
    path: Path, scores: FloatArray, labels: npt.NDArray[np.str_], model: Model
) -> None:
    """Histogram of our scores on the test set, normal vs attack, with the policy."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=_FIG_SIZE, dpi=_FIG_DPI)
    normal = labels == simulate.NORMAL_LABEL
    attack = np.isin(labels, simulate.SCENARIOS)
    if scores.size:
        edges = np.linspace(float(scores.min()), float(scores.max()), _SCORE_BINS + 1)
        if normal.any():
            ax.hist(
                scores[normal],
                bins=edges,
                density=True,
                log=True,
                alpha=0.6,
                color="#4c72b0",
                label=f"normal ({int(normal.sum())})",
            )
        if attack.any():
            ax.hist(
                scores[attack],
                bins=edges,
                density=True,
                log=True,
                alpha=0.6,
                color="#c44e52",
                label=f"attack ({int(attack.sum())})",
            )
    for name, threshold, color in (
        ("delay", model.policy.delay_threshold, "#dd8452"),
        ("refuse", model.policy.refuse_threshold, "#8c1c13"),
    ):
        ax.axvline(threshold, color=color, linestyle="--", label=f"{name} >= {threshold:.3f}")
    ax.set_xlabel("anomaly score s(x) (higher = more anomalous)")
    ax.set_ylabel("density (log scale)")
    ax.set_title("Test set: our anomaly scores, normal vs attack withdrawals")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------
