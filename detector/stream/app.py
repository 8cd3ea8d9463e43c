"""The Faust app, built by a factory from :class:`Settings`: thin agents over the pipeline.

Topology (every topic created explicitly by :func:`topic_specs`, same partition count)::

    withdrawals (raw bytes, key=account_id)
      -> agent `accounts`: validate (invalid -> withdrawals-dlq with the reason), account
         features (table `accounts`), forward to the destination's partition
    <app_id>-withdrawals-by-destination (batched records, one per destination partition)
      -> agent `decide`: fan-in (table `destinations`), micro-batch scoring with the
         compiled forests, policy -> decisions (plain JSON, key=account_id); the verdict
         of each withdrawal_id is kept for the dedupe window (table `decided`, a
         micro-batch's verdicts of one partition per record: state.VerdictBook)

Delivery: at-least-once, and processing is idempotent by withdrawal_id, so a redelivery
(after a crash, a rebalance, or a producer's retry) changes no state and gets the
byte-identical verdict:

* stage 1 keeps, in the account's own state, the withdrawal_ids it has seen and the
  features each got: one changelog record carries both, so either the history moved and
  the repeat is recognised, or neither happened and recomputing gives the same features;
* stage 2 makes each batch's verdicts durable in ``decided`` *before* it writes the
  destination states and publishes the verdicts (two rounds of sends): once a destination
  has counted a withdrawal, its verdict is on record, and a repeat publishes that record;
* input offsets are committed only after a batch's sends are acknowledged (acks=all,
  idempotent producer): a crash redelivers, it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from detector.config import Settings
from detector.errors import InvalidEvent
from detector.events import Withdrawal, parse_withdrawal
from detector.labels import Label, parse_label
from detector.model import Model, ModelStore
from detector.pipeline import Decider, Pending, Stages, verdict_text
from detector.stream import compat
from detector.stream.control import ModelSwitch, follow_control
from detector.stream.dlq import dead_letter_record, internal_error
from detector.stream.health import Health, http_response
from detector.stream.logs import RateLimitedLog
from detector.stream.metrics import DetectorMetrics
from detector.stream.state import PartitionView, TableStore, VerdictBook
from detector.stream.topics import TopicSpec
from detector.stream.wire import batch_records, decode_forwards, encode_item, encode_label

__all__ = [
    "ACCOUNTS_TABLE",
    "DECIDED_TABLE",
    "DESTINATIONS_TABLE",
    "DetectorApp",
    "Record",
    "Send",
    "create_app",
    "topic_specs",
]

# The worker consumes the labels topic: reports change later verdicts within seconds.
FEEDBACK_LABELS = True

log = logging.getLogger(__name__)
# Per-record failures are logged at most a few times a minute (see RateLimitedLog).
errors = RateLimitedLog(log)

ACCOUNTS_TABLE = "accounts"
DESTINATIONS_TABLE = "destinations"
DECIDED_TABLE = "decided"
# Changelogs are compacted, never time-retained (traps: faust#597).
_COMPACTED = {"cleanup.policy": "compact"}
# Changelogs: roll a segment every 10 minutes and clean when a tenth is superseded, so a
# worker that recovers from the changelog reads about one record per live key, not one per
# withdrawal since the topic was made (Kafka's defaults: 7 days, half).
_CHANGELOG = {
    **_COMPACTED,
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
}
# How often lag and state-size gauges are refreshed (seconds).
_GAUGE_INTERVAL_S = 2.0
# Backoff of failed sends: first wait and cap (seconds).
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0
# Expired keys deleted per partition and table per micro-batch: spreads a backlog of
# expiries over many batches instead of stalling one.
_SWEEP_PER_BATCH = 64


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes, with explicit partition counts."""
    n, rf = settings.partitions, settings.replication_factor
    return [
        TopicSpec(settings.topic_withdrawals, n, rf),
        TopicSpec(settings.topic_labels, n, rf),
        TopicSpec(settings.topic_decisions, n, rf),
        TopicSpec(settings.topic_dlq, n, rf),
        TopicSpec(settings.topic_decisions_shadow, n, rf),
        TopicSpec(settings.topic_by_destination, n, rf),
        TopicSpec(settings.topic_model_control, 1, rf, _COMPACTED),
        *(
            TopicSpec(settings.changelog_topic(table), n, rf, _CHANGELOG)
            for table in (ACCOUNTS_TABLE, DESTINATIONS_TABLE, DECIDED_TABLE)
        ),
    ]


