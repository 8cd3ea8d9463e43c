"""Benchmark: sklearn's IsolationForest.score_samples vs detector.scoring.CompiledForest.

Run ``python bench/bench_scoring.py [--trees 100] [--features 12] [--repeat 200]``. It fits a
forest on synthetic rows, then prints single-row and batch latencies (medians over
``--repeat`` timed calls, ``time.perf_counter``) for both, their ratios, and the largest
absolute score difference over every row evaluated.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from sklearn.ensemble import IsolationForest

from detector.scoring import CompiledForest

__all__ = ["main"]

TRAIN_ROWS = 20_000  # synthetic training rows (the brief's reference setup)
MAX_SAMPLES = 256  # sklearn's "auto" subsample size, psi
BATCH = 1_000  # rows per batch call
TARGET_SINGLE_US = 50.0  # target: one event, microseconds
TARGET_BATCH_US = 3.0  # target: per event inside a batch of 1,000, microseconds
WARMUP_CALLS = 5  # untimed calls before each measurement (caches, lazy imports)


def _median_us(call: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``call`` in microseconds over ``repeat`` timed runs."""
    for _ in range(WARMUP_CALLS):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _synthetic(rng: np.random.Generator, rows: int, features: int) -> np.ndarray:
    """Correlated, skewed features resembling amounts/counts, with a few injected outliers."""
    base = rng.normal(size=(rows, features))
    mixed = base @ rng.normal(scale=0.5, size=(features, features)) + base
    mixed[:, ::3] = np.exp(mixed[:, ::3] / 2.0)  # log-normal-like columns
    outliers = rng.choice(rows, size=max(1, rows // 200), replace=False)
    mixed[outliers] *= rng.uniform(3.0, 10.0, size=(outliers.size, 1))
    return mixed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=100, help="n_estimators (default 100)")
    parser.add_argument("--features", type=int, default=12, help="columns (default 12)")
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per figure")
    parser.add_argument("--max-samples", type=int, default=MAX_SAMPLES, help="psi (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    train = _synthetic(rng, TRAIN_ROWS, args.features)
    model = IsolationForest(
        n_estimators=args.trees, max_samples=args.max_samples, random_state=args.seed
    ).fit(train)
    start = time.perf_counter()
    forest = CompiledForest.from_sklearn(model)
    compile_ms = (time.perf_counter() - start) * 1e3

    probe = np.vstack([_synthetic(rng, BATCH, args.features), train[: args.repeat]])
    batch = probe[:BATCH]
    rows = iter(np.tile(probe, (3, 1)))  # distinct rows for consecutive single-row calls

    sk_single = _median_us(lambda: model.score_samples(next(rows)[None, :]), args.repeat)
    our_single = _median_us(lambda: forest.score(next(rows)), args.repeat)
    sk_batch = _median_us(lambda: model.score_samples(batch), args.repeat) / BATCH
    our_batch = _median_us(lambda: forest.score(batch), args.repeat) / BATCH
    contrib_batch = _median_us(lambda: forest.contributions(batch), max(3, args.repeat // 10))

    single_rows = probe[BATCH:]
    single_scores = np.concatenate([forest.score(row) for row in single_rows])
    diff = max(
        float(np.max(np.abs(forest.score(probe) + model.score_samples(probe)))),
        float(np.max(np.abs(single_scores + model.score_samples(single_rows)))),
    )

    print(
        f"forest: {args.trees} trees, max_samples {args.max_samples}, {args.features} features, "
        f"trained on {TRAIN_ROWS:,} synthetic rows; max_depth {forest.max_depth}; "
        f"compile {compile_ms:.1f} ms; medians over {args.repeat} calls"
    )
    print(f"single row   sklearn {sk_single:10.1f} us/event")
    print(
        f"single row   ours    {our_single:10.1f} us/event   "
        f"speed-up x{sk_single / our_single:,.0f}   (target <= {TARGET_SINGLE_US:g})"
    )
    print(f"batch {BATCH:,}  sklearn {sk_batch:10.2f} us/event")
    print(
        f"batch {BATCH:,}  ours    {our_batch:10.2f} us/event   "
        f"speed-up x{sk_batch / our_batch:,.1f}   (target <= {TARGET_BATCH_US:g})"
    )
    print(f"contributions, batch {BATCH:,}: {contrib_batch / BATCH:.2f} us/event")
    print(f"max |score difference| over {probe.shape[0] + single_rows.shape[0]:,} rows: {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
