"""State size per account and destination, and recovery time for N accounts.

Part 1 (no broker): simulated traffic through the worker's composition (``Stages`` over
dicts, in micro-batches of 500 as the worker takes them); prints the encoded size of each
account / destination state (what the changelog and the store hold) and the Python memory
of the decoded states (tracemalloc), per account.

Part 2 (``--recover N``, needs a broker): writes N account states (encoded states of part 1,
cycled under new keys) into a fresh changelog, then starts a worker on that app id and
times until /readyz (tables recovered), for each store (memory, rocksdb; rocksdb twice: the
second start recovers only what it missed).

    python bench/bench_state.py                       # sizes
    python bench/bench_state.py --recover 1000000     # + recovery of 1 million accounts
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from kafka_io import DEFAULT_MODEL, isolated_settings  # noqa: E402

from detector.config import Settings  # noqa: E402
from detector.events import validate_withdrawal  # noqa: E402
from detector.local.process import stop_process, worker_process  # noqa: E402
from detector.model import Model  # noqa: E402
from detector.offline import simulate  # noqa: E402
from detector.pipeline import FeatureState  # noqa: E402
from detector.stream.app import ACCOUNTS_TABLE, topic_specs  # noqa: E402
from detector.stream.compat import import_kafka  # noqa: E402
from detector.stream.topics import delete_topics, ensure_topics  # noqa: E402

BATCH = 2000  # the worker's default micro-batch (DETECTOR_BATCH_MAX)


def sizes(accounts: int, days: float) -> list[bytes]:
    events = [
        validate_withdrawal(e)
        for e in simulate.generate(
            simulate.SimConfig(accounts=accounts, days=days, seed=5, attacks_per_scenario=2)
        )
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    state = FeatureState(Model.load(DEFAULT_MODEL).params)
    for i, event in enumerate(events):
        if i % BATCH == 0:
            state.begin_batch()  # as the worker: earlier batches' dedupe entries are compacted
        state.step(event)
    state.decided.clear()  # the dedupe entries of the destination stage are counted apart
    decoded = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    acc = [orjson.dumps(v) for v in state.accounts.values()]
    dst = [orjson.dumps(v) for v in state.destinations.values()]
    print(f"{len(events)} withdrawals of {len(acc)} accounts over {days:g} days")
    for name, blobs in (("account", acc), ("destination", dst)):
        lengths = sorted(len(b) for b in blobs)
        print(
            f"  {name} state, encoded: mean {statistics.mean(lengths):,.0f} B, "
            f"median {lengths[len(lengths) // 2]:,} B, p99 {lengths[int(len(lengths) * 0.99)]:,} B,"
            f" max {lengths[-1]:,} B ({len(lengths)} keys)"
        )
    per_account = decoded / max(len(acc), 1)
    print(f"  decoded, in Python (accounts + destinations): {per_account:,.0f} B per account")
    return acc


def recover(blobs: list[bytes], n: int) -> None:
    import_kafka()
    from kafka import KafkaProducer

    base = Settings.from_env()
    tmp = Path(tempfile.mkdtemp(prefix="bench-state-"))
    settings = isolated_settings(base.bootstrap_servers, tmp, partitions=4)
    ensure_topics(settings.bootstrap_servers, topic_specs(settings))
    topic = settings.changelog_topic(ACCOUNTS_TABLE)
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_list, linger_ms=50, batch_size=1 << 20, acks=1
    )
    started = time.perf_counter()
    for i in range(n):
        producer.send(topic, key=f"acct-{i:08d}".encode(), value=blobs[i % len(blobs)])
    producer.flush()
    producer.close()
    written = sum(len(blobs[i % len(blobs)]) for i in range(n))
    print(
        f"wrote {n:,} account states ({written / 1e6:,.0f} MB) to {topic} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    try:
        for store, starts in (("memory", 1), ("rocksdb", 2)):
            worker = replace(settings, store=store, data_dir=tmp / store, model_dir=DEFAULT_MODEL)
            for attempt in range(starts):
                t0 = time.perf_counter()
                with worker_process(
                    worker, log_path=tmp / f"{store}-{attempt}.log", ready_timeout=3600
                ) as proc:
                    seconds = time.perf_counter() - t0
                    rss = _rss_mb(proc.pid)
                    stop_process(proc)
                label = "first start" if attempt == 0 else "restart"
                print(
                    f"  store={store:7s} {label:11s}: ready (tables recovered) after "
                    f"{seconds:6.1f} s, RSS {rss:,.0f} MB"
                )
    finally:
        delete_topics(settings.bootstrap_servers, [s.name for s in topic_specs(settings)])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--recover", type=int, default=0, help="accounts to recover")
    args = parser.parse_args()
    blobs = sizes(args.accounts, args.days)
    if args.recover:
        recover(blobs, args.recover)


if __name__ == "__main__":
    main()
