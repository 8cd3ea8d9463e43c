"""PNG figures for training and replay reports (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import DetectorError
from detector.policy import Policy

__all__ = [
    "precision_recall_curve",
    "pyplot",
    "save_precision_recall_png",
    "save_score_histogram_png",
]


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend; a clear error without matplotlib."""
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - the `plots` extra is installed by the README
        raise DetectorError("PNG reports need matplotlib: pip install -e '.[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_score_histogram_png(
    scores: np.ndarray, policy: Policy, path: Path, *, title: str = "Training anomaly scores"
) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.hist(scores, bins=120, color="#4c72b0", log=True)
    ax.axvline(
        policy.delay_threshold,
        color="#dd8452",
        linestyle="--",
        label=f"delay >= {policy.delay_threshold:.3f}",
    )
    ax.axvline(
        policy.refuse_threshold,
        color="#c44e52",
        linestyle="--",
        label=f"refuse >= {policy.refuse_threshold:.3f}",
    )
    ax.set_xlabel("anomaly score s(x) (higher = more anomalous)")
    ax.set_ylabel("withdrawals (log scale)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def precision_recall_curve(
    scores: np.ndarray, positive: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) for "flag when score >= threshold", descending."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    hits = np.cumsum(positive[order])
    flagged = np.arange(1, len(scores) + 1)
    # Keep the last index of each distinct score: ties are flagged together.
    last = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(scores) - 1]
    total = max(int(positive.sum()), 1)
    return hits[last] / flagged[last], hits[last] / total, sorted_scores[last]


def save_precision_recall_png(
    scores: np.ndarray,
    labels: Sequence[str | None],
    policy: Policy,
    path: Path,
    *,
    title: str = "Replay: precision vs recall",
) -> None:
    positive = np.array([label not in (None, "normal") for label in labels], dtype=bool)
    precision, recall, thresholds = precision_recall_curve(scores, positive)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    ax.plot(recall, precision, color="#4c72b0", label="isolation forest (all scenarios)")
    for name, threshold, color in (
        ("delay", policy.delay_threshold, "#dd8452"),
        ("refuse", policy.refuse_threshold, "#c44e52"),
    ):
        idx = int(np.searchsorted(-thresholds, -threshold, side="right")) - 1
        if 0 <= idx < len(recall):
            ax.scatter(
                [recall[idx]],
                [precision[idx]],
                color=color,
                zorder=3,
                label=f"{name} threshold {threshold:.3f}",
            )
    ax.set_xlabel("recall (attack withdrawals flagged)")
    ax.set_ylabel("precision (flagged that are attacks)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
