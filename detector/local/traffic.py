"""Paced traffic: stream simulated withdrawals to Kafka at a given rate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from detector.config import parse_bootstrap
from detector.errors import ConfigError, KafkaSetupError
from detector.events import format_rfc3339, parse_rfc3339
from detector.offline.simulate import encode_event
from detector.stream.compat import import_kafka

PROGRESS_EVERY = 1_000
# Seconds the final flush may take before the stream is declared failed (s).
_FLUSH_TIMEOUT_S = 60.0


class _Producer(Protocol):
    """The part of ``kafka.KafkaProducer`` the streamer uses (a fake in tests)."""

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any: ...

    def flush(self, timeout: float | None = None) -> Any: ...


def _shift_ms(events: Sequence[Mapping[str, Any]], now: float) -> int:
    """Constant shift (whole milliseconds) that moves the earliest event to ``now``."""
    if not events:
        return 0
    earliest = min(parse_rfc3339(str(e["requested_at"])) for e in events)
    return round((now - earliest) * 1000.0)


def _kafka() -> Any:
    """kafka-python, imported quietly (see :func:`detector.stream.compat.import_kafka`)."""
    import_kafka()
    import kafka

    return kafka


def _producer_config(bootstrap_servers: str) -> dict[str, Any]:
    """KafkaProducer settings: all replicas acknowledge; idempotent when supported.

    The default partitioner is kept: murmur2 of the key, like the Java client (Faust).
    """
    config: dict[str, Any] = {
        "bootstrap_servers": [f"{h}:{p}" for h, p in parse_bootstrap(bootstrap_servers)],
        "acks": "all",
        "linger_ms": 5,
    }
    if "enable_idempotence" in getattr(_kafka().KafkaProducer, "DEFAULT_CONFIG", {}):
        config["enable_idempotence"] = True
    return config


def _make_producer(bootstrap_servers: str) -> Any:
    kafka = _kafka()
    try:
        return kafka.KafkaProducer(**_producer_config(bootstrap_servers))
    except kafka.errors.KafkaError as exc:
        raise KafkaSetupError(
            f"cannot connect a producer to {bootstrap_servers}: {exc}", retriable=True
        ) from exc


def stream_to_kafka(
    events: Sequence[Mapping[str, Any]],
    *,
    bootstrap_servers: str,
    topic: str,
    rate: float | None,
    duration: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    shift_to_now: bool = True,
    producer: _Producer | None = None,
) -> int:
    """Send ``events`` to ``topic`` keyed by account_id; return how many were delivered.

    ``rate`` paces to that many events per second (``None``: as fast as possible);
    ``duration`` stops after that many seconds. With ``shift_to_now`` every
    ``requested_at`` moves by one constant so the earliest event is at now (gaps kept).
    ``on_progress`` gets the running count every :data:`PROGRESS_EVERY` events and once at
    the end. ``producer`` replaces the ``KafkaProducer`` (tests); it is flushed, not closed.
    Delivery failures raise :class:`~detector.errors.KafkaSetupError`.
    """
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"rate must be > 0 events/s or None, got {rate}")
    if duration is not None and not duration >= 0:
        raise ConfigError(f"duration must be >= 0 s or None, got {duration}")
    kafka_error: type[Exception] = _kafka().errors.KafkaError
    offset_ms = _shift_ms(events, time.time()) if shift_to_now else None
    own = producer is None
    sink: Any = _make_producer(bootstrap_servers) if producer is None else producer
    failures: list[BaseException] = []
    sent = 0
    began = time.monotonic()
    try:
        for event in events:
            if rate is not None:
                due = began + sent / rate
                if duration is not None and due - began >= duration:
                    break
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            if duration is not None and time.monotonic() - began >= duration:
                break
            out = event
            if offset_ms is not None:
                ms = round(parse_rfc3339(str(event["requested_at"])) * 1000.0) + offset_ms
                out = {**event, "requested_at": format_rfc3339(ms / 1000.0)}
            future = sink.send(
                topic, value=encode_event(out), key=str(event["account_id"]).encode("utf-8")
            )
            add_errback = getattr(future, "add_errback", None)
            if add_errback is not None:
                add_errback(failures.append)
            sent += 1
            if on_progress is not None and sent % PROGRESS_EVERY == 0:
                on_progress(sent)
        sink.flush(timeout=_FLUSH_TIMEOUT_S)
    except kafka_error as exc:
        raise KafkaSetupError(
            f"streaming to {topic} failed after {sent} events: {exc}", retriable=True
        ) from exc
    finally:
        if own:
            sink.close(timeout=_FLUSH_TIMEOUT_S)
    if failures:
        raise KafkaSetupError(
            f"{len(failures)} of {sent} events were not delivered to {topic}: {failures[0]}",
            retriable=True,
        )
    if on_progress is not None:
        on_progress(sent)
    return sent
