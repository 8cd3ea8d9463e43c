"""End-to-end latency of lone withdrawals through a real worker on a real broker.

    python bench/bench_latency.py [--count 50] [--gap-ms 200]

Needs a broker (``detector kafka start`` or KAFKA_BOOTSTRAP_SERVERS). Starts a worker on
topics of its own, sends one withdrawal at a time (acks=all), and times produce -> verdict
consumed by a plain kafka-python client. An idle worker is the worst case for micro-batching:
each event waits up to DETECTOR_BATCH_WITHIN_MS in each of the two stages.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from kafka_io import isolated_settings, running_worker  # noqa: E402

from detector.config import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--gap-ms", type=float, default=200.0)
    args = parser.parse_args()
    import kafka

    settings = isolated_settings(
        Settings.from_env().bootstrap_servers, Path(tempfile.mkdtemp()), partitions=4
    )
    with running_worker(settings):
        producer = kafka.KafkaProducer(
            bootstrap_servers=settings.bootstrap_list, acks="all", linger_ms=0
        )
        consumer = kafka.KafkaConsumer(
            settings.topic_decisions,
            bootstrap_servers=settings.bootstrap_list,
            auto_offset_reset="latest",
            group_id=None,
            fetch_max_wait_ms=5,
        )
        consumer.poll(1000)
        latencies = []
        for i in range(args.count):
            event = {
                "withdrawal_id": f"lat-{i}",
                "account_id": f"acct-{i % 7}",
                "asset": "BTC",
                "amount": "0.01",
                "amount_usd": 900.0,
                "destination": "bc1qbench",
                "requested_at": "2026-11-24T10:00:00Z",
            }
            started = time.perf_counter()
            producer.send(
                settings.topic_withdrawals,
                key=event["account_id"].encode(),
                value=json.dumps(event).encode(),
            )
            producer.flush()
            while True:
                records = [r for batch in consumer.poll(timeout_ms=1000).values() for r in batch]
                if any(
                    json.loads(r.value)["withdrawal_id"] == event["withdrawal_id"] for r in records
                ):
                    break
            latencies.append((time.perf_counter() - started) * 1000.0)
            time.sleep(args.gap_ms / 1000.0)
        producer.close()
        consumer.close()
    arr = np.array(latencies)
    print(
        f"lone withdrawal, produce -> verdict consumed ({args.count} events, two Kafka hops, "
        f"acks=all): p50 {np.percentile(arr, 50):.1f} ms, p99 {np.percentile(arr, 99):.1f} ms,"
        f" max {arr.max():.1f} ms"
    )


if __name__ == "__main__":
    main()
