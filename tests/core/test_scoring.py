"""Tests of detector.scoring: exact parity with sklearn, contributions, persistence, refusals."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length

from detector import scoring
from detector.errors import ModelError, ScoringInputError
from detector.offline.forests import compile_forest
from detector.scoring import CompiledForest, average_path_length

# sklearn and the compiled forest add the same float64 terms in a different order.
TOLERANCE = 1e-9


def _fit(data: np.ndarray, **params: Any) -> IsolationForest:
    """Fit an IsolationForest, tolerating sklearn's 'max_samples > n_samples' warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="max_samples .* greater than", category=UserWarning
        )
        return IsolationForest(random_state=0, **params).fit(data)


def _sklearn_score(model: IsolationForest, data: np.ndarray) -> np.ndarray:
    """The paper's score from sklearn, given the float32 cast sklearn itself performs."""
    with np.errstate(over="ignore"):
        x32 = np.asarray(data, dtype=np.float32)
    return -np.asarray(model.score_samples(x32))


def _probe_rows(rng: np.random.Generator, data: np.ndarray) -> np.ndarray:
    """Rows inside, around and far outside the training range, plus exact training rows."""
    d = data.shape[1]
    scale = data.std(axis=0) + 1.0
    inside = data.mean(axis=0) + rng.normal(size=(40, d)) * scale
    far = np.vstack([np.full(d, 1e6), np.full(d, -1e6), np.full(d, 1e300), np.full(d, -1e300)])
    return np.vstack([inside, far, data[:10]])


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(300, 5))


@pytest.fixture(scope="module")
def forest_pair(train: np.ndarray) -> tuple[IsolationForest, CompiledForest]:
    model = _fit(train, n_estimators=50, max_features=0.6)
    return model, compile_forest(model, X_reference=train)


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("bootstrap", [False, True])
@pytest.mark.parametrize("max_features", [1.0, 0.5, 1])
@pytest.mark.parametrize("max_samples", [64, 0.5, "auto", 5000])
def test_parity_grid(
    train: np.ndarray, max_samples: Any, max_features: Any, bootstrap: bool
) -> None:
    model = _fit(
        train,
        n_estimators=7,
        max_samples=max_samples,
        max_features=max_features,
        bootstrap=bootstrap,
    )
    forest = compile_forest(model)
    rows = _probe_rows(np.random.default_rng(1), train)
    np.testing.assert_allclose(
        forest.score(rows), _sklearn_score(model, rows), rtol=0, atol=TOLERANCE
    )


