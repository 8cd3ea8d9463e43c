"""Fit isolation forests with scikit-learn and compile them for serving (training time only).

The served model never imports scikit-learn: :func:`compile_forest` flattens a fitted
:class:`sklearn.ensemble.IsolationForest` into the arrays :class:`~detector.scoring.CompiledForest`
evaluates (exactly sklearn's scores; ``tests/core/test_scoring.py`` checks parity).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from detector.errors import ModelError, ScoringInputError
from detector.scoring import CompiledForest

__all__ = ["compile_forest", "fit_forest"]

# sklearn's marker for "no child" in ``tree_.children_left/right``.
_LEAF = -1


def fit_forest(
    rows: npt.ArrayLike, *, n_estimators: int, max_samples: int, random_state: int
) -> Any:
    """A fitted ``IsolationForest`` (subsample capped at the row count)."""
    from sklearn.ensemble import IsolationForest

    x = np.asarray(rows, dtype=np.float64)
    forest = IsolationForest(
        n_estimators=n_estimators, max_samples=min(max_samples, len(x)), random_state=random_state
    )
    forest.fit(x)
    return forest


def compile_forest(
    model: Any,
    X_reference: npt.ArrayLike | None = None,  # noqa: N803 - sklearn's X convention
) -> CompiledForest:
    """Compile a fitted :class:`sklearn.ensemble.IsolationForest`.

    ``X_reference`` (optional, shape ``(n, n_features)``): "normal" rows whose mean
    :meth:`~CompiledForest.contributions` become ``expected_contributions`` (saved with the
    forest), so reasons can report each feature's excess over normal. Without it: zeros.

    Raises :class:`ModelError` if ``model`` is not a fitted IsolationForest and
    :class:`ScoringInputError` if ``X_reference`` is empty or invalid.
    """
    from sklearn.ensemble import IsolationForest

    if not isinstance(model, IsolationForest):
        raise ModelError(f"expected a fitted sklearn IsolationForest, got {type(model)!r}")
    try:
        estimators = list(model.estimators_)
        tree_features = list(model.estimators_features_)
        n_features = int(model.n_features_in_)
        max_samples = int(getattr(model, "_max_samples", model.max_samples_))
        max_features = int(getattr(model, "_max_features", n_features))
    except AttributeError as exc:
        raise ModelError(f"the IsolationForest is not fitted: {exc}") from exc
    if not estimators:
        raise ModelError("the IsolationForest has no trees")
    # sklearn indexes columns through estimators_features_ only when it subsamples them.
    subsample_features = max_features != n_features

    offsets = [0]
    lefts, rights, feats, thresholds, counts = [], [], [], [], []
    for estimator, columns in zip(estimators, tree_features, strict=True):
        tree = estimator.tree_
        left = np.asarray(tree.children_left, dtype=np.int64)
        is_leaf = left == _LEAF
        local = np.where(is_leaf, 0, np.asarray(tree.feature, dtype=np.int64))
        mapped = np.asarray(columns, dtype=np.int64)[local] if subsample_features else local
        lefts.append(left)
        rights.append(np.asarray(tree.children_right, dtype=np.int64))
        feats.append(np.where(is_leaf, _LEAF, mapped))
        thresholds.append(np.asarray(tree.threshold, dtype=np.float64))
        counts.append(np.asarray(tree.n_node_samples, dtype=np.int64))
        offsets.append(offsets[-1] + left.size)

    arrays: dict[str, npt.NDArray[Any]] = {
        "node_offsets": np.asarray(offsets, dtype=np.int64),
        "children_left": np.concatenate(lefts),
        "children_right": np.concatenate(rights),
        "feature": np.concatenate(feats),
        "threshold": np.concatenate(thresholds),
        "n_node_samples": np.concatenate(counts),
        "expected_contributions": np.zeros(n_features, dtype=np.float64),
    }
    metadata = {"n_features": n_features, "n_trees": len(estimators), "max_samples": max_samples}
    forest = CompiledForest(arrays, metadata)
    if X_reference is None:
        return forest
    reference = forest.contributions(X_reference)
    if reference.shape[0] == 0:
        raise ScoringInputError("X_reference has no rows; pass None for a zero baseline")
    arrays["expected_contributions"] = reference.mean(axis=0)
    return CompiledForest(arrays, metadata)
