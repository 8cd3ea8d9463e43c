"""Reference pipelines for ``bench_throughput.py``, each run as its own process.

    python bench/pipelines.py raw   BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP N RESULT.json
    python bench/pipelines.py faust BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP N RESULT.json
    python bench/pipelines.py faust-batch BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP N RESULT.json

* ``raw``: aiokafka ``getmany`` -> ``send`` of a fixed JSON per record (acks=all,
  idempotent), offsets committed after each batch is acknowledged: the transport's ceiling
  in Python.
* ``faust``: a no-op Faust agent: raw bytes in, a fixed JSON out per event
  (``await topic.send(...)`` per event), Faust's defaults otherwise.
* ``faust-batch``: Faust consumed the way the worker consumes it (see
  :func:`faust_micro`), one fixed JSON out per event: the worker's floor; ``faust-lean``:
  the same with the worker's own batch reader.
* ``relay``: the worker's topology (two stages, three acknowledged rounds) in raw aiokafka,
  no work, until killed (N and RESULT.json are ignored): the latency ladder's floor.
* ``hop``: one hop in raw aiokafka, no work (consume -> produce acks=all, awaited; offsets
  committed in the background), until killed: the floor of any pipeline of this transport.

Each drains N records from the earliest offset and writes ``{"count", "first", "last",
"cpu_s"}``: wall-clock times of the first and last record handled, and the process CPU time
spent between them.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from typing import Any

FIXED = json.dumps({"verdict": "allow", "score": 0.42, "reasons": []}).encode()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Tally:
    def __init__(self, n: int, path: str) -> None:
        self.n, self.path, self.count = n, path, 0
        self.first = self.cpu0 = 0.0

    def add(self, k: int) -> bool:
        if self.count == 0:
            self.first, self.cpu0 = time.time(), _cpu()
        self.count += k
        if self.count >= self.n:
            result = {
                "count": self.count,
                "first": self.first,
                "last": time.time(),
                "cpu_s": _cpu() - self.cpu0,
            }
            with open(self.path, "w") as out:
                json.dump(result, out)
            return True
        return False


async def _started_clients(bootstrap: str, group: str, *topics: str) -> tuple[Any, Any]:
    """An aiokafka consumer of ``topics`` in ``group`` (from the earliest offset, offsets
    committed by the caller) and an acks=all idempotent producer, both started."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    return consumer, producer


async def raw(bootstrap: str, source: str, sink: str, group: str, tally: Tally) -> None:
    consumer, producer = await _started_clients(bootstrap, group, source)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            futures = [
                await producer.send(sink, key=record.key, value=FIXED)
                for records in batches.values()
                for record in records
            ]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
                if tally.add(len(futures)):
                    return
    finally:
        await producer.stop()
        await consumer.stop()


# Topics of raw bytes (no Faust envelope), as the worker's.
RAW_TOPIC: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def _faust_app(group: str, bootstrap: str, **conf: Any) -> Any:
    """A Faust app reading from the earliest offset, no web server, topics made by the
    benchmark; ``conf``: more of Faust's settings."""
    import tempfile

    import faust

    return faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        datadir=tempfile.mkdtemp(prefix=f"bench-{group}-"),
        store="memory://",
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        **conf,
    )


def faust_noop(bootstrap: str, source: str, sink: str, group: str, tally: Tally) -> None:
    import faust

    app = _faust_app(group, bootstrap)
    source_topic = app.topic(source, **RAW_TOPIC)
    sink_topic = app.topic(sink, **RAW_TOPIC)

    @app.agent(source_topic)
    async def noop(stream: Any) -> None:
        async for event in stream.events():
            await sink_topic.send(key=event.key, value=FIXED)
            if tally.add(1):
                await app.producer.flush()
                os._exit(0)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