@pytest.mark.parametrize("n_estimators", [1, 7, 100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parity_tree_counts_and_dtypes(train: np.ndarray, n_estimators: int, dtype: type) -> None:
    model = _fit(train, n_estimators=n_estimators, max_features=0.5)
    forest = compile_forest(model)
    assert forest.n_trees == n_estimators
    assert forest.n_features == train.shape[1]
    rows = _probe_rows(np.random.default_rng(2), train)
    if dtype is np.float32:  # float32 has no 1e300: use its largest finite values instead
        rows = np.clip(rows, -3e38, 3e38)
    rows = rows.astype(dtype)
    expected = _sklearn_score(model, rows)
    np.testing.assert_allclose(forest.score(rows), expected, rtol=0, atol=TOLERANCE)
    # Single rows (the 1-D fast path) agree with the batch path.
    for i in (0, 5, 40, 42):
        one = forest.score(rows[i])
        assert one.shape == (1,)
        assert abs(one[0] - expected[i]) <= TOLERANCE


def test_parity_float32_cast_boundaries() -> None:
    """float64 values that round onto a float32 threshold must go where sklearn sends them."""
    rng = np.random.default_rng(3)
    data = rng.normal(size=(200, 3))
    model = _fit(data, n_estimators=20)
    forest = compile_forest(model)
    thresholds = np.concatenate(
        [e.tree_.threshold[e.tree_.children_left != -1] for e in model.estimators_]
    )
    t = thresholds[:60]
    probes = np.concatenate([t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf)])
    probes = np.concatenate([probes, probes.astype(np.float32).astype(np.float64)])
    rows = np.repeat(probes[:, None], 3, axis=1)
    np.testing.assert_allclose(
        forest.score(rows), _sklearn_score(model, rows), rtol=0, atol=TOLERANCE
    )


def test_parity_large_batch_crosses_chunks(train: np.ndarray) -> None:
    model = _fit(train, n_estimators=100)
    forest = compile_forest(model)
    rows = np.random.default_rng(4).normal(size=(1500, 5)) * 2
    np.testing.assert_allclose(
        forest.score(rows), _sklearn_score(model, rows), rtol=0, atol=TOLERANCE
    )


def test_parity_degenerate_forests() -> None:
    # Constant training data: every tree is a lone root leaf.
    constant = np.ones((30, 2))
    model = _fit(constant, n_estimators=5)
    forest = compile_forest(model)
    assert forest.max_depth == 0
    rows = np.array([[1.0, 1.0], [5.0, -5.0]])
    np.testing.assert_allclose(
        forest.score(rows), _sklearn_score(model, rows), rtol=0, atol=TOLERANCE
    )
    # One sample per tree: c(psi) = 0 and sklearn scores everything 0.5.
    tiny = np.random.default_rng(5).normal(size=(10, 2))
    model = _fit(tiny, n_estimators=3, max_samples=1)
    forest = compile_forest(model)
    np.testing.assert_allclose(
        forest.score(tiny), _sklearn_score(model, tiny), rtol=0, atol=TOLERANCE
    )


def test_order_key_matches_float32_order() -> None:
    rng = np.random.default_rng(12)
    bits = rng.integers(-(2**31), 2**31, size=20_000, dtype=np.int64).astype(np.int32)
    values = bits.view(np.float32)
    f32 = np.finfo(np.float32)
    special = np.array(
        [0.0, -0.0, np.inf, -np.inf, f32.max, -f32.max, f32.smallest_subnormal, 1.0, -1.0],
        dtype=np.float32,
    )
    special = np.concatenate([special, -special[5:]])
    values = np.concatenate([values[~np.isnan(values)], special])
    keys = scoring._order_key(values).astype(np.int64)
    a, b = rng.integers(0, values.size, size=(2, 50_000))
    a = np.concatenate([a, np.repeat(np.arange(values.size - special.size, values.size), 2)])
    b = np.concatenate([b, np.tile(np.arange(values.size - special.size, values.size), 2)])
    with np.errstate(invalid="ignore", over="ignore"):
        expected = np.sign(values[a].astype(np.float64) - values[b].astype(np.float64))
    np.testing.assert_array_equal(np.sign(keys[a] - keys[b]), expected)
    assert scoring._order_key(np.array([-0.0, 0.0], dtype=np.float32)).tolist() == [0, 0]


def test_parity_signed_zeros_subnormals_and_float32_extremes() -> None:
    """Thresholds and inputs at +-0, float32 subnormals and float32's range limits."""
    rng = np.random.default_rng(13)
    model = _fit(rng.normal(size=(400, 3)), n_estimators=30)
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    big = float(np.finfo(np.float32).max)
    edge = np.array([0.0, -0.0, tiny, -tiny, tiny / 3, 1e-50, -1e-50, big, -big, 1e39, -1e39])
    # sklearn's thresholds are uniform draws; overwrite some in place with the edge values.
    for estimator in model.estimators_:
        tree = estimator.tree_
        splits = np.flatnonzero(tree.children_left != -1)
        chosen = rng.choice(splits, size=min(6, splits.size), replace=False)
        tree.threshold[chosen] = rng.choice(edge, size=chosen.size)
    thresholds = np.concatenate([e.tree_.threshold for e in model.estimators_])
    assert np.any((thresholds == 0.0) & np.signbit(thresholds))
    grid = np.concatenate([edge, [1.0, -1.0, 0.3]])
    rows = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    forest = compile_forest(model)
    expected = _sklearn_score(model, rows)
    np.testing.assert_allclose(forest.score(rows), expected, rtol=0, atol=TOLERANCE)
    for i in range(0, rows.shape[0], 37):
        assert abs(forest.score(rows[i])[0] - expected[i]) <= TOLERANCE


@pytest.mark.parametrize("dense_nodes", [0, 300, 10**9])
def test_single_rows_equal_the_batch(
    monkeypatch: pytest.MonkeyPatch, train: np.ndarray, dense_nodes: int
) -> None:
    """The one-row walk (all-node top levels, then per-row steps) matches the batch walk."""
    monkeypatch.setattr(scoring, "_SINGLE_ROW_DENSE_NODES", dense_nodes)
    model = _fit(train, n_estimators=40, max_features=0.8)
    forest = compile_forest(model)
    rows = _probe_rows(np.random.default_rng(14), train)
    batch = forest.score(rows)
    np.testing.assert_allclose(batch, _sklearn_score(model, rows), rtol=0, atol=TOLERANCE)
    singles = np.concatenate([forest.score(row) for row in rows])
    np.testing.assert_allclose(singles, batch, rtol=0, atol=1e-15)


def test_repeated_rows_score_as_when_scored_alone(train: np.ndarray) -> None:
    """A batch walks each distinct row once: with repeats (also ``-0.0`` beside ``0.0``, and
    two float64 values of one float32) every score is bit-identical to the row's own."""
    model = _fit(train, n_estimators=40)
    forest = compile_forest(model)
    rng = np.random.default_rng(15)
    base = _probe_rows(rng, train)
    rows = base[rng.integers(0, len(base), size=300)]
    rows[::7] = 0.0
    rows[3::7] = -0.0
    rows[5::11] += 1e-12  # the same float32 as before for every probe row
    batch = forest.score(rows)
    assert len(np.unique(rows, axis=0)) < len(rows) // 2
    # Each row in a batch of two with a fixed other row: no repeat of it to share a walk.
    alone = [forest.score(np.vstack([row, base[-1] + 0.5]))[0] for row in rows]
    assert np.array_equal(batch, alone)
    np.testing.assert_allclose(batch, _sklearn_score(model, rows), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(("index_bits", "credit_cells"), [(0, 1 << 22), (31, 0), (0, 0)])
def test_fallback_layouts_agree(
    monkeypatch: pytest.MonkeyPatch, train: np.ndarray, index_bits: int, credit_cells: int
) -> None:
    """Columns in their own table (huge forests) and path-replayed contributions."""
    model = _fit(train, n_estimators=25, max_features=0.6, max_samples=128)
    packed = compile_forest(model)
    monkeypatch.setattr(scoring, "_RECORD_INDEX_BITS", index_bits)
    monkeypatch.setattr(scoring, "_MAX_CREDIT_CELLS", credit_cells)
    forest = compile_forest(model)
    assert (forest._columns is None) == (index_bits > 0)
    assert (forest._credit is None) == (credit_cells == 0)
    rows = _probe_rows(np.random.default_rng(15), train)
    expected = _sklearn_score(model, rows)
    np.testing.assert_allclose(forest.score(rows), expected, rtol=0, atol=TOLERANCE)
    for i in (0, 7, 41, 43):
        assert abs(forest.score(rows[i])[0] - expected[i]) <= TOLERANCE
    np.testing.assert_allclose(
        forest.contributions(rows), packed.contributions(rows), rtol=0, atol=1e-12
    )
    finite32 = rows[:42]  # the reference casts without errstate: no rows beyond float32
    np.testing.assert_allclose(
        forest.contributions(finite32), _reference_contributions(model, finite32), atol=1e-12
    )


@pytest.mark.parametrize("credit_cells", [0, 1 << 22])
def test_degenerate_forest_contributions(
    monkeypatch: pytest.MonkeyPatch, credit_cells: int
) -> None:
    monkeypatch.setattr(scoring, "_MAX_CREDIT_CELLS", credit_cells)
    model = _fit(np.ones((30, 2)), n_estimators=5)
    forest = compile_forest(model)
    assert forest.max_depth == 0
    rows = np.array([[1.0, 1.0], [5.0, -5.0]])
    np.testing.assert_array_equal(forest.contributions(rows), np.zeros((2, 2)))
    np.testing.assert_array_equal(forest.contributions(rows[0]), np.zeros((1, 2)))


def test_parity_many_features() -> None:
    """Wider rows need more column bits in the node records."""
    rng = np.random.default_rng(16)
    data = rng.normal(size=(600, 40)) * rng.uniform(0.01, 1e4, size=40)
    model = _fit(data, n_estimators=30, max_samples=512, max_features=0.3)
    forest = compile_forest(model)
    rows = _probe_rows(rng, data)
    expected = _sklearn_score(model, rows)
    np.testing.assert_allclose(forest.score(rows), expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(
        forest.contributions(rows[:20]), _reference_contributions(model, rows[:20]), atol=1e-12
    )


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_features=st.integers(1, 8),
    n_train=st.integers(2, 80),
    seed=st.integers(0, 2**31 - 1),
    n_estimators=st.sampled_from([1, 3, 7]),
    max_samples=st.sampled_from(["auto", 0.5, 1.0, 16, 200]),
    max_features=st.sampled_from([1.0, 0.5, 1]),
    bootstrap=st.booleans(),
    integer_data=st.booleans(),
)
def test_parity_property(
    *,
    n_features: int,
    n_train: int,
    seed: int,
    n_estimators: int,
    max_samples: Any,
    max_features: Any,
    bootstrap: bool,
    integer_data: bool,
) -> None:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n_train, n_features)) * rng.uniform(0.1, 100.0, size=n_features)
    if integer_data:  # many ties, duplicate rows, thresholds between small integers
        data = np.round(data / 25.0)
    model = _fit(
        data,
        n_estimators=n_estimators,
        max_samples=max_samples,
        max_features=max_features,
        bootstrap=bootstrap,
    )
    forest = compile_forest(model)
    rows = _probe_rows(rng, data)
    scores = forest.score(rows)
    np.testing.assert_allclose(scores, _sklearn_score(model, rows), rtol=0, atol=TOLERANCE)
    assert np.all((scores >= 0.0) & (scores <= 1.0))


