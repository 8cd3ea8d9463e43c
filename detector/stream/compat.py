"""Every use of a third-party *internal* (faust-streaming, aiokafka, kafka-python), in one place.

Public APIs do not offer what these do. Each helper names the trap it exists for, and
``tests/stream/test_compat.py`` fails fast when an upgrade renames or removes what it uses
(faust-streaming is pinned ``<0.16`` for the same reason).

======================================  ===================================================
internal                                why
======================================  ===================================================
``faust.streams._current_event``        table writes go to the changelog partition of the
                                        *current* event; inside ``take_events`` batches we
                                        make each event current while its key is written
``aiokafka Producer._settings_extra``   Faust has no switch for acks=all + idempotence
``Message.incref/decref``               an exception or cancellation acks a batch; an extra
                                        reference keeps offsets uncommitted until delivery
``Consumer._committed_offset``          lag and commit age need Faust's committed offsets
``TableManager.recovery``               readiness: tables recovered
``Consumer._thread`` (tests)          an unstarted app's consumer thread owns a loop
``Store.data``, ``_key_partition``,   our changelog writes bypass ``table[key] = ...``; the
``_db_for_partition``, ``_key_index``  local store is read and written per partition
``Worker.on_setup_root_logger``        Faust's terminal spinner sets the root logger to
                                      DEBUG at level WARNING+ (every aiokafka debug()
                                      call then builds a record): no spinner, our config
``KafkaAdminClient.__init__`` parts     kafka-python leaks sockets and its I/O thread when
                                        bootstrap fails inside ``__init__``
======================================  ===================================================
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import warnings
import weakref
from collections.abc import Sequence
from typing import Any, cast

import faust
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka

from detector.stream.logs import configure_logging

__all__ = [
    "IdempotentTransport",
    "QuietWorker",
    "StoreAccess",
    "close_unstarted_consumer",
    "committed_offset",
    "default_partition",
    "hold",
    "import_kafka",
    "new_admin_client",
    "release",
    "set_current_event",
    "tables_recovered",
]

# kafka-python 3.0.x reads bundled data with deprecated importlib APIs at import time.
_KAFKA_IMPORT_WARNINGS = r"(read|open)_text is deprecated"


class _IdempotentProducer(faust_aiokafka.Producer):
    """aiokafka producer with acks=all and idempotence (Faust offers neither switch)."""

    def _settings_extra(self) -> Any:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class IdempotentTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport whose producer is :class:`_IdempotentProducer`."""

    Producer = _IdempotentProducer


class QuietWorker(faust.Worker):
    """A Faust worker without the terminal spinner, logging through our configuration."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        configure_logging(logging.getLevelName(level or logging.INFO))


def set_current_event(event: Any) -> None:
    """Make ``event`` (or nothing) the context's current event, which Faust tables read to
    pick the changelog partition of a write. Only the context variable: the stream's own
    ``current_event`` attribute belongs to ``take_events``' buffer filler."""
    _current_event.set(None if event is None else weakref.ref(event))


def hold(batch: Sequence[Any]) -> None:
    """Take a reference on every message of a batch.

    ``take_events`` acks a batch's events when the agent asks for the next batch *or when
    the agent fails or is cancelled*; an ack would let the offsets be committed although
    the batch's output never reached Kafka (traps: an exception acks the event). With our
    reference held, that ack is not the last one: the offsets stay uncommitted (a gap the
    consumer cannot commit past) until :func:`release` after delivery.
    """
    for event in batch:
        event.message.incref()


def release(batch: Sequence[Any]) -> None:
    """Drop the references :func:`hold` took (the last one acks the message)."""
    for event in batch:
        event.message.decref()


def committed_offset(consumer: Any, tp: Any) -> int:
    """Faust's committed ("next to read") offset of ``tp``; 0 before any commit."""
    return int(consumer._committed_offset.get(tp) or 0)


def tables_recovered(app: Any) -> bool:
    """True once every table finished recovering from its changelog."""
    recovery = cast(Any, app.tables).recovery
    return bool(recovery.completed.is_set() and not recovery.in_recovery)


