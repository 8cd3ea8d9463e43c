"""Replay throughput: the worker's decision logic over a simulated history, no Kafka.

    python bench/bench_replay.py [--accounts 1000] [--days 21] [--repeat 3]

Prints events/s of ``detector.offline.replay.replay`` (features + batched scoring + policy +
verdict documents) with the served model, in one process and with the default (two
processes when two CPUs are free: the account stage in a forked child), runs alternating;
then the time per event of each stage, in one process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from detector.events import Withdrawal, validate_withdrawal
from detector.gctune import relaxed
from detector.model import Model
from detector.offline import simulate
from detector.offline.replay import CHUNK, replay, replay_jobs
from detector.pipeline import Decider, feature_rows

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--days", type=float, default=21.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    args = parser.parse_args()

    model = Model.load(Path(args.model))
    config = simulate.SimConfig(accounts=args.accounts, days=args.days, seed=2)
    events = [validate_withdrawal(e) for e in simulate.generate(config)]
    print(
        f"{len(events):,} withdrawals ({args.accounts} accounts x {args.days:g} days), "
        f"model {model.version} ({sum(f.forest.n_trees for f in model.families)} trees)"
    )

    # Alternating, so both see the same machine: one process, then the default (two
    # processes where two CPUs are free: the account stage in a forked child).
    default_jobs = replay_jobs(None, len(events))
    one: list[float] = []
    default: list[float] = []
    for _ in range(args.repeat):
        one.append(replay(events, model, jobs=1).events_per_second)
        default.append(replay(events, model).events_per_second)
    named = (("replay, one process", one), (f"replay, default ({default_jobs} jobs)", default))
    for name, runs in named:
        print(
            f"{name}: {np.median(runs):,.0f} events/s (median of {args.repeat}; "
            f"runs {', '.join(f'{r:,.0f}' for r in runs)})"
        )
    print(
        f"default / one process: {np.median(default) / np.median(one):.2f}x; "
        f"target >= 50,000 events/s: {'met' if np.median(default) >= 50_000 else 'not met'}"
    )

    with relaxed():  # as replay() runs
        per_stage(events, model)


def per_stage(events: list[Withdrawal], model: Model) -> None:
    started = time.perf_counter()
    items = list(feature_rows(events, model.params))
    features_s = time.perf_counter() - started
    decider = Decider(model, hold_seconds=3600)
    started = time.perf_counter()
    for i in range(0, len(items), CHUNK):
        model.score(np.array([it.row for it in items[i : i + CHUNK]], dtype=np.float64))
    scoring_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(0, len(items), CHUNK):
        decider.decide(items[i : i + CHUNK], now=0.0)
    decide_s = time.perf_counter() - started
    per = 1e6 / len(events)
    print(
        f"per event: features {features_s * per:.1f} us, scoring {scoring_s * per:.1f} us, "
        f"scoring + policy + verdict documents {decide_s * per:.1f} us"
    )


if __name__ == "__main__":
    main()
