"""Benchmark: the destination stage's scoring and verdicts per micro-batch size.

    python bench/bench_decide.py [--model models/default] [--repeat 300]

At a steady load the worker's micro-batches are small (at 1,000/s on the 2-core machine:
~4-10 forwarded records per batch), so what a call costs regardless of its size matters
as much as what each withdrawal adds. Simulated traffic (the simulator's seed 5, 300
accounts x 14 days) goes through the features as the worker computes them, then
``Model.score_with_evidence`` (three forests, calibration) and ``Decider.decide`` (that,
the policy, reasons for the flagged, verdict documents) are timed on consecutive slices of
1, 4, 16 and 500 withdrawals. Printed: the median per call and per withdrawal, and a
digest of the verdicts of the 4-slices (compare it between two versions of the code: equal
digests mean equal verdicts, reasons included).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detector.events import validate_withdrawal  # noqa: E402
from detector.model import Model  # noqa: E402
from detector.offline import simulate  # noqa: E402
from detector.pipeline import Decider, FeatureState  # noqa: E402

SIZES = (1, 4, 16, 500)
NOW = 1_800_000_000.0  # a fixed decision time: verdict documents compare byte for byte


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    model = Model.load(args.model)
    config = simulate.SimConfig(accounts=300, days=14, seed=5, attacks_per_scenario=2)
    events = [validate_withdrawal(e) for e in simulate.generate(config)]
    state = FeatureState(model.params)
    items = [state.step(e) for e in events]
    decider = Decider(model, hold_seconds=3600)
    print(f"{len(items):,} withdrawals, model {model.version}, medians of {args.repeat} calls")
    digest = hashlib.sha256()
    for size in SIZES:
        starts = range(0, min(len(items) - size, args.repeat * size), size)
        scored, decided = [], []
        for start in starts:
            chunk = items[start : start + size]
            rows = np.array([item.row for item in chunk])
            began = time.perf_counter()
            model.score_with_evidence(rows)
            scored.append(time.perf_counter() - began)
            began = time.perf_counter()
            verdicts = decider.decide(chunk, now=NOW)
            decided.append(time.perf_counter() - began)
            if size == 4:
                digest.update(json.dumps(verdicts, sort_keys=True).encode())
        for name, times in (("score_with_evidence", scored), ("decide", decided)):
            per_call = statistics.median(times) * 1e6
            print(
                f"  {size:4d} per call  {name:20s} {per_call:9.1f} µs/call"
                f"  {per_call / size:8.1f} µs/withdrawal"
            )
    print(f"verdicts of the 4-slices: sha256 {digest.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