def test_average_path_length_matches_sklearn() -> None:
    n = np.array([0, 1, 2, 3, 4, 10, 256, 10_000])
    np.testing.assert_array_equal(average_path_length(n), _average_path_length(n))


# ----------------------------------------------------------------------------- input handling


def test_empty_batch(forest_pair: tuple[IsolationForest, CompiledForest]) -> None:
    _, forest = forest_pair
    assert forest.score(np.empty((0, 5))).shape == (0,)
    assert forest.contributions(np.empty((0, 5), dtype=np.float32)).shape == (0, 5)


def test_accepts_lists_and_integers(forest_pair: tuple[IsolationForest, CompiledForest]) -> None:
    model, forest = forest_pair
    rows = [[1, 2, 3, 4, 5], [0, 0, 0, 0, 0]]
    expected = _sklearn_score(model, np.asarray(rows))
    np.testing.assert_allclose(forest.score(rows), expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(
        forest.score(np.asarray(rows, dtype=np.int64)), expected, rtol=0, atol=TOLERANCE
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite(
    forest_pair: tuple[IsolationForest, CompiledForest], bad: float
) -> None:
    _, forest = forest_pair
    rows = np.zeros((4, 5))
    rows[2, 3] = bad
    with pytest.raises(ScoringInputError, match=r"NaN/inf .* row 2, column 3"):
        forest.score(rows)
    with pytest.raises(ScoringInputError, match="NaN/inf"):
        forest.score(rows[2])
    with pytest.raises(ScoringInputError, match="NaN/inf"):
        forest.contributions(rows.astype(np.float32))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((3, 4)), "expected 5 features per row, got 4"),
        (np.zeros((3, 6)), "expected 5 features per row, got 6"),
        (np.zeros(4), "expected 5 features per row, got 4"),
        (np.zeros((2, 3, 5)), r"expected shape \(n, 5\)"),
        (np.float64(1.0), r"expected shape \(n, 5\)"),
        (np.array([["a"] * 5]), "real-valued"),
        (np.zeros((1, 5), dtype=np.complex128), "real-valued"),
        ([[1, 2, 3, 4, 5], [1, 2]], "cannot read"),
    ],
)
def test_rejects_bad_shapes_and_types(
    forest_pair: tuple[IsolationForest, CompiledForest], bad: Any, message: str
) -> None:
    _, forest = forest_pair
    with pytest.raises(ScoringInputError, match=message):
        forest.score(bad)
    with pytest.raises(ScoringInputError):
        forest.contributions(bad)


