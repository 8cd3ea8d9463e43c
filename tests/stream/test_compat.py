"""Each third-party internal that ``detector.stream.compat`` uses still exists and still means
what we rely on. A failure here after an upgrade names the helper to revisit."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
from kafka_io import DEFAULT_MODEL

from detector.config import Settings
from detector.model import Model
from detector.stream import compat
from detector.stream.app import DetectorApp, create_app


@pytest.fixture
def detector_app(tmp_path: Path) -> Iterator[DetectorApp]:
    """An app that is built but never started (port 1: no broker is ever contacted)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings = Settings(bootstrap_servers="127.0.0.1:1", data_dir=tmp_path, partitions=1)
    app = create_app(settings, model=Model.load(DEFAULT_MODEL))
    app.app.finalize()
    try:
        yield app
    finally:
        compat.close_unstarted_consumer(app.app)
        loop.close()
        asyncio.set_event_loop(None)


def _message(offset: int = 0) -> Any:
    from faust.types.tuples import Message

    return Message("t", 0, offset, 0.0, 0, None, b"k", b"v", None)


def test_set_current_event_is_what_faust_tables_read() -> None:
    class Event:  # weak-referenceable stand-in
        pass

    event = Event()
    compat.set_current_event(event)
    try:
        assert faust.current_event() is event
    finally:
        compat.set_current_event(None)
    assert faust.current_event() is None


def test_hold_and_release_move_the_message_refcount() -> None:
    class Event:
        def __init__(self) -> None:
            self.message = _message()

    batch = [Event(), Event()]
    before = [e.message.refcount for e in batch]
    compat.hold(batch)
    assert [e.message.refcount for e in batch] == [n + 1 for n in before]
    compat.release(batch)
    assert [e.message.refcount for e in batch] == before


def test_the_producer_settings_hook_still_exists_and_is_used(detector_app: DetectorApp) -> None:
    assert "_settings_extra" in vars(faust.transport.drivers.aiokafka.Producer)
    producer = detector_app.app.producer
    assert isinstance(producer, compat.IdempotentTransport.Producer)
    options = {**producer._settings_default(), **producer._settings_extra()}
    assert options["acks"] == "all" and options["enable_idempotence"] is True


def test_committed_offsets_are_readable_from_the_consumer(detector_app: DetectorApp) -> None:
    consumer = detector_app.app.consumer
    tp = faust.types.TP("t", 0)
    assert compat.committed_offset(consumer, tp) == 0
    consumer._committed_offset[tp] = 42
    assert compat.committed_offset(consumer, tp) == 42


def test_table_recovery_state_is_readable(detector_app: DetectorApp) -> None:
    assert compat.tables_recovered(detector_app.app) is False  # never started


def test_the_admin_client_still_builds_the_parts_we_release_on_failure() -> None:
    compat.import_kafka()
    from kafka import KafkaAdminClient

    source = inspect.getsource(KafkaAdminClient.__init__)
    for attribute in ("self._metrics", "self._client", "self._net"):
        assert attribute in source, attribute
