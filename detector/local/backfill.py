"""``detector backfill``: build the workers' state from history, so they start warm.

A new deployment otherwise starts every account cold (every first withdrawal looks new).
Backfill replays a history file through the same composition the worker uses (account
features, dedupe memory, fan-in) and writes the final state of every account and destination
to the changelogs the workers recover from, each on the partition the worker will own it on
(the account's withdrawals partition; the destination's stage-2 partition). Workers started
afterwards recover it like their own state; their first verdict equals ``detector replay``
over the history plus that withdrawal.

Run it before the workers start (it refuses while the app's consumer group has members: a
running worker would not read changelogs until its next recovery, and could overwrite them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from detector.config import Settings
from detector.errors import KafkaSetupError
from detector.events import Withdrawal
from detector.features import FeatureParams
from detector.offline.dataset import load_events
from detector.pipeline import FeatureState
from detector.stream.app import ACCOUNTS_TABLE, DESTINATIONS_TABLE, topic_specs
from detector.stream.compat import default_partition, import_kafka
from detector.stream.state import encode
from detector.stream.topics import admin_client, ensure_topics

__all__ = ["BackfillResult", "backfill", "build_state", "write_state"]


@dataclass(frozen=True)
class BackfillResult:
    events: int
    accounts: int
    destinations: int
    build_s: float  # features over the history
    write_s: float  # changelog records produced and acknowledged
    read_s: float  # reading and validating the file


def build_state(
    events: Iterable[Withdrawal], settings: Settings, params: FeatureParams
) -> FeatureState:
    """The state the worker would hold after deciding ``events`` (event-time order), with
    the scales of the model it serves."""
    state = FeatureState(
        params, structuring=settings.structuring(), dedupe_window_s=settings.dedupe_window_s
    )
    applied: set[str] = set()  # a withdrawal_id repeated in the history counts once
    for event in events:
        if event.withdrawal_id not in applied:
            applied.add(event.withdrawal_id)
            state.warm(event)
    return state


def backfill(
    events_path: Path,
    settings: Settings,
    params: FeatureParams,
    *,
    log: Callable[[str], None] = print,
) -> BackfillResult:
    _refuse_if_running(settings)
    started = time.perf_counter()
    events = load_events(events_path)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    state = build_state(events, settings, params)
    build_s = time.perf_counter() - started
    security = settings.kafka_python_config()
    ensure_topics(settings.bootstrap_servers, topic_specs(settings), security=security)
    started = time.perf_counter()
    write_state(settings, state)
    write_s = time.perf_counter() - started
    result = BackfillResult(
        len(events), len(state.accounts), len(state.destinations), build_s, write_s, read_s
    )
    log(
        f"backfill: {result.events:,} withdrawals -> {result.accounts:,} accounts, "
        f"{result.destinations:,} destinations; read {read_s:.1f} s, state built at "
        f"{result.events / max(build_s, 1e-9):,.0f} events/s, written in {write_s:.1f} s"
    )
    return result


def write_state(settings: Settings, state: FeatureState) -> None:
    """Produce ``state`` into the worker's changelog topics (acknowledged by Kafka)."""
    import_kafka()
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_list,
        acks="all",
        linger_ms=20,
        batch_size=1 << 20,
        max_request_size=8 << 20,
        **settings.kafka_python_config(),
    )
    n = settings.partitions
    failures: list[BaseException] = []
    try:
        for table, states in (
            (ACCOUNTS_TABLE, state.accounts),
            (DESTINATIONS_TABLE, state.destinations),
        ):
            topic = settings.changelog_topic(table)
            for key, value in states.items():
                raw = key.encode()
                producer.send(
                    topic, key=raw, value=encode(value), partition=default_partition(raw, n)
                ).add_errback(failures.append)
        producer.flush(120)
    finally:
        producer.close()
    if failures:
        raise KafkaSetupError(f"{len(failures)} state records were not written: {failures[0]}")


def _refuse_if_running(settings: Settings) -> None:
    with admin_client(settings.bootstrap_servers, security=settings.kafka_python_config()) as admin:
        described = admin.describe_groups([settings.app_id])  # kafka-python 3: a dict by id
    group = described.get(settings.app_id, {})
    state = group.get("group_state", "Dead")
    if group.get("members") or state not in ("Empty", "Dead"):
        raise KafkaSetupError(
            f"consumer group {settings.app_id} is {state} with "
            f"{len(group.get('members') or [])} member(s): stop the workers before a backfill "
            "(they recover the state when they start)"
        )
