"""The Faust app, built by a factory from :class:`Settings`: thin agents over the pipeline.

Topology (every topic created explicitly by :func:`topic_specs`, same partition count)::

    withdrawals (raw bytes, key=account_id)
      -> agent `accounts`: validate (invalid -> withdrawals-dlq with the reason),
         account features (table `accounts`), repartition by destination
    <app_id>-withdrawals-by-destination (key=destination)
      -> agent `decide`: fan-in (table `destinations`), micro-batch scoring with the
         compiled forest, policy -> decisions (plain JSON, key=account_id)

Delivery: at-least-once. Each micro-batch's sends are awaited (acks=all, idempotent
producer) before its offsets are acked, so a crash redelivers rather than loses; a
redelivered withdrawal gets an identical verdict value (same features are not guaranteed
after a replay of state, but the verdict is keyed by withdrawal_id and consumers dedupe).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from detector.config import Settings
from detector.errors import InvalidEvent
from detector.events import Withdrawal, format_rfc3339, parse_withdrawal, validate_withdrawal
from detector.features import AccountFeatures, account_step, destination_step, feature_vector
from detector.model import Model
from detector.pipeline import Decider, Pending
from detector.stream import compat
from detector.stream.health import Health, http_response
from detector.stream.metrics import DetectorMetrics
from detector.stream.topics import TopicSpec

__all__ = ["ACCOUNTS_TABLE", "DESTINATIONS_TABLE", "DetectorApp", "create_app", "topic_specs"]

log = logging.getLogger(__name__)

ACCOUNTS_TABLE = "accounts"
DESTINATIONS_TABLE = "destinations"
# Changelogs are compacted, never time-retained (traps: faust#597).
_COMPACTED = {"cleanup.policy": "compact"}
# How often lag and state-size gauges are refreshed (seconds).
_GAUGE_INTERVAL_S = 2.0
# Backoff of failed sends: first wait and cap (seconds).
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes, with explicit partition counts."""
    n, rf = settings.partitions, settings.replication_factor
    return [
        TopicSpec(settings.topic_withdrawals, n, rf),
        TopicSpec(settings.topic_decisions, n, rf),
        TopicSpec(settings.topic_dlq, n, rf),
        TopicSpec(settings.topic_by_destination, n, rf),
        TopicSpec(settings.changelog_topic(ACCOUNTS_TABLE), n, rf, _COMPACTED),
        TopicSpec(settings.changelog_topic(DESTINATIONS_TABLE), n, rf, _COMPACTED),
    ]


@dataclass
class DetectorApp:
    """The Faust app with handles the tests and the CLI need."""

    app: faust.App
    settings: Settings
    metrics: DetectorMetrics
    registry: CollectorRegistry
    health: Health
    accounts: Any
    destinations: Any
    accounts_agent: Any
    decide_agent: Any
    topics: dict[str, Any]