def close_unstarted_consumer(app: Any) -> None:
    """Close the event loop that an app's consumer thread made at construction.

    Faust's aiokafka consumer builds its thread (and a loop) when first accessed, even if
    the app never starts; tests that build apps close it so no loop leaks.
    """
    consumer = getattr(app, "_consumer", None)
    thread = getattr(consumer, "_thread", None)
    if thread is not None:
        thread.thread_loop.close()


class StoreAccess:
    """A Faust table's local store, read and written per partition (bytes to bytes).

    Faust's own table API picks the partition from the *current event*; we pass it. Works
    with the in-memory store and with the RocksDB (rocksdict) store.
    """

    def __init__(self, table: Any) -> None:
        self._store = table.data
        self._rocks = hasattr(self._store, "_db_for_partition")

    @property
    def persistent(self) -> bool:
        return self._rocks

    def get(self, key: bytes, partition: int) -> bytes | None:
        if self._rocks:
            value = self._store._db_for_partition(partition).get(key)
            return None if value is None else bytes(value)
        value = self._store.data.get(key)
        return None if value is None else bytes(value)

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        if self._rocks:
            self._store._db_for_partition(partition).put(key, value)
            self._store._key_index[key] = partition
        else:
            self._store.data[key] = value
            self._store._key_partition[key] = partition

    def delete(self, key: bytes, partition: int) -> None:
        if self._rocks:
            self._store._db_for_partition(partition).delete(key)
            self._store._key_index.pop(key, None)
        else:
            self._store.data.pop(key, None)
            self._store._key_partition.pop(key, None)

    def set_persisted_offset(self, topic: str, partition: int, offset: int) -> None:
        """RocksDB: the changelog offset up to which the local store is complete (recovery
        resumes after it). Faust does this for the writes it sends itself."""
        if self._rocks:
            from faust.types import TP

            self._store.set_persisted_offset(TP(topic, partition), offset)

    def items(self) -> list[tuple[int, bytes, bytes]]:
        """``(partition, key, value)`` of every key in the local store."""
        if self._rocks:
            return [
                (int(p), bytes(k), bytes(v))
                for p, db in list(self._store._dbs.items())
                for k, v in db.items()
                if k != self._store.offset_key
            ]
        parts = self._store._key_partition
        return [(int(parts.get(k, -1)), k, v) for k, v in list(self._store.data.items())]

    def __len__(self) -> int:
        if self._rocks:
            return sum(1 for _ in self.items())
        return len(self._store.data)


@functools.lru_cache(maxsize=1 << 16)  # hot destinations repeat; murmur2 is pure Python
def default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java, kafka-python, Faust) gives ``key``."""
    import_kafka()
    from kafka.partitioner.default import murmur2

    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


def import_kafka() -> None:
    """Import kafka-python once, hiding its import-time DeprecationWarnings.

    Every kafka-python use in the detector goes through here first; tests that import
    ``kafka`` themselves call it before doing so (pytest turns warnings into errors).
    """
    if "kafka.admin" in sys.modules and "kafka.errors" in sys.modules:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_KAFKA_IMPORT_WARNINGS, category=DeprecationWarning
        )
        import kafka.admin
        import kafka.errors  # noqa: F401


def new_admin_client(configs: dict[str, Any]) -> Any:
    """A ``KafkaAdminClient``; if its constructor raises, what it started is released first.

    kafka-python 3.0 starts its metrics, network client and I/O thread inside ``__init__``
    and leaks them (a socket per refused connection) when bootstrap fails there.
    """
    import_kafka()
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient.__new__(KafkaAdminClient)
    try:
        admin.__init__(**configs)
    except BaseException:
        _close_partial(admin)
        raise
    return admin


def _close_partial(admin: Any) -> None:
    for attr, method in (("_metrics", "close"), ("_client", "close"), ("_net", "stop")):
        part = getattr(admin, attr, None)
        if part is not None:
            with contextlib.suppress(Exception):
                getattr(part, method)()
