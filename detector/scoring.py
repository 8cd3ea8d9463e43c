"""A compiled isolation forest: sklearn-exact anomaly scores without sklearn at serving time.

:class:`CompiledForest` is built once from a fitted :class:`sklearn.ensemble.IsolationForest`
(by :func:`detector.offline.forests.compile_forest`, at training time), saved as one ``.npz``
file of plain numpy arrays plus a small JSON record of its sizes (:meth:`CompiledForest.save`,
:meth:`CompiledForest.load`; never pickle), and evaluated with numpy alone. Integrity is the
model artifact's business (:mod:`detector.model` verifies every file's SHA-256 before this
module reads it); :meth:`CompiledForest.load` still validates the structure, so a corrupt file
fails loudly instead of scoring garbage.

Score
    ``score(X)`` returns the anomaly score of the original paper (Liu, Ting & Zhou, 2008),
    ``s(x) = 2 ** (-E[h(x)] / c(psi))`` in ``[0, 1]``; higher means more anomalous. It equals
    ``-model.score_samples(X)`` to within floating-point rounding (< 1e-12 in practice).
    ``h_t(x)`` is the number of edges from the root of tree ``t`` to the leaf ``x`` falls in,
    plus ``c(n_leaf)``, the average path length of an unsuccessful BST search among the
    ``n_leaf`` training samples left in that leaf; ``psi`` is the subsample size
    (``max_samples_``). sklearn (1.9) computes it as ``node_depth + c(n_leaf) - 1`` with the
    root at depth 1; we mirror that arithmetic.

Parity details that matter
    * sklearn casts the input to float32 before comparing with the (float64) thresholds, and
      ``x <= threshold`` goes left. We cast to float32 the same way. Each threshold ``t`` is
      stored as the largest float32 ``t32 <= t``: for any float32 ``x``,
      ``x <= t  <=>  x <= t32``, so the comparison can run entirely in float32.
    * Finite float64 values beyond the float32 range become ``+-inf`` in that cast, exactly as
      in sklearn, and compare as the very large / very small numbers they are.
    * ``estimators_features_`` maps a tree's local feature index to the global column, but
      sklearn only applies it when ``max_features`` is below the number of features; with all
      features, the trees were fitted on the full matrix and the stored (permuted) feature
      list must be ignored. We mirror that rule.

Evaluation layout
    The nodes of all trees are renumbered level by level (breadth first) so that the two
    children of a split are adjacent, right child first: ``child = next[node] - (x > t32)``
    where ``next`` is the left child. A leaf points to itself with threshold ``+inf`` (always
    "left"), so every row walks exactly ``max_depth`` vectorised steps over all trees at once,
    with no branching.

    Each node is packed into one int64 *record* ``next << S | key(t32) << B | feature``, where
    ``key`` maps a float32 to an int32 with the same order (sign-magnitude to two's complement,
    so ``-0.0 == +0.0``) and ``B`` bits hold the column. The input is mapped to
    ``key(x) << B`` once per call; then ``(record - (key(x) << B)) >> S`` is the next node: the
    subtraction borrows one from the ``next`` field exactly when ``key(x) > key(t32)``, i.e.
    ``x > t32`` (the column bits are below the key and never borrow). One step is therefore two
    gathers (the record, then the row's key at ``row * n_features + (record & mask)``) and four
    in-place integer operations on preallocated buffers: ~1.2 ns per (row, tree) cell and step.
    When ``next`` and the column do not fit beside the 32-bit key (over ``2 ** 27`` nodes with
    12 features), the column comes from its own table instead (one more gather per step).

    A batch is processed in chunks of (rows x trees) cells whose four 8-byte buffers, plus the
    records, stay inside a 1 MiB L2 cache. :meth:`CompiledForest.contributions` looks up a
    per-leaf table of ``(splits on each column along the path) / h`` instead of replaying paths
    (falling back to the path replay when that table would exceed ``_MAX_CREDIT_CELLS``).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from detector.errors import ModelError, ScoringInputError

__all__ = [
    "ARRAY_DTYPES",
    "CompiledForest",
    "average_path_length",
]

# Cells (rows x trees) evaluated per batch chunk. A cell uses four 8-byte buffers (node and
# column, record, row key, row offset): 25,600 cells = 800 KiB, near a 1 MiB L2 cache with the
# node records. Measured on the benchmark machine with 100 trees of max_samples 256 and 2,048:
# 256 rows per chunk best, 96-384 within 10% of it, 512 ~50% slower (cache misses). With the
# shipped model's three forests (node records 282 / 457 / 548 KiB, the destination forest of
# 16,384-row subsamples), 66,578 simulated rows: 128-256 rows per chunk best in each family,
# 512 up to 11% slower, 32 up to 64% slower (scratch timing, stop 24).
_CHUNK_CELLS: Final = 25_600

# Bits of a node record below the sign bit left for ``next`` (the node index) and the column
# once the 32-bit threshold key is in: a record is ``next << (32 + B) | key << B | column``.
_RECORD_INDEX_BITS: Final = 31

# A single row evaluates the first levels for every node at once (then follows its own node
# through them), as long as those levels hold at most this many nodes. One step of the walk
# (~1 us, per-call overhead) costs about as much as evaluating ~1,500 nodes at once; measured
# for 100 trees, 8,192 was best at max_samples 256 (all 8 levels) and 2048 (8 of 11 levels),
# 18% and 16% faster than stepping every level.
_SINGLE_ROW_DENSE_NODES: Final = 8_192

# Largest per-leaf contributions table built (n_nodes x n_features float64 cells, 32 MiB);
# bigger forests replay recorded paths instead.
_MAX_CREDIT_CELLS: Final = 1 << 22

# Deepest tree accepted (edges). sklearn limits an isolation tree to ceil(log2(max_samples))
# levels, so 64 covers any sample count that fits in an int64; deeper means a corrupt artifact.
_MAX_DEPTH: Final = 64

# sklearn's marker for "no child" in ``tree_.children_left/right``; we store leaves the same way.
_LEAF: Final = -1

# Operands of _order_key as 0-d arrays (a Python int operand costs a conversion per call).
_SIGN_SHIFT: Final = np.array(31, dtype=np.int32)
_MAGNITUDE: Final = np.array(0x7FFFFFFF, dtype=np.int32)

# Name of the npz entry holding the UTF-8 JSON metadata (as a 1-D uint8 array).
_METADATA_KEY: Final = "metadata"
# The integers the metadata record holds (everything else about a model is in its manifest).
_METADATA_FIELDS: Final = ("n_features", "n_trees", "max_samples")

# The arrays of a saved model and their exact dtypes (little-endian, so checksums are portable).
ARRAY_DTYPES: Final[Mapping[str, str]] = {
    "node_offsets": "<i8",  # (n_trees + 1,) tree t owns nodes [off[t], off[t + 1])
    "children_left": "<i8",  # (n_nodes,) local node index within its tree, -1 for a leaf
    "children_right": "<i8",  # (n_nodes,) local node index within its tree, -1 for a leaf
    "feature": "<i8",  # (n_nodes,) GLOBAL column index of the split, -1 for a leaf
    "threshold": "<f8",  # (n_nodes,) sklearn threshold (x <= t goes left); unused for leaves
    "n_node_samples": "<i8",  # (n_nodes,) training samples that reached the node
    "expected_contributions": "<f8",  # (n_features,) mean contributions over reference rows
}

FloatArray = npt.NDArray[np.float64]
_IntArray = npt.NDArray[np.intp]
_F32Array = npt.NDArray[np.float32]
_I64Array = npt.NDArray[np.int64]


def average_path_length(n_samples: npt.ArrayLike) -> FloatArray:
    """``c(n)``: average path length of an unsuccessful BST search among ``n`` samples.

    Exactly sklearn's ``_average_path_length``: 0 for ``n <= 1``, 1 for ``n == 2``, else
    ``2 * (ln(n - 1) + euler_gamma) - 2 * (n - 1) / n``. Returns float64 of the input's shape.
    """
    n = np.asarray(n_samples, dtype=np.float64)
    out = np.zeros(n.shape, dtype=np.float64)
    out[n == 2] = 1.0
    big = n > 2
    nb = n[big]
    out[big] = 2.0 * (np.log(nb - 1.0) + np.euler_gamma) - 2.0 * (nb - 1.0) / nb
    return out


def _floor_to_float32(threshold: FloatArray) -> _F32Array:
    """The largest float32 ``<= threshold`` (element-wise); out-of-range values become +-inf."""
    with np.errstate(over="ignore"):
        t32 = threshold.astype(np.float32)
    above = t32.astype(np.float64) > threshold
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _order_key(values: _F32Array) -> npt.NDArray[np.int32]:
    """int32 keys with the order of the (non-NaN) float32 ``values``; ``-0.0`` and ``+0.0`` tie.

    The IEEE bits are sign-magnitude; converting to two's complement keeps the float order.
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.int32)
    sign = np.right_shift(bits, _SIGN_SHIFT)  # 0 or -1
    key = np.bitwise_and(bits, _MAGNITUDE)
    np.bitwise_xor(key, sign, key)
    np.subtract(key, sign, key)
    return key


