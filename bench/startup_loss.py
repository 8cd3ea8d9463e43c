"""Does every preloaded withdrawal get a verdict when workers start on a backlog?

    python bench/startup_loss.py                      # 3 trials: 20,000 withdrawals, 2 workers
    python bench/startup_loss.py --trials 5 --worker-src DIR   # the workers of another tree

Each trial preloads N withdrawals on fresh topics (4 partitions, nothing committed yet),
starts the workers one after the other (the second joins while the first drains: a
rebalance in the middle of the first fetches), waits until no verdict has arrived for
``--quiet`` seconds, then reads every verdict and dead letter and prints, per trial, the
withdrawals without either (lost), with the input partitions and offsets they came from.
This is the scenario that lost the first records of fresh partitions (issue 10: aiokafka
does not rewind a partition without a committed offset; see ``SafeCommitConsumer``).
``--worker-src DIR`` (an export of another commit, e.g. ``git archive <rev> detector |
tar -x -C DIR``) runs the workers from that tree: before and after in one session.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_throughput import _count, preload  # noqa: E402
from kafka_io import free_port, isolated_settings  # noqa: E402

from detector.config import Settings  # noqa: E402
from detector.local.process import worker_process  # noqa: E402
from detector.stream.app import topic_specs  # noqa: E402
from detector.stream.compat import import_kafka  # noqa: E402
from detector.stream.topics import delete_topics, ensure_topics  # noqa: E402


def read_all(settings: Settings, topic: str) -> list[Any]:
    """Every record of ``topic``, from its first offset to its current end."""
    import_kafka()
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_list, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise SystemExit(f"reading {topic}: timed out")
            for records in consumer.poll(timeout_ms=1000).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def trial(base: Settings, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    settings = isolated_settings(base.bootstrap_servers, tmp, partitions=args.partitions)
    ensure_topics(settings.bootstrap_servers, topic_specs(settings))
    try:
        preload(settings, args.n)
        began = time.monotonic()
        with contextlib.ExitStack() as stack:
            for i in range(args.workers):
                mine = replace(settings, web_port=free_port(), data_dir=tmp / f"w{i}")
                proc = worker_process(mine, log_path=tmp / f"w{i}.log", cwd=args.worker_src)
                stack.enter_context(proc)
            last, quiet_since = -1, time.monotonic()
            while time.monotonic() - quiet_since < args.quiet:
                count = _count(settings, settings.topic_decisions)
                if count != last:
                    last, quiet_since = count, time.monotonic()
                time.sleep(1.0)
        seconds = time.monotonic() - began
        inputs = {
            json.loads(r.value)["withdrawal_id"]: (r.partition, r.offset)
            for r in read_all(settings, settings.topic_withdrawals)
        }
        decided: dict[str, int] = {}
        for record in read_all(settings, settings.topic_decisions):
            wid = json.loads(record.value)["withdrawal_id"]
            decided[wid] = decided.get(wid, 0) + 1
        dead = 0
        for record in read_all(settings, settings.topic_dlq):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                wid = json.loads(record.value)["withdrawal_id"]
                decided.setdefault(wid, 0)
                dead += 1
        lost = sorted(inputs[w] for w in inputs if w not in decided)
        return {
            "sent": len(inputs),
            "decided": sum(1 for w in inputs if decided.get(w)),
            "dead_letters": dead,
            "duplicates": sum(c - 1 for c in decided.values() if c > 1),
            "lost": len(lost),
            "lost_at": lost[:20],
            "seconds": round(seconds, 1),
        }
    finally:
        delete_topics(settings.bootstrap_servers, [s.name for s in topic_specs(settings)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--quiet", type=float, default=20.0, help="s without a new verdict")
    parser.add_argument("--worker-src", type=Path, default=None)
    args = parser.parse_args(argv)
    base = Settings.from_env()
    total = 0
    for number in range(1, args.trials + 1):
        with tempfile.TemporaryDirectory(prefix="startup-loss-") as tmp:
            result = trial(base, args, Path(tmp))
        total += result["lost"]
        print(f"trial {number}: " + json.dumps(result), flush=True)
    source = args.worker_src or REPO
    print(f"workers from {source}: {total} lost over {args.trials} trials of {args.n:,}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