def faust_micro(
    bootstrap: str, source: str, sink: str, group: str, tally: Tally, *, lean: bool
) -> None:
    """Faust consumed the way the worker consumes it: micro-batches (up to 500, 2 ms), one
    record per event produced with the app's producer directly (acks=all, idempotent), the
    batch's deliveries awaited before the next; the worker's transport, quiet worker and GC
    settings. What the worker costs above this is its own work. ``lean``: batches from the
    worker's own reader (:func:`detector.stream.compat.take_batches`); otherwise Faust's
    ``take_events``."""
    from detector.gctune import settle
    from detector.stream import compat

    app = _faust_app(group, bootstrap, producer_acks=-1, loghandlers=[])
    app.transport = compat.DetectorTransport(app.conf.broker_consumer, app)
    source_topic = app.topic(source, **RAW_TOPIC)

    @app.agent(source_topic)
    async def batched(stream: Any) -> None:
        batches = (
            compat.take_batches(stream, 500, 0.002)
            if lean
            else stream.take_events(500, within=0.002)
        )
        async for batch in batches:
            compat.hold(batch)
            deliveries = [
                await app.producer.send(sink, event.key, FIXED, None, None, None) for event in batch
            ]
            await asyncio.gather(*deliveries)
            compat.release(batch)
            if tally.add(len(batch)):
                os._exit(0)

    worker = compat.QuietWorker(app, loglevel="WARNING")
    settle(10_000)
    worker.execute_from_commandline()


async def relay(bootstrap: str, source: str, sink: str, group: str) -> None:
    """The worker's topology with no work, in raw aiokafka (the latency ladder's floor): a
    record of ``source`` is forwarded to ``<sink>-mid`` (acks=all, awaited, offsets
    committed); a record of ``<sink>-mid`` is written to ``<sink>-record``, then, once that
    is acknowledged, to ``sink`` (the verdict on record, then the verdict). Runs until
    killed."""
    mid, on_record = f"{sink}-mid", f"{sink}-record"
    consumer, producer = await _started_clients(bootstrap, group, source, mid)

    async def send_all(topic: str, records: list[Any]) -> None:
        futures = [await producer.send(topic, key=r.key, value=r.value) for r in records]
        await asyncio.gather(*futures)

    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            incoming = [r for tp, rs in batches.items() if tp.topic == source for r in rs]
            forwarded = [r for tp, rs in batches.items() if tp.topic == mid for r in rs]
            if incoming:
                await send_all(mid, incoming)
            if forwarded:
                await send_all(on_record, forwarded)
                await send_all(sink, forwarded)
            if batches:
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


async def hop(bootstrap: str, source: str, sink: str, group: str) -> None:
    """Each record of ``source`` written to ``sink`` as it is (acks=all, awaited), nothing
    else on the way: no intermediate topic, no work, the offset commit not awaited before
    the next fetch. Runs until killed."""
    consumer, producer = await _started_clients(bootstrap, group, source)
    committing: asyncio.Future[Any] | None = None
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            futures = [
                await producer.send(sink, key=r.key, value=r.value)
                for records in batches.values()
                for r in records
            ]
            if futures:
                await asyncio.gather(*futures)
                if committing is None or committing.done():
                    committing = asyncio.ensure_future(consumer.commit())
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    mode, bootstrap, source, sink, group, n, path = sys.argv[1:8]
    tally = Tally(int(n), path)
    if mode == "raw":
        asyncio.run(raw(bootstrap, source, sink, group, tally))
    elif mode == "faust":
        sys.argv = sys.argv[:1]  # Faust's worker parses the command line
        faust_noop(bootstrap, source, sink, group, tally)
    elif mode in ("faust-batch", "faust-lean"):
        sys.argv = sys.argv[:1]
        faust_micro(bootstrap, source, sink, group, tally, lean=mode == "faust-lean")
    elif mode == "relay":
        asyncio.run(relay(bootstrap, source, sink, group))
    elif mode == "hop":
        asyncio.run(hop(bootstrap, source, sink, group))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