@dataclass
class DetectorApp:
    """The Faust app with handles the tests and the CLI need."""

    app: faust.App
    settings: Settings
    metrics: DetectorMetrics
    registry: CollectorRegistry
    health: Health
    accounts: TableStore
    destinations: TableStore
    decided: TableStore
    verdicts: VerdictBook  # the decided table by withdrawal_id (packed records)
    accounts_agent: Any
    decide_agent: Any
    topics: dict[str, Any]


def create_app(
    settings: Settings,
    *,
    model: Model,
    registry: CollectorRegistry | None = None,
    store: str | None = None,
    broker: str | None = None,
    clock: Callable[[], float] = time.time,
    send: Send | None = None,
) -> DetectorApp:
    """Build a fresh Faust app (no module-level state: tests build as many as they like)."""
    registry = CollectorRegistry() if registry is None else registry
    metrics = DetectorMetrics(
        registry,
        send_topics=(settings.topic_decisions, settings.topic_dlq, settings.topic_by_destination),
    )
    metrics.set_model(model.version, "active")
    health = Health(stuck_after_s=settings.stuck_after_s)
    health.set_model_loaded(True)
    app = faust.App(
        settings.app_id,
        broker=broker or settings.broker_url,
        store=store or compat.store_url(settings.store),
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
        table_standby_replicas=settings.standby_replicas,
        loghandlers=[],
        broker_credentials=_credentials(settings),
        # Failover (README): a killed worker's partitions move after the session timeout,
        # not Faust's 60 s; heartbeats come from aiokafka's thread, not the agents' loop.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        consumer_group_instance_id=settings.group_instance_id or None,
    )
    if (broker or settings.broker_url).startswith("kafka://"):
        app.transport = compat.DetectorTransport(app.conf.broker_consumer, app)

    n = settings.partitions
    withdrawals = _raw_topic(app, settings.topic_withdrawals, n)
    # Stage 1 reads the labels too (co-partitioned, keyed by account): an account's
    # reports apply in its own state, in order with its withdrawals.
    withdrawals_and_labels = _raw_topic(app, (settings.topic_withdrawals, settings.topic_labels), n)
    by_destination = _raw_topic(app, settings.topic_by_destination, n)
    decisions = _raw_topic(app, settings.topic_decisions, n)
    dlq = _raw_topic(app, settings.topic_dlq, n)
    ttl, window = settings.state_ttl_s, settings.dedupe_window_s

    def table(name: str, expiry: Callable[[Any], float | None]) -> TableStore:
        # bytes keys and values: Faust's changelog (and its recovery) use raw codecs.
        faust_table = app.Table(name, default=None, partitions=n, key_type=bytes, value_type=bytes)
        return TableStore(
            name,
            settings.changelog_topic(name),
            compat.StoreAccess(faust_table),
            expiry=expiry,
        )

    accounts = table(ACCOUNTS_TABLE, lambda v: float(v["last"]) + ttl if v.get("last") else None)
    destinations = table(
        DESTINATIONS_TABLE, lambda v: float(v["L"][-1]) + ttl if v.get("L") else None
    )
    decided = table(DECIDED_TABLE, lambda v: float(v["t"]) + window)
    account_view, destination_view = PartitionView(accounts), PartitionView(destinations)
    decided_view = VerdictBook(decided, clock)
    # The same composition replay uses, over the worker's tables.
    feedback = settings.feedback()
    structuring = settings.structuring()
    stages = Stages(
        account_view,
        destination_view,
        decided_view,
        model.params,
        structuring=structuring,
        dedupe_window_s=window,
        feedback=feedback,
    )
    decider = Decider(
        model, hold_seconds=settings.hold_seconds, feedback=feedback, structuring=structuring
    )
    shadow: list[Decider] = []  # the challenger, when the control topic names one
    batch_within = settings.batch_within_ms / 1000.0
    # Per input partition: the newest event time seen (idle state expires against it).
    watermarks: dict[tuple[str, int], float] = {}

    async def faust_send(record: Record) -> Awaitable[Any]:
        # The app's producer directly (acks=all, idempotent): Faust's Topic.send costs ~20 us
        # of bookkeeping per record that we do not use (measured with py-spy).
        delivery: Awaitable[Any] = await app.producer.send(
            record.topic, record.key, record.value, record.partition, None, record.headers
        )
        return delivery

    send = faust_send if send is None else send

    def dead_letter(
        event: Any, exc: InvalidEvent, key: bytes | None = None, value: bytes | None = None
    ) -> Record:
        msg = event.message
        out_key, out_value, headers = dead_letter_record(
            event.key if value is None else key,
            event.value if value is None else value,
            exc,
            topic=str(msg.topic),
            partition=int(msg.partition),
            offset=int(msg.offset),
            at=clock(),
        )
        metrics.observe_dlq(exc.code)
        return Record(settings.topic_dlq, out_key, out_value, headers=headers)

    def account_item(event: Any) -> tuple[Withdrawal, bytes] | Record | None:
        """Stage 1 for one record: the withdrawal and its forward item, a dead letter, or
        None for a redelivery of a withdrawal applied and forwarded long ago."""
        withdrawal = None
        try:
            withdrawal = parse_withdrawal(
                event.value or b"",
                key=event.key,
                require_key=True,
                now=clock(),
                max_age_s=settings.max_event_age_s,
                max_ahead_s=settings.max_event_ahead_s,
            )
            acc = stages.account_at(withdrawal, int(event.message.offset))
            if acc is None:
                metrics.observe_duplicate()
                return None
            return withdrawal, encode_item(withdrawal, acc)
        except InvalidEvent as exc:
            return dead_letter(event, exc)
        except Exception as exc:  # a bug must cost one record, not the partition
            if withdrawal is not None:
                accounts.discard(withdrawal.account_id)
            errors.warning("account stage failed on a record: %r", exc)
            return dead_letter(event, internal_error("the account stage", exc))

    def label_item(event: Any, partition: int) -> Label | Record | None:
        """Stage 1 for a label: its account part now; the label (to forward to its
        destination's partition), a dead letter, or a copy re-keyed to its account."""
        try:
            label = parse_label(
                event.value or b"",
                key=event.key,
                now=clock(),
                max_ahead_s=settings.max_event_ahead_s,
            )
        except InvalidEvent as exc:
            return dead_letter(event, exc)
        if label.account_id is not None:
            home = _partition_of(label.account_id, n)
            if home != partition:  # keyed by something else: apply it on the account's own
                return Record(settings.topic_labels, label.account_id.encode(), event.value)
            try:
                stages.account_label(label)
            except Exception as exc:
                accounts.discard(label.account_id)
                errors.warning("applying a label failed: %r", exc)
                return dead_letter(event, internal_error("the account stage", exc))
            metrics.observe_feedback_effect(clock() - label.reported_at)
        return label if label.destination is not None else None

    async def account_batch(batch: list[Any]) -> None:
        compat.hold(batch)
        stages.begin_batch()
        outbox: list[Record] = []
        forwards: dict[int, list[bytes]] = {}
        for event in batch:
            started = time.perf_counter()
            partition = int(event.message.partition)
            account_view.partition = partition
            if event.message.topic == settings.topic_labels:
                label = label_item(event, partition)
                if isinstance(label, Record):
                    outbox.append(label)
                elif label is not None and label.destination is not None:
                    dest = _partition_of(label.destination, n)
                    forwards.setdefault(dest, []).append(encode_label(label))
                continue
            metrics.observe_consumed()
            got = account_item(event)
            if isinstance(got, Record):
                outbox.append(got)
            elif got is not None:
                withdrawal, item = got
                forwards.setdefault(_partition_of(withdrawal.destination, n), []).append(item)
                _advance(watermarks, (settings.topic_withdrawals, partition), withdrawal)
            metrics.observe_event(time.perf_counter() - started)
        _sweep(accounts, batch, settings.topic_withdrawals, watermarks)
        outbox += _changelog_records(accounts)
        for partition, items in sorted(forwards.items()):
            outbox += [
                Record(settings.topic_by_destination, None, value, partition=partition)
                for value in batch_records(items)
            ]
        results = await _send_all(outbox, send, metrics)
        _written(accounts, outbox, results)
        compat.release(batch)
        health.record_progress(len(batch))

    @app.agent(withdrawals_and_labels, name="accounts")
    async def accounts_agent(stream: Any) -> None:
        async with _watched("accounts", health):
            async for batch in compat.take_batches(stream, settings.batch_max, batch_within):
                await account_batch(batch)

    def destination_items(event: Any) -> tuple[list[Pending], list[Record]]:
        """Stage 2 for one record (many withdrawals): items to score, and dead letters."""
        try:
            forwarded = decode_forwards(event.value)
        except InvalidEvent as exc:  # only our stage 1 writes here; never crash
            return [], [dead_letter(event, exc)]
        items: list[Pending] = []
        dead: list[Record] = []
        for entry in forwarded:
            if isinstance(entry, Label):
                stages.destination_label(entry)
                metrics.observe_feedback_effect(clock() - entry.reported_at)
                continue
            withdrawal, acc = entry
            try:
                items.append(stages.destination(withdrawal, acc))
            except Exception as exc:
                destinations.discard(withdrawal.destination)
                errors.warning("destination stage failed on a record: %r", exc)
                value = verdict_text(withdrawal.to_json()).encode()
                key = withdrawal.account_id.encode()
                dead.append(
                    dead_letter(event, internal_error("the destination stage", exc), key, value)
                )
        return items, dead

    def decide_items(
        items: list[Pending], where: list[Any]
    ) -> tuple[list[tuple[Pending, dict[str, Any], int]], list[Record]]:
        """Score the batch; if that fails, item by item, so only a bad item is dead-lettered.

        Returns ``(item, verdict, partition)`` per decided item, and the dead letters."""
        try:
            verdicts = decider.decide(items, now=clock())
            return [
                (it, v, int(ev.message.partition))
                for it, v, ev in zip(items, verdicts, where, strict=True)
            ], []
        except Exception as exc:
            errors.warning("scoring a batch of %d failed (%r); item by item", len(items), exc)
        decided_items, dead = [], []
        for item, event in zip(items, where, strict=True):
            try:
                (verdict,) = decider.decide([item], now=clock())
                verdict_text(verdict)
            except Exception as exc:
                value = verdict_text(item.event.to_json()).encode()
                key = item.event.account_id.encode()
                dead.append(dead_letter(event, internal_error("scoring", exc), key, value))
                continue
            decided_items.append((item, verdict, int(event.message.partition)))
        return decided_items, dead

    async def decide_batch(batch: list[Any]) -> None:
        started = time.perf_counter()
        compat.hold(batch)
        outbox: list[Record] = []
        items: list[Pending] = []
        where: list[Any] = []  # the input record each item came in
        for event in batch:
            partition = int(event.message.partition)
            destination_view.partition = decided_view.partition = partition
            got, dead = destination_items(event)
            items += got
            where += [event] * len(got)
            outbox += dead
            for item in got:
                _advance(watermarks, (settings.topic_by_destination, partition), item.event)
        decided_items, dead = decide_items(items, where)
        outbox += dead
        verdicts: list[Record] = []
        for item, verdict, partition in decided_items:
            text = item.decided if item.decided is not None else verdict_text(verdict)
            if item.decided is None:
                decided_view.partition = partition
                stages.record(item, text)
            else:
                metrics.observe_duplicate()
            verdicts.append(
                Record(settings.topic_decisions, item.event.account_id.encode(), text.encode())
            )
        if shadow:
            outbox += shadow_records(shadow[0], decided_items)
        _sweep(destinations, batch, settings.topic_by_destination, watermarks)
        decided_view.expire(
            {int(event.message.partition) for event in batch}, clock(), _SWEEP_PER_BATCH
        )
        # Round 1: the verdicts on record. Round 2: what counted them, and the verdicts.
        round_1 = _changelog_records(decided_view)
        _written(decided_view, round_1, await _send_all(round_1, send, metrics))
        round_2 = _changelog_records(destinations) + outbox + verdicts
        _written(destinations, round_2, await _send_all(round_2, send, metrics))
        compat.release(batch)
        now = clock()
        for item, verdict, _ in decided_items:
            metrics.observe_verdict(
                verdict["verdict"], verdict["score"], max(0.0, now - item.event.requested_at)
            )
        metrics.observe_batch(len(items), time.perf_counter() - started)
        health.record_progress(len(batch))

    def shadow_records(
        challenger: Decider, decided_items: list[tuple[Pending, dict[str, Any], int]]
    ) -> list[Record]:
        """The shadow model's verdicts on the same (first-time) withdrawals; whatever
        happens here, the active verdicts go out."""
        fresh = [(item, verdict) for item, verdict, _ in decided_items if item.decided is None]
        if not fresh:
            return []
        try:
            verdicts = challenger.decide([item for item, _ in fresh], now=clock())
        except Exception as exc:
            errors.warning("the shadow model failed on a batch: %r", exc)
            return []
        out = []
        for (item, active), theirs in zip(fresh, verdicts, strict=True):
            metrics.observe_shadow(theirs["verdict"], theirs["verdict"] == active["verdict"])
            out.append(
                Record(
                    settings.topic_decisions_shadow,
                    item.event.account_id.encode(),
                    verdict_text(theirs).encode(),
                )
            )
        return out

    def apply_model(role: str, new: Model | None) -> None:
        if role == "active" and new is not None:
            decider.switch(new)
            # Features measure against the active model's learned scales; the state built
            # under the previous ones carries over (README: changing models).
            stages.params = new.params
        elif role == "shadow":
            # The challenger scores the rows computed with the active model's scales.
            shadow[:] = (
                []
                if new is None
                else [
                    Decider(
                        new,
                        hold_seconds=settings.hold_seconds,
                        feedback=feedback,
                        structuring=structuring,
                    )
                ]
            )
        metrics.set_model(None if new is None else new.version, role)

    switch = ModelSwitch(
        settings,
        ModelStore(settings.model_store),
        apply_model,
        on_failure=lambda role, _version: metrics.observe_model_switch_failure(role),
    )
    switch.start_with(model)

    @app.task  # type: ignore[untyped-decorator]
    async def follow_models() -> None:
        """Every worker follows the model control topic (not through the group)."""
        if not (broker or settings.broker_url).startswith("kafka://"):
            return
        while True:
            try:
                await follow_control(settings, switch, stopped=lambda: False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors.warning(
                    "following %s failed (%r); retrying", settings.topic_model_control, exc
                )
                await asyncio.sleep(_RETRY_MAX_S)

    @app.agent(by_destination, name="decide")
    async def decide_agent(stream: Any) -> None:
        async with _watched("decide", health):
            async for batch in compat.take_batches(stream, settings.batch_max, batch_within):
                await decide_batch(batch)

    def _changelog_records(store: TableStore | VerdictBook) -> list[Record]:
        return [
            Record(store.changelog_topic, key, value, partition=partition)
            for partition, key, value in store.changelog()
        ]

    sources = frozenset(
        {settings.topic_withdrawals, settings.topic_labels, settings.topic_by_destination}
    )
    committed_seen: dict[Any, int] = {}

    @app.timer(interval=_GAUGE_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def refresh_gauges() -> None:
        _refresh_gauges(app, metrics, health, sources, accounts, committed_seen)
        metrics.flush_gc()

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return _respond(web, "/metrics", registry, health)

    @app.page("/healthz")
    async def healthz_view(web: Any, request: Any) -> Any:
        return _respond(web, "/healthz", registry, health)

    @app.page("/readyz")
    async def readyz_view(web: Any, request: Any) -> Any:
        return _respond(web, "/readyz", registry, health)

    def reset_after_rebalance() -> None:
        """Partitions moved: what another worker wrote meanwhile is in the stores now
        (Faust's recovery), not in our caches."""
        for store_ in (accounts, destinations, decided):
            store_.reset_cache()
        decided_view.reset()
        watermarks.clear()

    @app.on_partitions_assigned.connect
    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned")
        health.set_partitions_assigned(bool(assigned))
        reset_after_rebalance()

    @app.on_partitions_revoked.connect
    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        reset_after_rebalance()

    return DetectorApp(
        app,
        settings,
        metrics,
        registry,
        health,
        accounts,
        destinations,
        decided,
        decided_view,
        accounts_agent,
        decide_agent,
        {
            "withdrawals": withdrawals,
            "by_destination": by_destination,
            "decisions": decisions,
            "dlq": dlq,
        },
    )


_TABLES = (ACCOUNTS_TABLE, DESTINATIONS_TABLE, DECIDED_TABLE)


def _credentials(settings: Settings) -> Any:
    """Faust's broker credentials for the security settings (None: PLAINTEXT)."""
    context = settings.kafka_ssl_context()
    if settings.kafka_uses_sasl:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def _partition_of(destination: str, partitions: int) -> int:
    """Kafka's default partition of a key (murmur2, as Java clients and Faust use)."""
    return compat.default_partition(destination.encode(), partitions)


def _advance(watermarks: dict[tuple[str, int], float], tp: tuple[str, int], event: Any) -> None:
    t = float(event.requested_at)
    if t > watermarks.get(tp, float("-inf")):
        watermarks[tp] = t


def _sweep(
    store: TableStore,
    batch: Sequence[Any],
    topic: str,
    watermarks: dict[tuple[str, int], float],
) -> None:
    """Delete expired keys of the batch's partitions (at most a few per batch), against the
    partition's event-time watermark."""
    for partition in {int(event.message.partition) for event in batch}:
        mark = watermarks.get((topic, partition))
        if mark is None:
            continue
        for key in list(store.expired(partition, mark, _SWEEP_PER_BATCH)):
            store.delete(key, partition)


def _raw_topic(app: faust.App, name: str | tuple[str, ...], partitions: int) -> Any:
    """A topic (or several) of raw bytes: we validate and encode ourselves (no `__faust`
    envelope)."""
    names = (name,) if isinstance(name, str) else name
    return app.topic(
        *names,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )


@contextlib.asynccontextmanager
async def _watched(name: str, health: Health) -> AsyncIterator[None]:
    """Run an agent's loop; if it ever stops on an exception, /healthz fails from then on
    (Faust would log it and leave the worker up, deciding nothing for those partitions)."""
    try:
        yield
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        health.agent_died(name, f"{type(exc).__name__}: {exc}")
        log.exception("agent %s stopped", name)
        raise


@dataclass(frozen=True, slots=True)
class Record:
    """One record to produce: topic name, key, value (``None``: a tombstone), partition
    (``None``: the key's default partition), headers."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None


# Queue one record for sending; the awaitable it returns resolves when Kafka acknowledged it
# (or raises). The worker's is Faust's topic send; tests inject their own.
Send = Callable[[Record], Awaitable[Awaitable[Any]]]


async def _send_all(outbox: Sequence[Record], send: Send, metrics: DetectorMetrics) -> list[Any]:
    """Produce every record in order and wait until Kafka acknowledged each (acks=all);
    returns what each send resolved to (record metadata), in order.

    Failed sends are retried with backoff until they succeed; meanwhile the batch's input
    offsets stay uncommitted, the partition's lag stops draining and /healthz fails after
    ``stuck_after_s``, so a producer that cannot recover gets the worker restarted and the
    batch redelivered (which the dedupe by withdrawal_id makes harmless).
    """
    results: list[Any] = [None] * len(outbox)
    pending = list(range(len(outbox)))
    delay = _RETRY_FIRST_S
    loop = asyncio.get_running_loop()
    while pending:
        futures = []
        for i in pending:  # queue in order: per-key order is kept on the output topic
            try:
                futures.append(await send(outbox[i]))
            except Exception as exc:  # refused before it was queued
                failed_now = loop.create_future()
                failed_now.set_exception(exc)
                futures.append(failed_now)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        retry = []
        for i, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, Exception):
                metrics.observe_send_error(outbox[i].topic)
                retry.append((i, outcome))
            else:
                results[i] = outcome
        if not retry:
            return results
        log.warning(
            "%d of %d sends failed (first: %s: %r); retrying in %.1f s",
            len(retry),
            len(pending),
            outbox[retry[0][0]].topic,
            retry[0][1],
            delay,
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, _RETRY_MAX_S)
        pending = [i for i, _ in retry]
    return results


def _written(
    store: TableStore | VerdictBook, outbox: Sequence[Record], results: Sequence[Any]
) -> None:
    """Tell ``store`` its changelog records in ``outbox`` are durable, with the last offset
    written per partition (from the send results, when they carry one)."""
    offsets: dict[int, int] = {}
    for record, result in zip(outbox, results, strict=True):
        offset = getattr(result, "offset", None)
        if record.topic == store.changelog_topic and record.partition is not None and offset:
            offsets[record.partition] = max(offsets.get(record.partition, -1), int(offset))
    store.durable(offsets)


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
