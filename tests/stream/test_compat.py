"""Each third-party internal that ``detector.stream.compat`` uses still exists and still means
what we rely on. A failure here after an upgrade names the helper to revisit."""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
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
    assert isinstance(producer, compat.DetectorTransport.Producer)
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


def test_a_failed_tls_handshake_closes_its_socket() -> None:
    """kafka-python's connection manager drops a transport whose TLS handshake failed without
    closing it (one unclosed SSLSocket per attempt against a broker whose CA we do not
    trust); after import_kafka the transport closes itself."""
    compat.import_kafka()
    from kafka.net.manager import KafkaConnectionManager
    from kafka.net.transport import KafkaSSLTransport

    build = inspect.getsource(KafkaConnectionManager._build_transport)
    assert "KafkaSSLTransport(" in build and "await transport.handshake()" in build
    net = SimpleNamespace(unregister_event=lambda *_: None, cancel=lambda _: None)
    ours, broker = socket.socketpair()
    broker.sendall(b"this is not TLS\n")
    broker.close()  # the handshake fails: reset, broken pipe or a bad record
    ours.setblocking(False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    transport = KafkaSSLTransport(net, ours, host="localhost", ssl_context=context)
    wrapped = transport._sock
    try:
        with pytest.raises(OSError):
            transport.handshake().send(None)
        assert wrapped.fileno() == -1, "the SSLSocket of a failed handshake is still open"
        assert transport.is_closing()
    finally:
        wrapped.close()


# --- commit bookkeeping (SafeCommitConsumer): the lost-withdrawal bug -------------------


def _bookkeeping(
    acked: list[int], gaps: tuple[tuple[int, int], ...] = ()
) -> tuple[list[int], set[int], Any]:
    from intervaltree import IntervalTree

    tree = IntervalTree()
    for first, last in gaps:
        tree.addi(first, last + 1)
    return list(acked), set(acked), tree


def _faust_new_offset(committed: int | None, acked: list[int], gaps: Any = ()) -> int | None:
    """Faust's own ``Consumer._new_offset`` on a hand-made state."""
    from collections import defaultdict
    from types import SimpleNamespace

    from faust.transport.consumer import Consumer

    tp = faust.types.TP("t", 0)
    ack_list, index, tree = _bookkeeping(acked, gaps)
    state = SimpleNamespace(
        _acked={tp: ack_list},
        _acked_index={tp: index},
        _gap=defaultdict(lambda: tree),
        _committed_offset={tp: committed},
    )
    return Consumer._new_offset(state, tp)  # type: ignore[arg-type]


def test_faust_still_commits_past_an_unprocessed_offset() -> None:
    """The bug SafeCommitConsumer exists for (faust-streaming 0.15.3). When this fails, Faust
    changed ``_new_offset``: re-check whether the override is still needed."""
    # committed 656 is the next offset to read; it was never processed, 657..660 were.
    assert _faust_new_offset(656, [657, 658, 659, 660]) == 661
    # a gap interval is merged whole: 657..670 committed although only 656 and 671 ran.
    assert _faust_new_offset(656, [656, 671], ((657, 670),)) == 672
    # gap offsets that were also acked are duplicates: the commit crawls by one.
    assert _faust_new_offset(656, [656, 657, 658], ((657, 670),)) == 658


@pytest.mark.parametrize(
    ("committed", "acked", "gaps", "expected", "left"),
    [
        (656, [657, 658, 659, 660], (), None, [657, 658, 659, 660]),  # head missing: wait
        (656, [656, 657, 658], (), 659, []),
        (656, [656, 657, 659], (), 658, [659]),  # stops at the first hole
        (656, [656, 671], ((657, 670),), 672, []),  # a real hole below processed offsets
        (656, [656], ((657, 670),), 657, []),  # a hole above every processed offset waits
        (656, [656, 657, 658], ((657, 670),), 659, []),  # no crawl on duplicates
        (656, [657, 658], ((656, 656),), 659, []),  # the head itself can be a hole (marker)
        (None, [700, 701], (), None, [700, 701]),  # start unknown (before the seek): wait
        (656, [650, 656], (), 657, []),  # stale acks below the committed offset are dropped
    ],
)
def test_next_commit_offset_never_skips_an_unprocessed_offset(
    committed: int | None,
    acked: list[int],
    gaps: tuple[tuple[int, int], ...],
    expected: int | None,
    left: list[int],
) -> None:
    ack_list, index, tree = _bookkeeping(acked, gaps)
    assert compat.next_commit_offset(ack_list, index, tree, committed) == expected
    assert [o for o in ack_list if o >= (expected or 0)] == left
    assert not {o for o in index if expected is not None and o < expected}


def test_the_consumer_is_the_safe_one_and_overrides_what_faust_still_has(
    detector_app: DetectorApp,
) -> None:
    from faust.transport.consumer import Consumer

    consumer = detector_app.app.consumer
    assert isinstance(consumer, compat.SafeCommitConsumer)
    names = (
        "_new_offset",
        "_add_gap",
        "perform_seek",
        "on_partitions_revoked",
        "getmany",
        "_seek",
        "_wait_next_records",
        "_drain_messages",
    )
    for name in names:
        assert name in vars(Consumer), name  # Faust still has what we override
        assert name in vars(compat.SafeCommitConsumer), name
    for attribute in ("_acked", "_acked_index", "_gap", "_committed_offset", "_read_offset"):
        assert hasattr(consumer, attribute), attribute
    # Faust's drain loop (ours replaces it) still calls _add_gap(last read + 1, offset being
    # delivered) and hands records over under wait_first with the flow's suspension.
    faust_loop = inspect.getsource(Consumer._drain_messages)
    assert "await self._add_gap(tp, r_offset + 1, offset)" in faust_loop
    assert "callback(message), self.suspend_flow.wait()" in faust_loop
    # What take_batches reads of a stream and a consumer, as Faust's stream iterator does.
    stream = detector_app.app.stream(detector_app.app.channel())
    for attribute in ("_on_message_in", "_processors", "channel", "should_stop"):
        assert hasattr(stream, attribute), attribute
    assert hasattr(consumer, "unacked") and hasattr(detector_app.app, "consumer_generation_id")


def test_a_gap_never_includes_the_record_being_delivered(detector_app: DetectorApp) -> None:
    consumer = detector_app.app.consumer
    tp = faust.types.TP("t", 0)
    consumer._committed_offset[tp] = 10
    asyncio.get_event_loop().run_until_complete(consumer._add_gap(tp, 11, 15))
    assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(11, 15)]  # 11..14
    # after a seek the last read offset is committed - 1: a marker at 10, then 11 arrives
    asyncio.get_event_loop().run_until_complete(consumer._add_gap(tp, 10, 11))
    assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(10, 11), (11, 15)]
    asyncio.get_event_loop().run_until_complete(consumer._add_gap(tp, 5, 9))  # below: none
    assert len(consumer._gap[tp]) == 2