def test_scoring_input_error_is_a_model_error_and_value_error() -> None:
    assert issubclass(ScoringInputError, ModelError)
    assert issubclass(ScoringInputError, ValueError)


def test_compile_forest_refuses_bad_models(train: np.ndarray) -> None:
    with pytest.raises(ModelError, match="not fitted"):
        compile_forest(IsolationForest())
    with pytest.raises(ModelError, match="IsolationForest"):
        compile_forest(object())  # type: ignore[arg-type]
    model = _fit(train, n_estimators=3)
    with pytest.raises(ScoringInputError, match="no rows"):
        compile_forest(model, X_reference=np.empty((0, 5)))
    with pytest.raises(ScoringInputError, match="features per row"):
        compile_forest(model, X_reference=np.zeros((3, 2)))


# ----------------------------------------------------------------------------- contributions


def _reference_contributions(model: IsolationForest, data: np.ndarray) -> np.ndarray:
    """Contributions computed independently from sklearn's own trees and decision paths."""
    x32 = data.astype(np.float32)
    n, d = data.shape
    out = np.zeros((n, d))
    subsample = model._max_features != d
    for est, columns in zip(model.estimators_, model.estimators_features_, strict=True):
        tree = est.tree_
        xs = x32[:, columns] if subsample else x32
        paths = est.decision_path(xs).toarray().astype(bool)
        leaves = est.apply(xs)
        depth = tree.compute_node_depths()
        h = depth[leaves] - 1 + _average_path_length(tree.n_node_samples)[leaves]
        for i in range(n):
            for node in np.flatnonzero(paths[i]):
                if tree.children_left[node] != -1:
                    local = tree.feature[node]
                    out[i, columns[local] if subsample else local] += 1.0 / h[i]
    return out / len(model.estimators_)


