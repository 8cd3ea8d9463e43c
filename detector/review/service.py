"""``detector review``: the queue's Kafka side and the process that serves the page.

State comes from Kafka only. :class:`QueueFeed` assigns itself every partition of three
topics (no consumer group: each instance reads everything, so any number of instances show
the same queue), starts each partition at the first record of the look-back
(``DETECTOR_REVIEW_LOOKBACK_S``, by record timestamp) and applies records to the
:class:`~detector.review.queue.ReviewQueue` as they come:

    decisions          delay verdicts join the queue (the others are remembered for context)
    withdrawals        asset, amount, destination; the account's history; fan-in
    review-decisions   resolved withdrawals leave the queue (ours and other instances')

The service is ready (``/readyz`` 200, decisions accepted) once every partition has reached
the end offset it had at start-up: before that, a withdrawal already decided could still
look pending. :class:`KafkaPublisher` writes each decision to ``review-decisions`` (key =
account_id) and then its label to ``labels`` (key = account_id), with an idempotent
``acks=all`` producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from detector.config import Settings
from detector.errors import ConfigError, InvalidEvent, KafkaSetupError
from detector.events import parse_withdrawal
from detector.labels import Label, label_key
from detector.review.auth import Users
from detector.review.queue import ReviewQueue
from detector.review.records import ReviewDecision, parse_review_decision, parse_verdict
from detector.review.web import Readiness, ReviewState, create_web_app
from detector.stream.topics import TopicSpec, ensure_topics, partition_counts

__all__ = [
    "KafkaPublisher",
    "QueueFeed",
    "load_users",
    "review_topic_specs",
    "run_review",
    "serve",
]

log = logging.getLogger(__name__)

_CLIENT_ID = "detector-review"
# Records fetched per poll and the poll's longest wait (ms): small enough that the page stays
# responsive while a day of withdrawals is read at start-up.
_POLL_RECORDS = 2000
_POLL_TIMEOUT_MS = 500
# How often held withdrawals older than the look-back are dropped (seconds).
_EXPIRE_EVERY_S = 10.0
# Longest wait for Kafka to acknowledge a decision before the analyst is told (seconds).
_SEND_TIMEOUT_S = 20.0
# A label that failed after its decision was written is retried this often, this many times.
_LABEL_RETRY_S = 2.0
_LABEL_RETRIES = 30
# The feed restarts after an unexpected error, after this pause (seconds).
_FEED_RESTART_S = 5.0
# Skipped (unreadable) records are logged at most once per window per topic (seconds).
_SKIP_LOG_WINDOW_S = 60.0


def review_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics the review queue writes (the worker's own topics come from
    ``detector.stream.app.topic_specs``)."""
    n, rf = settings.partitions, settings.replication_factor
    return [
        TopicSpec(settings.topic_labels, n, rf),
        TopicSpec(settings.topic_review_decisions, n, rf),
    ]


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class QueueFeed:
    """Reads ``decisions``, ``withdrawals`` and ``review-decisions`` into the queue."""

    def __init__(
        self,
        settings: Settings,
        queue: ReviewQueue,
        readiness: Readiness,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.readiness = readiness
        self.clock = clock
        self.applied: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self._skip_logged: dict[str, float] = {}

    @property
    def topics(self) -> tuple[str, str, str]:
        s = self.settings
        return (s.topic_decisions, s.topic_withdrawals, s.topic_review_decisions)

    def apply(self, topic: str, value: bytes | None) -> None:
        """Apply one record of one of the three topics (unreadable records are skipped: the
        worker dead-letters bad withdrawals; verdicts and review decisions are ours)."""
        s = self.settings
        try:
            if topic == s.topic_decisions:
                self.queue.apply_verdict(parse_verdict(value or b""))
            elif topic == s.topic_withdrawals:
                self.queue.apply_withdrawal(parse_withdrawal(value or b""))
            elif topic == s.topic_review_decisions:
                self.queue.apply_review(parse_review_decision(value or b""))
            else:
                return
        except InvalidEvent as exc:
            self._skip(topic, exc)
            return
        except Exception as exc:  # a bug must cost one record, not the queue (re-read forever)
            self._skip(topic, InvalidEvent("internal_error", f"applying it failed: {exc!r}"))
            return
        self.applied[topic] += 1

    def _skip(self, topic: str, exc: InvalidEvent) -> None:
        self.skipped[topic] += 1
        now = time.monotonic()
        if now - self._skip_logged.get(topic, -_SKIP_LOG_WINDOW_S) >= _SKIP_LOG_WINDOW_S:
            self._skip_logged[topic] = now
            log.warning(
                "skipping unreadable records of %s (%d so far): %s: %s",
                topic,
                self.skipped[topic],
                exc.code,
                exc.reason,
            )

    async def run(self) -> None:
        """Read forever; restart after unexpected errors (state is idempotent, so re-reading
        the look-back is harmless)."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except KafkaSetupError as exc:
                if not exc.retriable:  # missing topics: an operator must act
                    raise
                self.readiness.ready = False
                self.readiness.detail = f"waiting for Kafka: {exc}"
                log.warning("review feed: %s; retrying in %.0f s", exc, _FEED_RESTART_S)
                await asyncio.sleep(_FEED_RESTART_S)
            except Exception as exc:
                self.readiness.ready = False
                self.readiness.detail = f"feed restarting after {type(exc).__name__}: {exc}"
                log.exception("review feed failed; restarting in %.0f s", _FEED_RESTART_S)
                await asyncio.sleep(_FEED_RESTART_S)

    async def _run_once(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        loop = asyncio.get_running_loop()
        security = self.settings.kafka_python_config()
        counts = await loop.run_in_executor(
            None,
            functools.partial(
                partition_counts,
                self.settings.bootstrap_servers,
                list(self.topics),
                security=security,
            ),
        )
        missing = [t for t in self.topics if t not in counts]
        if missing:
            raise KafkaSetupError(
                f"topics {missing} do not exist: run `detector topics` (or start the worker) first"
            )
        partitions = [TopicPartition(t, p) for t in self.topics for p in range(counts[t])]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_list,
            client_id=_CLIENT_ID,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **security,  # TLS / SASL: the same settings as every client (DETECTOR_KAFKA_*)
        )
        await consumer.start()
        try:
            consumer.assign(partitions)
            since_ms = int((self.clock() - self.settings.review_lookback_s) * 1000)
            found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
            ends = await consumer.end_offsets(partitions)
            behind: dict[Any, int] = {}
            total = 0
            for tp in partitions:
                start = found.get(tp)
                offset = ends[tp] if start is None else start.offset
                consumer.seek(tp, offset)
                if offset < ends[tp]:
                    behind[tp] = ends[tp]
                    total += ends[tp] - offset
            self.readiness.detail = f"reading {total} records of the look-back"
            log.info("review feed: %d partitions, %d records to catch up", len(partitions), total)
            self._mark_ready_if(not behind)
            last_expiry = time.monotonic()
            while True:
                batches = await consumer.getmany(
                    timeout_ms=_POLL_TIMEOUT_MS, max_records=_POLL_RECORDS
                )
                for tp, records in batches.items():
                    for record in records:
                        self.apply(tp.topic, record.value)
                if behind:
                    for tp in list(behind):
                        if await consumer.position(tp) >= behind[tp]:
                            del behind[tp]
                    self._mark_ready_if(not behind)
                if time.monotonic() - last_expiry >= _EXPIRE_EVERY_S:
                    last_expiry = time.monotonic()
                    self.queue.expire(self.clock())
        finally:
            await consumer.stop()

    def _mark_ready_if(self, caught_up: bool) -> None:
        if caught_up and not self.readiness.ready:
            self.queue.expire(self.clock())
            self.readiness.ready = True
            self.readiness.detail = (
                f"caught up: {len(self.queue)} held withdrawal(s), "
                f"{sum(self.applied.values())} records applied"
            )
            log.info("review feed %s", self.readiness.detail)


class KafkaPublisher:
    """Writes a decision, then its label, with an idempotent ``acks=all`` producer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._retries: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_list,
            client_id=_CLIENT_ID,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(_SEND_TIMEOUT_S * 1000),
            **self.settings.kafka_python_config(),
        )
        await self._producer.start()

    async def stop(self) -> None:
        for task in list(self._retries):
            task.cancel()
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, decision: ReviewDecision, label: Label) -> None:
        """The decision must be acknowledged (else this raises: not recorded). A label that
        fails afterwards is retried in the background and logged, never lost silently."""
        await asyncio.wait_for(
            self._producer.send_and_wait(
                self.settings.topic_review_decisions,
                value=_json(decision.to_json()),
                key=decision.key,
            ),
            _SEND_TIMEOUT_S,
        )
        try:
            await self._send_label(label)
        except Exception as exc:
            log.error("label %s not written yet (%r); retrying", label.label_id, exc)
            task = asyncio.create_task(self._retry_label(label))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _send_label(self, label: Label) -> None:
        await asyncio.wait_for(
            self._producer.send_and_wait(
                self.settings.topic_labels, value=_json(label.to_json()), key=label_key(label)
            ),
            _SEND_TIMEOUT_S,
        )

    async def _retry_label(self, label: Label) -> None:
        last: Exception | None = None
        for _ in range(_LABEL_RETRIES):
            await asyncio.sleep(_LABEL_RETRY_S)
            try:
                await self._send_label(label)
            except Exception as exc:
                last = exc
                continue
            log.info("label %s written after a retry", label.label_id)
            return
        log.error(
            "label %s NOT written after %d retries (%r); write it by hand: %s",
            label.label_id,
            _LABEL_RETRIES,
            last,
            json.dumps(label.to_json()),
        )


