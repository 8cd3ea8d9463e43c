"""Benchmark: sklearn's IsolationForest.score_samples vs detector.scoring.CompiledForest.

Run ``python bench/bench_scoring.py [--trees 100] [--features 12] [--repeat 200]
[--max-samples 256 2048]``. For each subsample size (by default the issue's reference shape,
max_samples 256, and the served model's, max_samples 2048) it fits a forest on synthetic rows,
then prints single-row and batch latencies (medians over ``--repeat`` timed calls,
``time.perf_counter``) for both, their ratios, the contributions latency, and the largest
absolute score difference over every row evaluated. Medians, because the machine may be shared:
a busy neighbour inflates the mean and the maximum long before the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import IsolationForest

from detector.offline.forests import compile_forest

__all__ = ["main"]

TRAIN_ROWS = 20_000  # synthetic training rows (the brief's reference setup)
SHAPES = {256: "issue reference shape", 2048: "served model shape"}  # max_samples -> label
BATCH = 1_000  # rows per batch call
TARGET_SINGLE_US = 50.0  # target: one event, microseconds
TARGET_BATCH_US = 3.0  # target: per event inside a batch of 1,000, microseconds
WARMUP_CALLS = 5  # untimed calls before each measurement (caches, lazy imports)


@dataclass(frozen=True)
class Result:
    """One forest shape's figures; latencies in microseconds per event."""

    max_samples: int
    max_depth: int
    compile_ms: float
    sk_single: float
    our_single: float
    sk_batch: float
    our_batch: float
    contributions: float
    max_diff: float
    rows_compared: int


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


def measure(*, trees: int, features: int, max_samples: int, repeat: int, seed: int) -> Result:
    """Fit one forest shape and time sklearn and the compiled forest on the same rows."""
    rng = np.random.default_rng(seed)
    train = _synthetic(rng, TRAIN_ROWS, features)
    model = IsolationForest(n_estimators=trees, max_samples=max_samples, random_state=seed)
    model.fit(train)
    start = time.perf_counter()
    forest = compile_forest(model)
    compile_ms = (time.perf_counter() - start) * 1e3

    probe = np.vstack([_synthetic(rng, BATCH, features), train[:repeat]])
    batch = probe[:BATCH]
    rows = iter(np.tile(probe, (3, 1)))  # distinct rows for consecutive single-row calls

    sk_single = _median_us(lambda: model.score_samples(next(rows)[None, :]), repeat)
    our_single = _median_us(lambda: forest.score(next(rows)), repeat)
    sk_batch = _median_us(lambda: model.score_samples(batch), repeat) / BATCH
    our_batch = _median_us(lambda: forest.score(batch), repeat) / BATCH
    contributions = _median_us(lambda: forest.contributions(batch), max(3, repeat // 10)) / BATCH

    single_rows = probe[BATCH:]
    single_scores = np.concatenate([forest.score(row) for row in single_rows])
    max_diff = max(
        float(np.max(np.abs(forest.score(probe) + model.score_samples(probe)))),
        float(np.max(np.abs(single_scores + model.score_samples(single_rows)))),
    )
    return Result(
        max_samples=max_samples,
        max_depth=forest.max_depth,
        compile_ms=compile_ms,
        sk_single=sk_single,
        our_single=our_single,
        sk_batch=sk_batch,
        our_batch=our_batch,
        contributions=contributions,
        max_diff=max_diff,
        rows_compared=probe.shape[0] + single_rows.shape[0],
    )


def _report(result: Result, trees: int) -> None:
    r = result
    label = SHAPES.get(r.max_samples, "custom shape")
    print(
        f"{label}: {trees} trees, max_samples {r.max_samples}, max_depth {r.max_depth}, "
        f"compile {r.compile_ms:.1f} ms"
    )
    single_ok = "ok" if r.our_single <= TARGET_SINGLE_US else "MISSED"
    batch_ok = "ok" if r.our_batch <= TARGET_BATCH_US else "MISSED"
    print(f"  single row   sklearn {r.sk_single:10.1f} us/event")
    print(
        f"  single row   ours    {r.our_single:10.1f} us/event   "
        f"speed-up x{r.sk_single / r.our_single:,.0f}   "
        f"(target <= {TARGET_SINGLE_US:g}: {single_ok})"
    )
    print(f"  batch {BATCH:,}  sklearn {r.sk_batch:10.2f} us/event")
    print(
        f"  batch {BATCH:,}  ours    {r.our_batch:10.2f} us/event   "
        f"speed-up x{r.sk_batch / r.our_batch:,.1f}   "
        f"(target <= {TARGET_BATCH_US:g}: {batch_ok})"
    )
    print(f"  contributions, batch {BATCH:,}: {r.contributions:.2f} us/event")
    print(f"  max |score difference| over {r.rows_compared:,} rows: {r.max_diff:.3g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=100, help="n_estimators (default 100)")
    parser.add_argument("--features", type=int, default=12, help="columns (default 12)")
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per figure")
    parser.add_argument(
        "--max-samples",
        type=int,
        nargs="+",
        default=list(SHAPES),
        help="psi, one or more (default: 256 2048, the issue's and the served model's shapes)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(
        f"{args.trees} trees, {args.features} features, trained on {TRAIN_ROWS:,} synthetic "
        f"rows; medians over {args.repeat} timed calls ({max(3, args.repeat // 10)} for "
        "contributions)"
    )
    for max_samples in args.max_samples:
        result = measure(
            trees=args.trees,
            features=args.features,
            max_samples=max_samples,
            repeat=args.repeat,
            seed=args.seed,
        )
        _report(result, args.trees)
    return 0


if __name__ == "__main__":
    sys.exit(main())