@pytest.mark.parametrize("max_features", [1.0, 0.5])
def test_contributions_match_independent_reference(train: np.ndarray, max_features: float) -> None:
    model = _fit(train, n_estimators=10, max_features=max_features, max_samples=64)
    forest = compile_forest(model)
    rows = _probe_rows(np.random.default_rng(8), train)[:30]
    np.testing.assert_allclose(
        forest.contributions(rows), _reference_contributions(model, rows), atol=1e-12
    )


def test_contributions_shape_sign_and_row_sums(
    forest_pair: tuple[IsolationForest, CompiledForest],
) -> None:
    model, forest = forest_pair
    rows = _probe_rows(np.random.default_rng(9), np.zeros((5, 5)))
    credit = forest.contributions(rows)
    assert credit.shape == (rows.shape[0], 5)
    assert np.all(credit >= 0.0)
    # Row total = mean over trees of (#splits on the path) / h_t(x), from sklearn's trees.
    with np.errstate(over="ignore"):
        x32 = rows.astype(np.float32)
    expected = np.zeros(rows.shape[0])
    for est, columns in zip(model.estimators_, model.estimators_features_, strict=True):
        leaves = est.apply(x32[:, columns], check_input=False)
        edges = est.tree_.compute_node_depths()[leaves] - 1
        h = edges + _average_path_length(est.tree_.n_node_samples)[leaves]
        expected += np.divide(edges, h, out=np.zeros_like(h), where=h > 0)
    np.testing.assert_allclose(credit.sum(axis=1), expected / forest.n_trees, rtol=1e-12)
    # Single rows match the batch.
    np.testing.assert_allclose(forest.contributions(rows[3]), credit[3:4], rtol=1e-12)