def test_group_timings_reach_the_aiokafka_consumer(tmp_path: Path) -> None:
    """Failover depends on these reaching aiokafka (Faust's defaults: 60 s session, and a
    1.5 s long poll that a partition sought during a rebalance waits behind)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings = Settings(
        bootstrap_servers="127.0.0.1:1",
        data_dir=tmp_path,
        partitions=1,
        session_timeout_s=9.0,
        heartbeat_interval_s=1.5,
        rebalance_timeout_s=20.0,
        group_instance_id="worker-a",
    )
    app = create_app(settings, model=Model.load(DEFAULT_MODEL)).app
    app.finalize()

    async def options() -> tuple[Any, ...]:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return (
                consumer._session_timeout_ms,
                consumer._heartbeat_interval_ms,
                consumer._rebalance_timeout_ms,
                consumer._group_instance_id,
                consumer._fetch_max_wait_ms,
            )
        finally:
            await consumer.stop()

    import aiokafka

    # the attribute we set is the one aiokafka hands its fetcher when the consumer starts
    start = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start
    try:
        assert loop.run_until_complete(options()) == (9000, 1500, 20000, "worker-a", 100)
    finally:
        compat.close_unstarted_consumer(app)
        loop.close()
        asyncio.set_event_loop(None)


def test_flow_control_resume_no_longer_drops_delivered_records() -> None:
    """mode's resume() empties every clear_on_resume queue (what dropped delivered records at
    the end of recovery); after resume_without_clearing it only resumes, clear() still clears."""
    from mode.utils.queues import FlowControlEvent, FlowControlQueue

    assert "self.clear()" in inspect.getsource(FlowControlEvent.resume)
    loop = asyncio.new_event_loop()
    try:
        flow = FlowControlEvent(loop=loop)
        queue: FlowControlQueue[int] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
        queue.put_nowait(1)
        flow.resume()
        assert queue.qsize() == 0  # mode's behaviour: the record is gone
        compat.resume_without_clearing(flow)
        compat.resume_without_clearing(flow)  # idempotent
        flow.suspend()
        queue.put_nowait(2)
        flow.resume()
        assert flow.is_active() and queue.qsize() == 1
        flow.clear()  # the revoke path still empties the queues
        assert queue.qsize() == 0
    finally:
        loop.close()


def test_last_read_offset_after_a_seek(detector_app: DetectorApp) -> None:
    """Faust's drain loop still reads and writes ``_read_offset`` item by item (our
    _ReadOffsets sees every delivery); after a seek, 'last read' is the highest offset
    already delivered in this assignment, else committed - 1 (so a hole at the head counts)."""
    from faust.transport.consumer import Consumer

    source = inspect.getsource(Consumer._drain_messages)
    assert "set_read_offset = self._read_offset.__setitem__" in source
    assert "if r_offset is None or offset >= r_offset:" in source
    consumer = detector_app.app.consumer
    offsets = consumer._read_offset
    assert isinstance(offsets, compat._ReadOffsets)
    a, b, c = (faust.types.TP("t", p) for p in range(3))
    for offset in (100, 101, 102):  # the drain loop delivered 100..102 of partition a
        offsets[a] = offset
    offsets.update({a: 95, b: 40, c: None})  # what Faust's perform_seek writes
    compat._last_read_after_seek(offsets, {a: 95, b: 40, c: None})
    assert (offsets[a], offsets[b], offsets[c]) == (102, 39, None)
    assert offsets.delivered == {a: 102}


def test_a_partition_without_a_commit_is_rewound_to_its_first_offset(
    detector_app: DetectorApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka's seek_to_committed leaves a partition without a committed offset where its
    fetch stands, so records fetched and then dropped by a rebalance were never fetched
    again (withdrawals[3]@0..49 lost in CI). perform_seek rewinds such a partition of a
    stream topic to its earliest offset, which becomes the committed offset the commit run
    must start at; changelog partitions are left to the recovery."""
    import aiokafka

    source = inspect.getsource(aiokafka.AIOKafkaConsumer.seek_to_committed)
    assert "if offset and offset > 0:" in source  # aiokafka still skips them
    consumer = detector_app.app.consumer
    fresh, zero, known = (faust.types.TP("withdrawals", p) for p in range(3))
    log = faust.types.TP("accounts-changelog", 0)
    sought: dict[Any, int] = {}

    async def seek_to_committed() -> dict[Any, int | None]:
        return {fresh: None, zero: 0, known: 57, log: None}

    async def earliest_offsets(*tps: Any) -> dict[Any, int]:
        assert set(tps) == {fresh, zero}
        return {fresh: 0, zero: 12}

    async def seek(tp: Any, offset: int) -> None:
        sought[tp] = offset

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    monkeypatch.setattr(consumer, "earliest_offsets", earliest_offsets)
    monkeypatch.setattr(consumer, "_seek", seek)
    monkeypatch.setattr(
        consumer.app.topics, "acks_enabled_for", lambda topic: topic == "withdrawals"
    )
    consumer._read_offset[fresh] = 40  # delivered before the seek, then dropped
    consumer._read_offset.delivered.clear()  # (a new assignment forgets deliveries)
    asyncio.get_event_loop().run_until_complete(consumer.perform_seek())
    assert sought == {fresh: 0, zero: 12}
    assert dict(consumer._committed_offset) == {fresh: 0, zero: 12, known: 57}
    assert consumer._read_offset[fresh] == -1  # offset 0 is read again
    assert (consumer._read_offset[zero], consumer._read_offset[known]) == (11, 56)
    assert consumer._read_offset[log] is None
    # the commit now waits for offset 0 instead of starting at the first processed one
    ack_list, index, tree = _bookkeeping([50, 51])
    assert (
        compat.next_commit_offset(ack_list, index, tree, consumer._committed_offset[fresh]) is None
    )
    ack_list, index, tree = _bookkeeping(list(range(52)))
    assert compat.next_commit_offset(ack_list, index, tree, consumer._committed_offset[fresh]) == 52