def create_app(
    settings: Settings,
    *,
    model: Model,
    registry: CollectorRegistry | None = None,
    store: str = "memory://",
    broker: str | None = None,
    clock: Callable[[], float] = time.time,
) -> DetectorApp:
    """Build a fresh Faust app (no module-level state: tests build as many as they like)."""
    registry = CollectorRegistry() if registry is None else registry
    metrics = DetectorMetrics(
        registry,
        send_topics=(settings.topic_decisions, settings.topic_dlq, settings.topic_by_destination),
    )
    metrics.set_model(model.version)
    health = Health(stuck_after_s=settings.stuck_after_s)
    health.set_model_loaded(True)
    app = faust.App(
        settings.app_id,
        broker=broker or settings.broker_url,
        store=store,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,  # topics are created explicitly (topic_specs)
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        datadir=str(settings.data_dir / "faust"),
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        table_standby_replicas=0,
        loghandlers=[],
        # Failover (README): a killed worker's partitions move after the session timeout,
        # not Faust's 60 s; heartbeats come from aiokafka's thread, not the agents' loop.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        consumer_group_instance_id=settings.group_instance_id or None,
    )
    if (broker or settings.broker_url).startswith("kafka://"):
        app.transport = compat.DetectorTransport(app.conf.broker_consumer, app)

    withdrawals = _raw_topic(app, settings.topic_withdrawals, settings.partitions)
    by_destination = _raw_topic(app, settings.topic_by_destination, settings.partitions)
    decisions = _raw_topic(app, settings.topic_decisions, settings.partitions)
    dlq = _raw_topic(app, settings.topic_dlq, settings.partitions)
    accounts = app.Table(ACCOUNTS_TABLE, default=None, partitions=settings.partitions)
    destinations = app.Table(DESTINATIONS_TABLE, default=None, partitions=settings.partitions)
    decider = Decider(model, hold_seconds=settings.hold_seconds)
    batch_within = settings.batch_within_ms / 1000.0

    def dead_letter(event: Any, exc: InvalidEvent) -> _Out:
        msg = event.message
        headers = [
            ("dlq.code", exc.code.encode()),
            ("dlq.reason", exc.reason.encode()),
            ("dlq.topic", str(msg.topic).encode()),
            ("dlq.partition", str(msg.partition).encode()),
            ("dlq.offset", str(msg.offset).encode()),
            ("dlq.at", format_rfc3339(clock()).encode()),
        ]
        metrics.observe_dlq(exc.code)
        return _Out(dlq, settings.topic_dlq, event.key, event.value or b"", headers)

    @app.agent(withdrawals, name="accounts")
    async def accounts_agent(stream: Any) -> None:
        async for batch in stream.take_events(settings.batch_max, within=batch_within):
            compat.hold(batch)
            outbox: list[_Out] = []
            for event in batch:
                event_started = time.perf_counter()
                # Table writes go to the changelog partition of the *current* event:
                # make each event current while its own key is written (traps).
                compat.set_current_event(event)
                metrics.observe_consumed()
                try:
                    withdrawal = parse_withdrawal(event.value or b"", key=event.key)
                except InvalidEvent as exc:
                    outbox.append(dead_letter(event, exc))
                    metrics.observe_event(time.perf_counter() - event_started)
                    continue
                state, acc = account_step(accounts.get(withdrawal.account_id), withdrawal)
                accounts[withdrawal.account_id] = state
                payload = json.dumps(
                    {"e": withdrawal.to_json(), "a": acc.to_json()}, separators=(",", ":")
                ).encode()
                outbox.append(
                    _Out(
                        by_destination,
                        settings.topic_by_destination,
                        withdrawal.destination.encode(),
                        payload,
                    )
                )
                metrics.observe_event(time.perf_counter() - event_started)
            compat.set_current_event(None)
            await _send_all(outbox, metrics)
            compat.release(batch)
            health.record_progress(len(batch))

    @app.agent(by_destination, name="decide")
    async def decide_agent(stream: Any) -> None:
        async for batch in stream.take_events(settings.batch_max, within=batch_within):
            started = time.perf_counter()
            compat.hold(batch)
            outbox: list[_Out] = []
            items: list[Pending] = []
            for event in batch:
                compat.set_current_event(event)
                try:
                    items.append(_destination_item(event.value, destinations))
                except (ValueError, KeyError, TypeError, InvalidEvent) as exc:
                    # Only our own stage writes this topic; never crash on it either.
                    err = (
                        exc
                        if isinstance(exc, InvalidEvent)
                        else InvalidEvent(
                            "internal_format", f"unreadable repartition record: {exc}"
                        )
                    )
                    outbox.append(dead_letter(event, err))
            compat.set_current_event(None)
            verdicts = decider.decide(items, now=clock())
            for item, verdict in zip(items, verdicts, strict=True):
                outbox.append(
                    _Out(
                        decisions,
                        settings.topic_decisions,
                        item.event.account_id.encode(),
                        json.dumps(verdict, separators=(",", ":")).encode(),
                    )
                )
            await _send_all(outbox, metrics)
            compat.release(batch)
            now = clock()
            for item, verdict in zip(items, verdicts, strict=True):
                metrics.observe_verdict(
                    verdict["verdict"], verdict["score"], max(0.0, now - item.event.requested_at)
                )
            metrics.observe_batch(len(batch), time.perf_counter() - started)
            health.record_progress(len(batch))

    def _destination_item(value: bytes | None, table: Any) -> Pending:
        doc = json.loads(value or b"")
        withdrawal: Withdrawal = validate_withdrawal(doc["e"])
        acc = AccountFeatures.from_json(doc["a"])
        state, dst = destination_step(
            table.get(withdrawal.destination), withdrawal, new_for_account=acc.new_destination
        )
        table[withdrawal.destination] = state
        return Pending(withdrawal, acc, dst, feature_vector(acc, dst))

    sources = frozenset({settings.topic_withdrawals, settings.topic_by_destination})
    committed_seen: dict[Any, int] = {}

    @app.timer(interval=_GAUGE_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def refresh_gauges() -> None:
        _refresh_gauges(app, metrics, health, sources, accounts, committed_seen)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return _respond(web, "/metrics", registry, health)

    @app.page("/healthz")
    async def healthz_view(web: Any, request: Any) -> Any:
        return _respond(web, "/healthz", registry, health)

    @app.page("/readyz")
    async def readyz_view(web: Any, request: Any) -> Any:
        return _respond(web, "/readyz", registry, health)

    @app.on_partitions_assigned.connect
    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned")
        health.set_partitions_assigned(bool(assigned))

    return DetectorApp(
        app,
        settings,
        metrics,
        registry,
        health,
        accounts,
        destinations,
        accounts_agent,
        decide_agent,
        {
            "withdrawals": withdrawals,
            "by_destination": by_destination,
            "decisions": decisions,
            "dlq": dlq,
        },
    )


def _raw_topic(app: faust.App, name: str, partitions: int) -> Any:
    """A topic of raw bytes: we validate and encode ourselves (no `__faust` envelope)."""
    return app.topic(
        name,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )


@dataclass(frozen=True, slots=True)
class _Out:
    """One record to produce: the Faust topic, its name (metric label), key, value, headers."""

    topic: Any
    name: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


async def _send_all(outbox: Sequence[_Out], metrics: DetectorMetrics) -> None:
    """Produce every record in order and wait until Kafka acknowledged each (acks=all).

    Failed sends are retried with backoff until they succeed; meanwhile the batch's input
    offsets stay uncommitted, the partition's lag stops draining and /healthz fails after
    ``stuck_after_s``, so a producer that cannot recover gets the worker restarted and the
    batch redelivered. (A redelivered withdrawal may produce a second, identical verdict.)
    """
    pending = list(outbox)
    delay = _RETRY_FIRST_S
    loop = asyncio.get_running_loop()
    while pending:
        futures = []
        for out in pending:  # queue in order: per-key order is kept on the output topic
            try:
                futures.append(
                    await out.topic.send(key=out.key, value=out.value, headers=out.headers)
                )
            except Exception as exc:  # refused before it was queued
                failed_now = loop.create_future()
                failed_now.set_exception(exc)
                futures.append(failed_now)
        results = await asyncio.gather(*futures, return_exceptions=True)
        retry = []
        for out, result in zip(pending, results, strict=True):
            if isinstance(result, Exception):
                metrics.observe_send_error(out.name)
                retry.append((out, result))
        if not retry:
            return
        log.warning(
            "%d of %d sends failed (first: %s: %r); retrying in %.1f s",
            len(retry),
            len(pending),
            retry[0][0].name,
            retry[0][1],
            delay,
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, _RETRY_MAX_S)
        pending = [out for out, _ in retry]


def _respond(web: Any, path: str, registry: CollectorRegistry, health: Health) -> Any:
    status, body, content_type = http_response(path, registry, health)
    # aiohttp refuses a charset inside content_type=; a raw header carries it unchanged.
    return web.bytes(body, status=status, headers={"Content-Type": content_type})


def _refresh_gauges(
    app: faust.App,
    metrics: DetectorMetrics,
    health: Health,
    sources: frozenset[str],
    accounts: Any,
    committed_seen: dict[Any, int],
) -> None:
    """Lag of the source topics (changelogs are not consumed by the group), commit age, size.

    The commit clock is reset only when a committed offset actually advanced.
    """
    consumer: Any = app.consumer  # reads Faust's committed offsets (no public accessor)
    try:
        assignment = consumer.assignment()
    except Exception:  # consumer not started yet
        return
    total = 0
    partitions: dict[str, tuple[int, int]] = {}
    metrics.clear_lag()  # revoked partitions must not keep reporting
    advanced = False
    for tp in assignment:
        if tp.topic not in sources:
            continue
        # Kafka's definition: log end offset minus the committed ("next to read") offset.
        committed = compat.committed_offset(consumer, tp)
        if committed > committed_seen.get(tp, 0):
            advanced = True
        committed_seen[tp] = committed
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            continue
        if highwater is None:
            continue
        lag = max(0, int(highwater) - int(committed))
        metrics.set_lag(tp.topic, tp.partition, lag)
        partitions[f"{tp.topic}[{tp.partition}]"] = (int(committed), lag)
        total += lag
    if advanced:
        metrics.mark_commit()
    health.set_lag(total)
    health.observe_partitions(partitions)
    health.set_tables_recovered(compat.tables_recovered(app))
    metrics.set_accounts_in_state(len(accounts))