@pytest.mark.parametrize("column", [0, 2, 3])
def test_contributions_point_at_the_outlying_column(column: int) -> None:
    rng = np.random.default_rng(10)
    data = rng.normal(size=(1000, 4))
    model = _fit(data, n_estimators=100)
    forest = compile_forest(model, X_reference=data[:200])
    row = np.zeros(4)
    row[column] = 12.0
    credit = forest.contributions(row)[0]
    assert int(np.argmax(credit)) == column
    excess = credit - forest.expected_contributions
    assert int(np.argmax(excess)) == column


def test_expected_contributions(
    train: np.ndarray, forest_pair: tuple[IsolationForest, CompiledForest]
) -> None:
    model, forest = forest_pair
    np.testing.assert_allclose(
        forest.expected_contributions, forest.contributions(train).mean(axis=0)
    )
    assert np.any(forest.expected_contributions != 0)  # a reference was given
    plain = compile_forest(model)
    np.testing.assert_array_equal(plain.expected_contributions, np.zeros(5))
    assert not plain.expected_contributions.flags.writeable


# ----------------------------------------------------------------------------- persistence


def test_save_load_round_trip(
    tmp_path: Path, train: np.ndarray, forest_pair: tuple[IsolationForest, CompiledForest]
) -> None:
    model, _ = forest_pair
    forest = compile_forest(model, X_reference=train)
    path = forest.save(tmp_path / "model.npz")
    loaded = CompiledForest.load(path)
    rows = _probe_rows(np.random.default_rng(11), train)
    np.testing.assert_array_equal(loaded.score(rows), forest.score(rows))
    np.testing.assert_array_equal(loaded.contributions(rows), forest.contributions(rows))
    np.testing.assert_array_equal(loaded.expected_contributions, forest.expected_contributions)
    assert (
        loaded.metadata == forest.metadata == {"n_features": 5, "n_trees": 50, "max_samples": 256}
    )
    assert (loaded.n_trees, loaded.n_features, loaded.max_depth) == (50, 5, forest.max_depth)
    # The exact path is used (no ".npz" appended) and no temporary file is left behind.
    other = forest.save(tmp_path / "model.bin")
    assert other == tmp_path / "model.bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.npz"]
    np.testing.assert_array_equal(CompiledForest.load(other).score(rows), forest.score(rows))


def _read_raw(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _write_raw(path: Path, raw: dict[str, np.ndarray]) -> None:
    with path.open("wb") as handle:
        np.savez(handle, **raw)


def _metadata(raw: dict[str, np.ndarray]) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(raw["metadata"].tobytes())
    return meta


def _with_metadata(raw: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    return {**raw, "metadata": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}


@pytest.fixture
def saved(tmp_path: Path, forest_pair: tuple[IsolationForest, CompiledForest]) -> Path:
    return forest_pair[1].save(tmp_path / "model.npz")


def test_load_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        CompiledForest.load(tmp_path / "absent.npz")
    with pytest.raises(ModelError, match="not found"):
        CompiledForest.load(tmp_path)


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1, 0.0])
def test_load_refuses_truncated_file(saved: Path, keep: float) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        CompiledForest.load(saved)


def test_load_refuses_corrupted_bytes(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("threshold.npy")
    # Flip bytes inside the compressed threshold payload (past its local header).
    at = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[at : at + 4] = bytes(b ^ 0xFF for b in data[at : at + 4])
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelError):
        CompiledForest.load(saved)


