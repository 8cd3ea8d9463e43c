"""Diagnostics for ``bench/chaos.py --trace``: never imported by the detector itself.

``chaos.py --trace`` puts this directory first on the workers' PYTHONPATH, so Python imports
it at start-up. It wraps a few Faust internals and records one line per event in memory;
a background thread appends them to ``$CHAOS_TRACE_DIR/trace-<pid>.log`` every 0.5 s (a
kill -9 loses at most the last half second):

    IN      tp@offset gen=G          conductor got a fetched message (before flow control)
    DELIV   tp@offset gen=G          conductor handed it to the agent's channel
    ACK     tp@offset gen=G/app committed=C accepted=bool   (Consumer.ack: offset done)
    COMMIT  {tp: offset}             offsets committed
    GAP     tp from..to              Consumer._add_gap: offsets treated as done
    REVOKE / ASSIGN                  consumer rebalance callbacks
    SEEK+ / SEEK                     perform_seek start / end (committed offsets read)
    RESUME / PAUSE                   Faust-level resume/pause of partitions
    HOLD / RELEASE                   our agents' batch refs (detector.stream.compat)
    SKIP / DROPPED                   Faust's stream skipped / drain loop dropped a message
    CLEAR   n=N tp@offset...         flow control emptied the streams' queues (records lost
                                     from memory; refetched only after a seek)
    CLEAR   n=N tp@offset...         flow control emptied the streams' queues (records lost
                                     from memory; refetched only after a seek)

A file ``dump-<pid>.req`` in the same directory makes the thread write every asyncio
task's stack and the consumer's flow state to ``dump-<pid>.txt`` (for stuck workers).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any

_DIR = os.environ.get("CHAOS_TRACE_DIR") or "."
_lines: deque[str] = deque()


def _w(kind: str, text: str) -> None:
    _lines.append(f"{time.time():.3f} {kind:<7} {text}\n")


def _tp(tp: Any) -> str:
    return f"{tp.topic.split('-', 2)[-1]}[{tp.partition}]"


def _tps(tps: Any) -> str:
    return " ".join(sorted(_tp(tp) for tp in tps if "changelog" not in tp.topic))


def _ranges(batch: Any) -> str:
    by_tp: dict[str, list[int]] = {}
    gens: set[Any] = set()
    for event in batch:
        msg = event.message
        by_tp.setdefault(_tp(msg.tp), []).append(msg.offset)
        gens.add(getattr(msg, "generation_id", None))
    body = " ".join(f"{k} {min(v)}..{max(v)} n={len(v)}" for k, v in by_tp.items())
    return f"{body} gen={sorted(gens, key=str)}"


def _install() -> None:
    from faust.transport import conductor as fcond
    from faust.transport import consumer as fc

    consumer_cls = fc.Consumer

    orig_ack = consumer_cls.ack

    def ack(self: Any, message: Any) -> bool:
        committed = self._committed_offset.get(message.tp)
        result = orig_ack(self, message)
        _w(
            "ACK",
            f"{_tp(message.tp)}@{message.offset} gen={message.generation_id}/"
            f"{self.app.consumer_generation_id} committed={committed} accepted={result}",
        )
        return result

    consumer_cls.ack = ack

    orig_commit_offsets = consumer_cls._commit_offsets

    async def _commit_offsets(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        result = await orig_commit_offsets(self, offsets, start_new_transaction)
        _w("COMMIT", f"{ {_tp(tp): off for tp, off in offsets.items()} } ok={result}")
        return result

    consumer_cls._commit_offsets = _commit_offsets

    try:  # the detector's own consumer overrides _add_gap: wrap the one that runs
        from detector.stream.compat import SafeCommitConsumer as gap_cls  # noqa: N813
    except ImportError:
        gap_cls = consumer_cls
    orig_add_gap = gap_cls._add_gap

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        committed = self._committed_offset.get(tp)
        _w("GAP", f"{_tp(tp)} {offset_from}..{offset_to} committed={committed}")
        await orig_add_gap(self, tp, offset_from, offset_to)

    gap_cls._add_gap = _add_gap

    from mode.utils.queues import FlowControlEvent

    orig_clear = FlowControlEvent.clear

    def clear(self: Any) -> None:
        dropped = []
        for queue in list(self._queues):
            for item in list(getattr(queue, "_queue", [])):
                msg = getattr(item, "message", None)
                if msg is not None and "changelog" not in msg.topic:
                    dropped.append(f"{_tp(msg.tp)}@{msg.offset}")
        _w("CLEAR", f"n={len(dropped)} {' '.join(dropped[:300])}")
        orig_clear(self)

    FlowControlEvent.clear = clear

    orig_revoked = consumer_cls.on_partitions_revoked

    async def on_partitions_revoked(self: Any, revoked: Any) -> None:
        pending = {_tp(tp): f"{min(v)}..{max(v)}" for tp, v in self._acked.items() if v}
        _w("REVOKE", f"{_tps(revoked)} acked_not_committed={pending}")
        await orig_revoked(self, revoked)
        _w("REVOKED", "")

    consumer_cls.on_partitions_revoked = on_partitions_revoked

    orig_assigned = consumer_cls.on_partitions_assigned

    async def on_partitions_assigned(self: Any, assigned: Any, generation_id: int = 0) -> None:
        _w("ASSIGN", f"gen={generation_id} {_tps(assigned)}")
        await orig_assigned(self, assigned, generation_id)
        _w("ASSIGNED", f"gen={generation_id}")

    consumer_cls.on_partitions_assigned = on_partitions_assigned

    seek_cls = gap_cls  # our consumer overrides perform_seek too
    orig_seek = seek_cls.perform_seek

    async def perform_seek(self: Any) -> None:
        _w("SEEK+", f"read_offsets={ {_tp(tp): o for tp, o in self._read_offset.items()} }")
        await orig_seek(self)
        committed = {_tp(tp): o for tp, o in self._committed_offset.items()}
        _w("SEEK", f"committed={committed}")

    seek_cls.perform_seek = perform_seek

    orig_resume, orig_pause = consumer_cls.resume_partitions, consumer_cls.pause_partitions

    def resume_partitions(self: Any, tps: Any) -> None:
        tps = set(tps)
        _w("RESUME", _tps(tps))
        orig_resume(self, tps)

    def pause_partitions(self: Any, tps: Any) -> None:
        tps = set(tps)
        _w("PAUSE", _tps(tps))
        orig_pause(self, tps)

    consumer_cls.resume_partitions = resume_partitions
    consumer_cls.pause_partitions = pause_partitions

    orig_on_message = fcond.Conductor._compile_message_handler

    def _compile_message_handler(self: Any) -> Any:
        handler = orig_on_message(self)

        async def on_message(message: Any) -> None:
            changelog = "changelog" in message.topic
            if not changelog:
                _w("IN", f"{_tp(message.tp)}@{message.offset} gen={message.generation_id}")
            await handler(message)
            if not changelog:
                _w("DELIV", f"{_tp(message.tp)}@{message.offset}")

        return on_message

    fcond.Conductor._compile_message_handler = _compile_message_handler

    from detector.stream import compat

    orig_hold, orig_release = compat.hold, compat.release

    def hold(batch: Any) -> None:
        _w("HOLD", _ranges(batch))
        orig_hold(batch)

    def release(batch: Any) -> None:
        orig_release(batch)
        _w("RELEASE", _ranges(batch))

    compat.hold, compat.release = hold, release

    from mode.utils import logging as mode_logging

    orig_dev = mode_logging.CompositeLogger.dev

    def dev(self: Any, message: str, *args: Any, **kwargs: Any) -> Any:
        if message.startswith("Skipping message"):
            msg = args[0] if args else None
            where = f"{_tp(msg.tp)}@{msg.offset}" if hasattr(msg, "tp") else "?"
            _w("SKIP", f"{where} gen={args[1:]}")
        elif message.startswith("DROPPED MESSAGE"):
            _w(
                "DROPPED",
                f"offset={args[0] if args else '?'} key={args[1] if len(args) > 1 else '?'}",
            )
        elif message.startswith("getmany called while flow not active"):
            _w("FLOWSEEK", "getmany while flow not active: seek to committed")
        return orig_dev(self, message, *args, **kwargs)

    mode_logging.CompositeLogger.dev = dev


def _dump() -> str:
    import asyncio
    import gc
    import io

    out = io.StringIO()
    try:
        loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
        for loop in loops:
            out.write(f"=== loop {loop!r} running={loop.is_running()}\n")
            for task in list(asyncio.all_tasks(loop)):
                out.write(f"--- {task!r}\n")
                task.print_stack(limit=12, file=out)
        from faust.transport.consumer import Consumer

        for c in [o for o in gc.get_objects() if isinstance(o, Consumer)]:
            app = c.app
            out.write(
                f"=== consumer flow_active={c.flow_active} "
                f"flow_control={app.flow_control.is_active()} "
                f"active={_tps(c._active_partitions or [])} "
                f"paused={_tps(c._paused_partitions)} "
                f"unacked={len(c._unacked_messages)} "
                f"gen={app.consumer_generation_id} rebalancing={app.rebalancing} "
                f"in_recovery={app.tables.recovery.in_recovery}\n"
            )
    except Exception as exc:
        out.write(f"dump failed: {exc!r}\n")
    return out.getvalue()


def _writer() -> None:
    path = os.path.join(_DIR, f"trace-{os.getpid()}.log")
    req = os.path.join(_DIR, f"dump-{os.getpid()}.req")
    while True:
        time.sleep(0.5)
        if _lines:
            chunk = []
            while _lines:
                chunk.append(_lines.popleft())
            with open(path, "a") as out:
                out.writelines(chunk)
        if os.path.exists(req):
            with open(os.path.join(_DIR, f"dump-{os.getpid()}.txt"), "a") as out:
                out.write(f"##### {time.time():.3f}\n{_dump()}")
            os.unlink(req)


if os.environ.get("CHAOS_TRACE_DIR"):
    threading.Thread(target=_writer, daemon=True, name="chaos-trace").start()
    try:
        _install()
    except Exception as exc:  # diagnostics must never stop a worker
        _w("ERROR", f"trace not installed: {exc!r}")
