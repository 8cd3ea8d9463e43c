"""The latency floor's reference pipelines (``bench/pipelines.py`` relay and hop, as
``bench_throughput.py`` starts them) and Kafka's own ``EndToEndLatency`` tool, on the broker:
a floor is only a floor if every record crosses it, unchanged and in order."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kafka_io import consume_until, isolated_settings, produce

from detector.stream.app import topic_specs
from detector.stream.topics import delete_topics, ensure_topics

KEYS = 6
PER_KEY = 10


@pytest.mark.broker
@pytest.mark.parametrize("mode", ["hop", "relay"])
def test_a_reference_pipeline_delivers_every_record_unchanged_in_key_order(
    bench: ModuleType, bootstrap_servers: str, tmp_path: Path, mode: str
) -> None:
    settings = isolated_settings(bootstrap_servers, tmp_path, partitions=3)
    ensure_topics(settings.bootstrap_servers, topic_specs(settings))
    sent = [(f"k{i % KEYS}".encode(), f"{mode} record {i}".encode()) for i in range(KEYS * PER_KEY)]
    try:
        with bench.relay_process(settings, tmp_path, mode) as proc:
            produce(settings, sent)

            def arrived(records: list[Any]) -> bool:
                return len(records) >= len(sent) or proc.poll() is not None

            records = consume_until(settings, [settings.topic_decisions], arrived, timeout=90.0)
            assert proc.poll() is None, (tmp_path / f"{mode}.log").read_text()[-2000:]
    finally:
        delete_topics(settings.bootstrap_servers, [s.name for s in topic_specs(settings)])
    got = [(r.key, r.value) for r in records]
    assert sorted(got) == sorted(sent)  # each once: no loss, no duplicate, bytes unchanged
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for key, value in got:
        by_key[key].append(int(value.rsplit(b" ", 1)[1]))
    assert all(order == sorted(order) for order in by_key.values())  # a key's order holds


@pytest.mark.broker
def test_kafkas_own_latency_tool_runs_against_the_broker(
    bench: ModuleType, bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = isolated_settings(bootstrap_servers, tmp_path)
    summary = bench.kafka_tool_latency(settings, tmp_path, n=50)
    assert summary.startswith("Avg latency"), summary
    assert "Percentiles: 50th = " in summary and "99th = " in summary, summary