def load_users(settings: Settings) -> Users:
    """The analysts of ``DETECTOR_REVIEW_USERS_FILE``; ConfigError when unset, unreadable,
    malformed or empty (the service never starts without anyone able to log in)."""
    if not settings.review_users_file:
        raise ConfigError(
            "DETECTOR_REVIEW_USERS_FILE is not set: the review queue needs analysts' "
            "credentials (detector review --hash-user NAME prints a line for the file)"
        )
    users = Users(Path(settings.review_users_file))
    if not users.names:
        raise ConfigError(f"{settings.review_users_file} lists no analyst")
    return users


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Run the review queue until ``stop`` is set (or the feed fails for good)."""
    users = load_users(settings)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(
        None,
        functools.partial(
            ensure_topics,
            settings.bootstrap_servers,
            review_topic_specs(settings),
            security=settings.kafka_python_config(),
        ),
    )
    stop = asyncio.Event() if stop is None else stop
    queue = ReviewQueue(lookback_s=settings.review_lookback_s)
    publisher = KafkaPublisher(settings)
    await publisher.start()
    state = ReviewState(settings, queue, users, publisher.publish, clock=clock)
    feed = QueueFeed(settings, queue, state.readiness, clock=clock)
    runner = web.AppRunner(create_web_app(state), access_log=None)
    tasks: Sequence[asyncio.Task[Any]] = ()
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.review_host, settings.review_port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.review_host}:{settings.review_port} "
                f"(DETECTOR_REVIEW_HOST/DETECTOR_REVIEW_PORT): {exc}"
            ) from exc
        log.info(
            "review queue on http://%s:%d/ for %d analyst(s)",
            settings.review_host,
            settings.review_port,
            len(users.names),
        )
        tasks = (asyncio.create_task(feed.run()), asyncio.create_task(stop.wait()))
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # the feed's KafkaSetupError surfaces here
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await runner.cleanup()
        await publisher.stop()


def run_review(settings: Settings) -> None:
    """``detector review``: serve until SIGINT/SIGTERM."""
    load_users(settings)  # fail fast, before logging is set up or Kafka is touched
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("detector.review.audit").setLevel(logging.INFO)  # always audited

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop=stop)

    asyncio.run(main())