def _distinct_rows(keys: _I64Array) -> tuple[_I64Array, _IntArray]:
    """The distinct rows of ``keys`` (``(n, d)``) and, per row, the index of its
    distinct row: ``distinct[inverse]`` equals ``keys``. A lexicographic sort and one
    comparison of neighbours: ~0.1-0.2 us per row, against ~2 us per row to walk 100 trees."""
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    first = np.empty(keys.shape[0], dtype=bool)  # the first row of each run of equal rows
    first[:1] = True
    np.any(ordered[1:] != ordered[:-1], axis=1, out=first[1:])
    inverse = np.empty(keys.shape[0], dtype=np.intp)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


def _canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


class CompiledForest:
    """An isolation forest flattened into numpy arrays, scored without sklearn.

    Build one with :func:`detector.offline.forests.compile_forest` or :meth:`load`; the
    constructor takes the artifact arrays (validated here). Instances are immutable and
    thread-safe for scoring.
    """

    def __init__(self, arrays: Mapping[str, npt.NDArray[Any]], metadata: Mapping[str, Any]) -> None:
        """Validate artifact ``arrays`` + ``metadata`` and compile the evaluation layout.

        Raises :class:`ModelError` when shapes, dtypes, indices or the tree structure are
        inconsistent.
        """
        self._arrays = _validate_arrays(arrays, metadata)
        self._metadata: dict[str, Any] = {k: int(metadata[k]) for k in _METADATA_FIELDS}
        self._n_features: int = int(metadata["n_features"])
        self._n_trees: int = int(metadata["n_trees"])
        self._max_samples: int = int(metadata["max_samples"])
        self._compile()
        # Touch every buffer once so the first real request pays no page-fault cost.
        self._score_matrix(np.zeros((1, self._n_features), dtype=np.float32))

    # ------------------------------------------------------------------ construction

    def _compile(self) -> None:
        """Renumber all nodes breadth first and pack them into the branch-free layout."""
        a = self._arrays
        offsets = a["node_offsets"]
        n_nodes = int(offsets[-1])
        n_trees, n_features = self._n_trees, self._n_features
        tree_of_node = np.repeat(np.arange(n_trees, dtype=np.intp), np.diff(offsets))
        base = offsets[:-1][tree_of_node]
        is_split_old = a["children_left"] != _LEAF
        left_g = np.where(is_split_old, a["children_left"] + base, _LEAF)
        right_g = np.where(is_split_old, a["children_right"] + base, _LEAF)

        frontier = offsets[:-1].astype(np.intp)  # the roots, one per tree
        order_parts: list[_IntArray] = []
        next_parts: list[_IntArray] = []
        level_parts: list[_IntArray] = []
        start = 0
        level = 0
        while frontier.size:
            if level > _MAX_DEPTH or start + frontier.size > n_nodes:
                raise ModelError("model trees are malformed (a node is reached twice or too deep)")
            nxt_start = start + frontier.size
            split = is_split_old[frontier]
            n_split = int(np.count_nonzero(split))
            # The right child is stored first, so the left one is right + 1: ``next`` (the node
            # a row goes to when x <= t) is the left child; a leaf's ``next`` is itself.
            next_node = np.arange(start, nxt_start, dtype=np.intp)
            next_node[split] = nxt_start + 1 + 2 * np.arange(n_split, dtype=np.intp)
            order_parts.append(frontier)
            next_parts.append(next_node)
            level_parts.append(np.full(frontier.size, level, dtype=np.intp))
            nxt = np.empty(2 * n_split, dtype=np.intp)
            nxt[0::2] = right_g[frontier[split]]
            nxt[1::2] = left_g[frontier[split]]
            frontier, start, level = nxt, nxt_start, level + 1
        order = np.concatenate(order_parts)
        if order.size != n_nodes or np.unique(order).size != n_nodes:
            raise ModelError("model trees are malformed (some nodes are unreachable)")

        depth = np.concatenate(level_parts)
        next_node = np.concatenate(next_parts)
        is_split = is_split_old[order]
        feature = np.where(is_split, a["feature"][order], 0).astype(np.intp)
        threshold = np.where(
            is_split, _floor_to_float32(a["threshold"][order]), np.float32(np.inf)
        ).astype(np.float32)
        self._max_depth = level - 1
        self._is_split = is_split
        self._feature = feature
        # sklearn: decision_path_length (root = 1) + c(n_leaf) - 1.0, in that order.
        leaf_c = average_path_length(a["n_node_samples"][order])
        self._path_length = np.where(is_split, 0.0, (depth + 1.0 + leaf_c) - 1.0)
        self._c_psi = float(average_path_length(self._max_samples))
        self._denominator = n_trees * self._c_psi
        self._chunk_rows = max(1, _CHUNK_CELLS // n_trees)

        # Pack ``next << shift | key(threshold) << column_bits | column`` (module docstring).
        column_bits = max(1, (n_features - 1).bit_length())
        if n_nodes << column_bits > 1 << _RECORD_INDEX_BITS:
            column_bits = 0  # the columns come from their own table (one more gather per step)
            if n_nodes > 1 << 31:
                raise ModelError(f"model has too many nodes to evaluate ({n_nodes:,})")
        shift = 32 + column_bits
        records = next_node.astype(np.int64) << shift
        records += _order_key(threshold).astype(np.int64) << column_bits
        if column_bits:
            records += feature
        self._records = records
        self._root_records = records[:n_trees]
        self._root_features = feature[:n_trees]
        self._column_bits = np.array(column_bits, dtype=np.int64)
        self._column_mask = np.array((1 << column_bits) - 1, dtype=np.int64)
        self._shift = np.array(shift, dtype=np.int64)
        self._columns: _IntArray | None = None if column_bits else feature
        level_start = np.cumsum([0] + [part.size for part in order_parts])
        dense = int(np.searchsorted(level_start, _SINGLE_ROW_DENSE_NODES, side="right")) - 1
        self._dense_levels = max(1, min(dense, self._max_depth))
        top = int(level_start[self._dense_levels])
        self._top_records = records[:top]
        self._top_features = feature[:top]
        self._credit = self._credit_table(next_node, feature, depth)
        for arr in (is_split, feature, records, self._path_length):
            arr.flags.writeable = False

    def _credit_table(
        self, next_node: _IntArray, feature: _IntArray, depth: _IntArray
    ) -> FloatArray | None:
        """Per node: (splits on each column from the root to it) / h; ``None`` if too big.

        Only the rows of leaves are ever read (every walk ends at a leaf); ``h == 0`` happens
        only for a lone-root tree, whose row is zero.
        """
        n_nodes, d = next_node.size, self._n_features
        if n_nodes * d > _MAX_CREDIT_CELLS:
            return None
        counts = np.zeros((n_nodes, d), dtype=np.float64)
        parents = np.flatnonzero(self._is_split)
        # Breadth first: every parent of one level is complete before its children are filled.
        for level in np.split(parents, np.flatnonzero(np.diff(depth[parents])) + 1):
            left = next_node[level]
            for child in (left, left - 1):
                counts[child] = counts[level]
                counts[child, feature[level]] += 1.0
        h = self._path_length
        weight = np.divide(1.0, h, out=np.zeros_like(h), where=h > 0)
        table: FloatArray = counts * weight[:, None]
        table.flags.writeable = False
        return table

    # ------------------------------------------------------------------ properties

    @property
    def n_features(self) -> int:
        """Number of columns every row must have."""
        return self._n_features

    @property
    def n_trees(self) -> int:
        """Number of isolation trees."""
        return self._n_trees

    @property
    def max_depth(self) -> int:
        """Deepest leaf over all trees (edges); the number of gather steps per row."""
        return self._max_depth

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the saved sizes: ``n_features``, ``n_trees``, ``max_samples``."""
        result: dict[str, Any] = json.loads(_canonical_json(self._metadata))
        return result

    @property
    def expected_contributions(self) -> FloatArray:
        """Baseline :meth:`contributions` (mean over ``X_reference``), read-only; else zeros."""
        return self._arrays["expected_contributions"]

    def __repr__(self) -> str:
        return (
            f"CompiledForest(n_trees={self._n_trees}, n_features={self._n_features}, "
            f"max_samples={self._max_samples}, max_depth={self._max_depth})"
        )

    # ------------------------------------------------------------------ scoring

    def score(self, X: npt.ArrayLike) -> FloatArray:  # noqa: N803 - sklearn's X convention
        """Anomaly score ``2 ** (-E[h(x)] / c(psi))`` per row, in ``[0, 1]``; higher = worse.

        ``X``: shape ``(n, n_features)`` (any real dtype; cast to float32 like sklearn), or a
        single row of shape ``(n_features,)``, which returns shape ``(1,)``. ``(0, n_features)``
        returns an empty array. Equals ``-IsolationForest.score_samples(X)``.

        Raises :class:`ScoringInputError` for NaN/inf, a wrong width or a wrong shape.
        """
        return self._score_matrix(self._validated(X))

    def contributions(self, X: npt.ArrayLike) -> FloatArray:  # noqa: N803 - sklearn's X convention
        """Per-feature credit for each row's score, shape ``(n, n_features)``, non-negative.

        For each tree ``t`` the row's path has length ``h_t(x)`` (edges to its leaf +
        ``c(n_leaf)``, as in :meth:`score`). Every split on that path that tests feature ``f``
        adds ``1 / h_t(x)`` to ``f``'s credit: a short path (a quickly isolated row) gives
        its splits much credit. Credits are summed over trees and divided by ``n_trees``, so a
        row's total credit is the mean over trees of ``(#splits on path) / h_t(x)``. Compare
        with :attr:`expected_contributions` for the excess over normal rows. Input rules as in
        :meth:`score`.
        """
        keys = self._keys(self._validated(X))
        n = keys.shape[0]
        out = np.empty((n, self._n_features), dtype=np.float64)
        for start in range(0, n, self._chunk_rows):
            stop = min(n, start + self._chunk_rows)
            out[start:stop] = self._contributions_chunk(keys[start:stop])
        return out

    def _validated(self, X: npt.ArrayLike) -> _F32Array:  # noqa: N803
        """``X`` as a C-contiguous float32 ``(n, n_features)`` array, or ScoringInputError."""
        try:
            arr = X if isinstance(X, np.ndarray) else np.asarray(X)
        except (TypeError, ValueError) as exc:
            raise ScoringInputError(f"cannot read the feature matrix: {exc}") from exc
        if arr.dtype.kind not in "biuf":
            raise ScoringInputError(f"expected a real-valued feature matrix, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        elif arr.ndim != 2:
            raise ScoringInputError(
                f"expected shape (n, {self._n_features}) or ({self._n_features},), got {arr.shape}"
            )
        if arr.shape[1] != self._n_features:
            raise ScoringInputError(
                f"expected {self._n_features} features per row, got {arr.shape[1]}"
            )
        if arr.dtype.kind == "f":
            finite = np.isfinite(arr)
            if not finite.all():
                bad_rows = np.flatnonzero(~finite.all(axis=1))
                row = int(bad_rows[0])
                col = int(np.flatnonzero(~finite[row])[0])
                raise ScoringInputError(
                    f"feature matrix has NaN/inf in {bad_rows.size} row(s); first at "
                    f"row {row}, column {col} (value {arr[row, col]!r})"
                )
        if arr.dtype == np.float32:
            return np.ascontiguousarray(arr)
        # Finite float64 beyond float32's range becomes +-inf here, exactly as in sklearn.
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(arr, dtype=np.float32)

    def _keys(self, x32: _F32Array) -> _I64Array:
        """``key(x) << column_bits`` per cell of ``x32`` (int64, C-contiguous, same shape)."""
        keys = _order_key(x32).astype(np.int64)
        np.left_shift(keys, self._column_bits, out=keys)
        return keys

    def _score_matrix(self, x32: _F32Array) -> FloatArray:
        n = x32.shape[0]
        if self._denominator == 0.0:
            # sklearn: a single-sample forest has c(psi) = 0 and every score is 2 ** -1.
            return np.full(n, 0.5, dtype=np.float64)
        keys = self._keys(x32)
        if n == 1:
            # The same IEEE operations as below, with the scalar steps on a Python float.
            exponent = np.array([-(self._depth_sum_one(keys[0]) / self._denominator)])
            one: FloatArray = np.exp2(exponent)
            return one
        # Equal keys walk equal paths: each distinct row is walked once (a row's sum does not
        # depend on the other rows). Inputs floored at their training medians repeat a lot:
        # of 4,096 simulated withdrawals, ~650 distinct destination-family rows.
        distinct, inverse = _distinct_rows(keys)
        m = distinct.shape[0]
        depth_sum = np.empty(m, dtype=np.float64)
        for start in range(0, m, self._chunk_rows):
            stop = min(m, start + self._chunk_rows)
            leaves = self._walk(distinct[start:stop])
            depth_sum[start:stop] = self._path_length.take(leaves).sum(axis=1)
        result: FloatArray = np.exp2(-(depth_sum / self._denominator)).take(inverse)
        return result

    # The walks below call ndarray.take(indices, None, out, "wrap") and ufuncs with a
    # positional ``out``: the node indices are in range by construction, and "wrap" is the one
    # bounds mode that writes straight into ``out`` ("raise" goes through a temporary copy).

    def _depth_sum_one(self, keys: _I64Array) -> float:
        """Sum over trees of ``h_t(x)`` for one row (``keys``: that row's keys).

        One row is dominated by per-call overhead (~0.2 us per numpy call on 100 cells), so the
        first ``_dense_levels`` steps evaluate every node of those levels in three calls and
        then only follow the row's node through them (one call per level); the deeper levels
        step like :meth:`_walk`.
        """
        shift, mask, columns = self._shift, self._column_mask, self._columns
        key_at, take_record = keys.take, self._records.take
        subtract, right_shift = np.subtract, np.right_shift
        top = subtract(self._top_records, key_at(self._top_features))
        right_shift(top, shift, top)  # the next node of every node of the top levels
        node = top[: self._n_trees].copy()
        spare = np.empty_like(node)
        for _ in range(self._dense_levels - 1):
            top.take(node, None, spare, "wrap")
            node, spare = spare, node
        record, column, key = spare, np.empty_like(node), np.empty_like(node)
        for _ in range(self._max_depth - self._dense_levels):
            take_record(node, None, record, "wrap")
            if columns is None:
                np.bitwise_and(record, mask, column)
            else:
                columns.take(node, None, column, "wrap")
            key_at(column, None, key, "wrap")
            subtract(record, key, record)
            right_shift(record, shift, node)
        return float(self._path_length.take(node).sum())

    def _walk(self, keys: _I64Array, path: _IntArray | None = None) -> _IntArray:
        """Leaf node of each (row, tree) cell; optionally record the node at every level.

        ``keys``: shape ``(m, n_features)`` from :meth:`_keys`. ``path``: shape
        ``(max_depth, m, n_trees)``, receives the node each cell is at before each step.
        """
        m = keys.shape[0]
        shape = (m, self._n_trees)
        records, columns, shift = self._records, self._columns, self._shift
        key_at = keys.reshape(-1).take
        record = np.empty(shape, dtype=np.int64)
        key = np.empty(shape, dtype=np.int64)
        column = np.empty(shape, dtype=np.intp)
        # With packed columns the node buffer can double as the column buffer.
        node = column if columns is None else np.empty(shape, dtype=np.intp)
        row_offset = np.empty(shape, dtype=np.intp)
        np.multiply(np.arange(m, dtype=np.intp)[:, None], self._n_features, row_offset)
        if path is not None and self._max_depth:
            path[0] = np.arange(self._n_trees, dtype=np.intp)
        # Step 1 from the roots, whose records and columns are known without a gather.
        np.add(row_offset, self._root_features, column)
        key_at(column, None, key, "wrap")
        np.subtract(self._root_records, key, record)
        np.right_shift(record, shift, node)
        for level in range(1, self._max_depth):
            if path is not None:
                path[level] = node
            records.take(node, None, record, "wrap")
            if columns is None:
                np.bitwise_and(record, self._column_mask, column)
            else:
                columns.take(node, None, column, "wrap")
            np.add(column, row_offset, column)
            key_at(column, None, key, "wrap")
            np.subtract(record, key, record)
            np.right_shift(record, shift, node)
        return node

    def _contributions_chunk(self, keys: _I64Array) -> FloatArray:
        m, d = keys.shape
        if self._credit is not None:
            # Tree-major, so the sum over trees adds contiguous (rows x features) blocks.
            leaves = np.ascontiguousarray(self._walk(keys).T)
            credit: FloatArray = self._credit.take(leaves, axis=0).sum(axis=0)
            credit /= self._n_trees
            return credit
        path = np.empty((self._max_depth, m, self._n_trees), dtype=np.intp)
        leaves = self._walk(keys, path)
        h = self._path_length.take(leaves)
        # A path with at least one split has h >= 1; h == 0 only for a lone-root tree (no credit).
        weight = np.divide(1.0, h, out=np.zeros_like(h), where=h > 0)
        # Pass-through steps (already at a leaf) get zero weight instead of being masked out.
        step_weight = self._is_split.take(path) * weight
        cell = self._feature.take(path) + (np.arange(m, dtype=np.intp) * d)[None, :, None]
        total = np.bincount(cell.ravel(), weights=step_weight.ravel(), minlength=m * d)
        result: FloatArray = total.reshape(m, d) / self._n_trees
        return result

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` (one ``.npz`` file, atomically replaced); return it.

        The file holds the node arrays and a JSON record of the forest's sizes. Raises
        :class:`ModelError` if it cannot be written.
        """
        target = Path(path)
        metadata = dict(self._metadata)
        payload = dict(self._arrays)
        payload[_METADATA_KEY] = np.frombuffer(_canonical_json(metadata), dtype=np.uint8)
        try:
            with tempfile.NamedTemporaryFile(
                dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
            ) as handle:
                tmp = Path(handle.name)
                np.savez_compressed(handle, allow_pickle=False, **payload)
            os.replace(tmp, target)
        except OSError as exc:
            raise ModelError(f"cannot write model file {target}: {exc}") from exc
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CompiledForest:
        """Read a forest written by :meth:`save`, validating its structure.

        Only for files whose integrity was verified (``Model.load`` checks every file's
        SHA-256 against the manifest first). Raises :class:`ModelError` for a missing,
        truncated or unreadable file, unexpected entries or inconsistent arrays. Never
        unpickles anything.
        """
        source = Path(path)
        if not source.is_file():
            raise ModelError(f"model file not found: {source}")
        try:
            # We own the handle: np.load leaks its own when the zip directory is unreadable.
            with source.open("rb") as handle:
                loaded = np.load(handle, allow_pickle=False)
                if not isinstance(loaded, np.lib.npyio.NpzFile):
                    raise ModelError(f"{source} is not a compiled-forest .npz archive")
                with loaded as npz:
                    names = set(npz.files)
                    expected = {*ARRAY_DTYPES, _METADATA_KEY}
                    if names != expected:
                        raise ModelError(
                            f"{source}: unexpected archive entries; missing "
                            f"{sorted(expected - names)}, extra {sorted(names - expected)}"
                        )
                    raw = {name: npz[name] for name in sorted(names)}
        except ModelError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
            raise ModelError(
                f"cannot read model file {source} (truncated or corrupt?): {exc}"
            ) from exc

        meta_bytes = raw.pop(_METADATA_KEY)
        if meta_bytes.dtype != np.uint8 or meta_bytes.ndim != 1:
            raise ModelError(f"{source}: metadata entry is not a byte string")
        try:
            metadata = json.loads(meta_bytes.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{source}: metadata is not valid JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise ModelError(f"{source}: metadata is not a JSON object")
        return cls(raw, metadata)


def _validate_arrays(
    arrays: Mapping[str, npt.NDArray[Any]], metadata: Mapping[str, Any]
) -> dict[str, npt.NDArray[Any]]:
    """Check dtypes, shapes and index ranges; return read-only copies in canonical dtypes."""
    for key, kind in (("n_features", int), ("n_trees", int), ("max_samples", int)):
        value = metadata.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or value < 1:
            raise ModelError(f"model metadata {key!r} must be a positive integer, got {value!r}")
    missing = set(ARRAY_DTYPES) - set(arrays)
    if missing:
        raise ModelError(f"model arrays missing: {sorted(missing)}")

    out: dict[str, npt.NDArray[Any]] = {}
    for name, dtype in ARRAY_DTYPES.items():
        arr = np.asarray(arrays[name])
        if arr.ndim != 1:
            raise ModelError(f"model array {name!r} must be 1-D, got shape {arr.shape}")
        if np.dtype(arr.dtype).kind != np.dtype(dtype).kind:
            raise ModelError(f"model array {name!r} has dtype {arr.dtype}, expected {dtype}")
        copy = np.array(arr, dtype=dtype, copy=True)
        copy.flags.writeable = False
        out[name] = copy

    n_trees = int(metadata["n_trees"])
    n_features = int(metadata["n_features"])
    offsets = out["node_offsets"]
    if offsets.size != n_trees + 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 1):
        raise ModelError(
            f"model array 'node_offsets' is inconsistent with n_trees={n_trees} "
            "(must start at 0 and give every tree at least one node)"
        )
    n_nodes = int(offsets[-1])
    for name in ("children_left", "children_right", "feature", "threshold", "n_node_samples"):
        if out[name].size != n_nodes:
            raise ModelError(
                f"model array {name!r} has {out[name].size} entries, expected {n_nodes}"
            )
    if out["expected_contributions"].size != n_features:
        raise ModelError(
            f"model array 'expected_contributions' has {out['expected_contributions'].size} "
            f"entries, expected n_features={n_features}"
        )
    if not np.all(np.isfinite(out["expected_contributions"])):
        raise ModelError("model array 'expected_contributions' has NaN/inf")

    tree_size = np.repeat(np.diff(offsets), np.diff(offsets))
    local = np.arange(n_nodes) - np.repeat(offsets[:-1], np.diff(offsets))
    left, right = out["children_left"], out["children_right"]
    leaf = left == _LEAF
    if np.any(leaf != (right == _LEAF)):
        raise ModelError("model trees are malformed (a node has exactly one child)")
    split = ~leaf
    # sklearn numbers children after their parent; requiring it rules out cycles.
    for name, child in (("children_left", left), ("children_right", right)):
        c = child[split]
        if np.any(c <= local[split]) or np.any(c >= tree_size[split]):
            raise ModelError(f"model array {name!r} has out-of-range child indices")
    feature = out["feature"]
    if np.any(feature[split] < 0) or np.any(feature[split] >= n_features):
        raise ModelError(f"model array 'feature' has a column index outside [0, {n_features})")
    if np.any(np.isnan(out["threshold"][split])):
        raise ModelError("model array 'threshold' has NaN at a split")
    if np.any(out["n_node_samples"] < 0):
        raise ModelError("model array 'n_node_samples' has negative counts")
    return out