def test_load_refuses_bad_metadata(saved: Path) -> None:
    raw = _read_raw(saved)
    _write_raw(saved, {**raw, "metadata": np.frombuffer(b"{not json", dtype=np.uint8)})
    with pytest.raises(ModelError, match="not valid JSON"):
        CompiledForest.load(saved)


def test_load_refuses_missing_or_extra_entries(saved: Path) -> None:
    raw = _read_raw(saved)
    _write_raw(saved, {k: v for k, v in raw.items() if k != "feature"})
    with pytest.raises(ModelError, match="missing \\['feature'\\]"):
        CompiledForest.load(saved)
    _write_raw(saved, {**raw, "extra_array": np.zeros(3)})
    with pytest.raises(ModelError, match="extra \\['extra_array'\\]"):
        CompiledForest.load(saved)


def test_load_refuses_pickled_content(saved: Path) -> None:
    raw = _read_raw(saved)
    raw["feature"] = np.array([{"evil": 1}], dtype=object)
    with saved.open("wb") as handle:
        np.savez(handle, allow_pickle=True, **raw)
    with pytest.raises(ModelError):
        CompiledForest.load(saved)
    np.save(saved.with_suffix(".npy"), np.zeros(3))
    with pytest.raises(ModelError, match="not a compiled-forest"):
        CompiledForest.load(saved.with_suffix(".npy"))
    saved.write_text("hello")
    with pytest.raises(ModelError, match="truncated or corrupt"):
        CompiledForest.load(saved)


def _changed(raw: dict[str, np.ndarray], **changes: np.ndarray) -> dict[str, np.ndarray]:
    """Apply array changes: only the structure checks can catch them (a file that passed the
    manifest's SHA-256 but was written wrong, e.g. by a bug)."""
    return {**raw, **changes}


def test_load_refuses_inconsistent_shapes(saved: Path) -> None:
    raw = _read_raw(saved)
    n = raw["feature"].size
    cases: list[tuple[dict[str, np.ndarray], str]] = [
        ({"feature": raw["feature"][:-1]}, "'feature' has"),
        ({"threshold": raw["threshold"].reshape(1, -1)}, "must be 1-D"),
        ({"expected_contributions": np.zeros(4)}, "expected n_features=5"),
        ({"node_offsets": raw["node_offsets"][:-1]}, "inconsistent with n_trees"),
        ({"feature": np.full(n, 7)}, "column index outside"),
        ({"children_left": np.zeros(n, dtype=np.int64)}, "exactly one child|out-of-range child"),
        ({"children_right": np.where(raw["children_right"] > 0, 0, -1)}, "out-of-range child"),
        ({"threshold": np.full(n, np.nan)}, "NaN at a split"),
        ({"threshold": raw["threshold"].astype(np.int64)}, "dtype"),
    ]
    for changes, message in cases:
        _write_raw(saved, _changed(raw, **changes))
        with pytest.raises(ModelError, match=message):
            CompiledForest.load(saved)


def test_load_refuses_unreachable_nodes(saved: Path) -> None:
    raw = _read_raw(saved)
    left, right = raw["children_left"].copy(), raw["children_right"].copy()
    # Make the first tree's root point both children at its right subtree's nodes: the left
    # subtree becomes unreachable (and a node has two parents).
    left[0] = right[0]
    _write_raw(saved, _changed(raw, children_left=left, children_right=right))
    with pytest.raises(ModelError, match="malformed"):
        CompiledForest.load(saved)


def test_load_refuses_bad_metadata_values(saved: Path) -> None:
    raw = _read_raw(saved)
    meta = _metadata(raw)
    for key, value in [
        ("n_trees", 0),
        ("n_features", "5"),
        ("max_samples", True),
    ]:
        _write_raw(saved, _with_metadata(raw, {**meta, key: value}))
        with pytest.raises(ModelError, match=key):
            CompiledForest.load(saved)