def test_in_order_passes_drops_or_seeks_back() -> None:
    in_order = compat.in_order
    assert in_order(None, 1318, None) is compat._DROP  # not sought in this assignment
    assert in_order(1126, 1127, None) is compat._PASS  # the next one
    assert in_order(1126, 1100, None) is compat._PASS  # Faust drops it as already read
    assert in_order(1126, 1318, None) is compat._SEEK_BACK  # 1127..1317 never seen
    assert in_order(1126, 1318, 1127) is compat._PASS  # fetched again from 1127: a real hole
    assert in_order(1126, 1318, 1000) is compat._SEEK_BACK


def test_getmany_delivers_each_stream_partition_in_order(
    detector_app: DetectorApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The traced loss: a restarted worker fetched withdrawals[0]@1318.. before its seek to
    the committed 1127 (the records in between were drained and dropped upstream while every
    partition was paused), delivered them, and dropped 1127..1317 as already read. Now the
    records before the seek are dropped, a jump seeks back once, a real hole passes."""
    from faust.transport.consumer import Consumer

    assert inspect.isasyncgenfunction(Consumer.getmany)
    consumer = detector_app.app.consumer
    assert "getmany" in vars(compat.SafeCommitConsumer)
    stream, log = faust.types.TP("withdrawals", 0), faust.types.TP("accounts-changelog", 0)
    monkeypatch.setattr(
        consumer.app.topics, "acks_enabled_for", lambda topic: topic == "withdrawals"
    )
    fetches: list[list[tuple[Any, int]]] = []
    sought: list[tuple[Any, int]] = []

    async def base_getmany(self: Any, timeout: float) -> Any:
        for tp, offset in fetches.pop(0):
            yield tp, SimpleNamespace(topic=tp.topic, offset=offset)

    async def seek(tp: Any, offset: int) -> None:
        sought.append((tp, offset))

    monkeypatch.setattr(Consumer, "getmany", base_getmany)
    monkeypatch.setattr(consumer, "_seek", seek)

    def drain(*batch: tuple[Any, int]) -> list[tuple[str, int]]:
        fetches.append(list(batch))

        async def run() -> list[tuple[str, int]]:
            out = []
            async for tp, message in consumer.getmany(timeout=0):
                out.append((tp.topic, message.offset))
                consumer._read_offset[tp] = message.offset  # what the drain loop does
            return out

        return asyncio.get_event_loop().run_until_complete(run())

    # before the seek: the stream's records are dropped, the changelog's pass
    assert drain((stream, 1318), (log, 5), (stream, 1319)) == [("accounts-changelog", 5)]
    assert sought == []
    consumer._read_offset[stream] = 1126  # perform_seek: committed 1127
    # a record fetched before the seek arrives after it: seek back to 1127 once
    assert drain((stream, 1320), (stream, 1321)) == []
    assert sought == [(stream, 1127)]
    assert drain((stream, 1127), (stream, 1128)) == [("withdrawals", 1127), ("withdrawals", 1128)]
    # a real hole (a transaction marker at 1129): seek back, same jump again, then pass
    assert drain((stream, 1130)) == []
    assert sought[-1] == (stream, 1129)
    assert drain((stream, 1130), (stream, 1131)) == [("withdrawals", 1130), ("withdrawals", 1131)]
    assert len(sought) == 2


def test_a_seek_runs_on_the_consumer_thread(
    detector_app: DetectorApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust seeks aiokafka from the app's thread; ours goes through the consumer thread's
    queue, so no fetch response of the old position is stored after it."""
    consumer = detector_app.app.consumer
    thread = consumer._thread
    calls: list[tuple[Any, ...]] = []

    class Aiokafka:
        def seek(self, tp: Any, offset: int) -> None:
            calls.append(("seek", tp, offset))

    async def call_thread(fun: Any, *args: Any) -> Any:
        calls.append(("queued",))
        return fun(*args)

    monkeypatch.setattr(thread, "_ensure_consumer", Aiokafka)
    monkeypatch.setattr(thread, "call_thread", call_thread)
    tp = faust.types.TP("withdrawals", 0)
    asyncio.get_event_loop().run_until_complete(consumer._seek(tp, 1127))
    assert calls == [("queued",), ("seek", tp, 1127)]


def test_revoke_drops_the_bookkeeping_only_after_the_app_committed(
    detector_app: DetectorApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faust.transport.consumer import Consumer

    source = inspect.getsource(Consumer.on_partitions_revoked)
    for popped in ("_gap", "_acked", "_acked_index", "_read_offset", "_committed_offset"):
        assert f"self.{popped}.pop(tp, None)" in source, popped  # what we now pop later
    assert "self._on_partitions_revoked" in source

    consumer = detector_app.app.consumer
    tp = faust.types.TP("t", 0)
    consumer._acked[tp] = [7, 8]
    consumer._committed_offset[tp] = 7
    seen: list[Any] = []

    async def app_revoke(revoked: set[Any]) -> None:  # the app waits, then commits
        seen.append((list(consumer._acked[tp]), consumer._committed_offset[tp]))

    monkeypatch.setattr(consumer, "_on_partitions_revoked", app_revoke)
    monkeypatch.setattr(consumer, "assignment", set)
    asyncio.get_event_loop().run_until_complete(consumer.on_partitions_revoked({tp}))
    assert seen == [([7, 8], 7)]
    assert tp not in consumer._acked and tp not in consumer._committed_offset


def _changelog_event(
    topic: str, partition: int, offset: int, key: bytes, value: bytes | None
) -> Any:
    from faust.types.tuples import Message

    message = Message(topic, partition, offset, 0.0, 0, None, key, value, None)

    class Event:
        def __init__(self) -> None:
            self.message, self.key, self.value = message, key, value

    return Event()


def test_the_memory_store_remembers_offsets_and_keeps_standby_partitions(
    detector_app: DetectorApp,
) -> None:
    from faust.types import TP

    store = detector_app.app.tables["accounts"].data
    assert isinstance(store, compat.RememberingMemoryStore)
    topic = detector_app.settings.changelog_topic("accounts")
    batch = [
        _changelog_event(topic, 0, 5, b"a", b"1"),
        _changelog_event(topic, 1, 9, b"b", b"2"),
        _changelog_event(topic, 0, 7, b"c", b"3"),
        _changelog_event(topic, 2, 3, b"d", b"4"),
    ]
    store.apply_changelog_batch(iter(batch), lambda k: k, lambda v: v)
    # Faust's Recovery starts each partition after store.persisted_offset (not from 0).
    assert store.persisted_offset(TP(topic, 0)) == 7
    assert store.persisted_offset(TP(topic, 1)) == 9
    store.set_persisted_offset(TP(topic, 0), 12)  # our own writes, after their ack
    assert store.persisted_offset(TP(topic, 0)) == 12
    # Partition 0 active, 1 standby, 2 neither: 2's keys and offset go, the rest stays.
    asyncio.get_event_loop().run_until_complete(
        store.on_recovery_completed({TP(topic, 0)}, {TP(topic, 1)})
    )
    assert store.data == {b"a": b"1", b"b": b"2", b"c": b"3"}
    assert store.persisted_offset(TP(topic, 2)) is None


def test_faust_recovery_reads_a_promoted_standby_from_its_offset(
    detector_app: DetectorApp,
) -> None:
    # The contract with faust.tables.recovery: it asks the table for the store's offset.
    from faust.types import TP

    table = detector_app.app.tables["accounts"]
    tp = TP(detector_app.settings.changelog_topic("accounts"), 0)
    table.data.set_persisted_offset(tp, 41)
    recovery = detector_app.app.tables.recovery
    recovery.add_active(table, tp)
    assert recovery.active_offsets[tp] == 41


def test_store_urls() -> None:
    assert compat.store_url("memory") == "detector-memory://"
    assert compat.store_url("rocksdb") == "rocksdb://"
    with pytest.raises(KeyError):
        compat.store_url("redis")


def test_a_hand_over_stepped_by_hand_is_finished_where_it_waited() -> None:
    """The drain loop steps a record's hand-over once; one that had to wait is finished by
    ``_finish`` in a task, which resumes it where it waited (and can cancel it there)."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[int] = loop.create_future()
        seen: list[str] = []

        async def hand_over() -> int:
            seen.append("before")
            got = await gate
            seen.append("after")
            return got + 1

        coro = hand_over()
        waiting_on = coro.send(None)
        assert seen == ["before"] and waiting_on is gate
        task = asyncio.ensure_future(compat._finish(coro, waiting_on))
        await asyncio.sleep(0)
        assert not task.done()
        gate.set_result(41)
        assert await task == 42 and seen == ["before", "after"]

        stuck: asyncio.Future[int] = loop.create_future()

        async def never() -> int:
            return await stuck

        coro2 = never()
        task2 = asyncio.ensure_future(compat._finish(coro2, coro2.send(None)))
        await asyncio.sleep(0)
        task2.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task2
        assert stuck.cancelled()

    asyncio.run(body())
