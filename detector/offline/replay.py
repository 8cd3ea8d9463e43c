"""``detector replay``: the worker's exact decision logic over a file, without Kafka.

Events are replayed in event-time order through :class:`~detector.pipeline.FeatureState`
and scored in chunks by :class:`~detector.pipeline.Decider`, exactly as the worker's agents
do. With ``metadata.label`` on the events, a quality report is computed.

Two processes, as the worker's two stages: with ``jobs=2`` (the default when two CPUs are
free and the input is long) a forked child runs the account stage over the events and streams
the account features to this process, which runs the destination stage, scoring, policy and
verdicts on them meanwhile. The stages share no state (the accounts are the child's; the
destinations and the verdicts on record are this process's; a label's account part is
applied in the child, its destination part here, each at the same point in event time) and
the batches scored are the same, so the verdicts are those of one process, bit for bit
(``tests/offline/test_replay_jobs.py``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import DetectorError
from detector.events import Withdrawal
from detector.features import AccountFeatures, FeatureParams, Structuring
from detector.gctune import relaxed
from detector.labels import Label
from detector.model import Model
from detector.offline.quality import Tally
from detector.pipeline import Decider, FeatureState, Feedback, Pending, verdict_text

__all__ = [
    "CHUNK",
    "PIPELINE_MIN_EVENTS",
    "ReplayError",
    "ReplayResult",
    "quality_report",
    "replay",
    "replay_jobs",
    "write_verdicts",
]

# Rows scored together: large enough for the batched scorer's best per-row cost.
CHUNK = 4096
# Below this many events a second process costs more than it saves (a fork, ~10-50 ms).
PIPELINE_MIN_EVENTS = 4 * CHUNK


class ReplayError(DetectorError):
    """The account stage's process failed (its traceback is in the message)."""


def cpu_quota(
    root: Path = Path("/sys/fs/cgroup"), own: Path = Path("/proc/self/cgroup")
) -> float | None:
    """The CPU time this process's cgroup may use, in CPUs (a container's CPU limit), or
    None when there is no limit or it cannot be read (cgroup v2 ``cpu.max``, v1 CFS quota)."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        try:
            if controllers == "":  # v2: one unified hierarchy
                quota, period = (root / relative / "cpu.max").read_text().split()
            elif "cpu" in controllers.split(","):
                base = root / "cpu" / relative
                quota = (base / "cpu.cfs_quota_us").read_text().strip()
                period = (base / "cpu.cfs_period_us").read_text().strip()
            else:
                continue
        except (OSError, ValueError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            return int(quota) / int(period)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def replay_jobs(jobs: int | None, n_events: int, destination_order: object = None) -> int:
    """How many processes a replay of ``n_events`` uses: ``jobs`` when given (1 or 2), else
    2 when two CPUs are usable (by affinity and by the cgroup's CPU limit), the input is
    long, fork exists, and no other thread runs (a fork copies one thread: locks another
    thread holds would stay held in the child)."""
    if jobs is not None:
        if jobs not in (1, 2):
            raise ValueError(f"jobs must be 1 or 2 (the two stages), got {jobs}")
        return 1 if destination_order is not None else jobs
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    quota = cpu_quota()
    if (
        usable < 2
        or (quota is not None and quota < 2)
        or n_events < PIPELINE_MIN_EVENTS
        or destination_order is not None
        or "fork" not in multiprocessing.get_all_start_methods()
        or threading.active_count() > 1
    ):
        return 1
    return 2


@dataclass
class ReplayResult:
    verdicts: list[dict[str, Any]]
    scores: np.ndarray
    labels: list[str | None]
    seconds: float
    rows: np.ndarray = field(repr=False)

    @property
    def events_per_second(self) -> float:
        return len(self.verdicts) / self.seconds if self.seconds > 0 else float("inf")


@relaxed()  # many small objects live at once: ~1.2-1.5x events/s (bench/bench_replay.py)
def replay(
    events: Iterable[Withdrawal],
    model: Model,
    *,
    hold_seconds: int = 3600,
    now: float | None = None,
    destination_order: Sequence[str] | None = None,
    reports: Sequence[Label] = (),
    feedback: Feedback | None = None,
    score_from: float | None = None,
    structuring: Structuring | None = None,
    jobs: int | None = None,
) -> ReplayResult:
    """Decide every event (given in event-time order) as the worker would.

    ``destination_order`` (withdrawal_ids): the order in which the worker's destination
    stage took the withdrawals (the by-destination topic, partition by partition). Account
    features are always computed in event-time order (a Kafka partition keeps each
    account's order); fan-in depends on the order in which payments *to one destination*
    reach its partition, which with several input partitions can differ from event time.
    Given that order, replay reproduces the worker exactly; verdicts come back in it.

    ``reports`` (labels): each takes effect at its ``reported_at``, interleaved in event
    time with the withdrawals, as in the worker (``feedback``: what they do).

    ``score_from`` (epoch s): withdrawals before it only build state (a warm backtest:
    history, then the period under test); only the later ones are decided and returned.

    ``jobs``: 1 (one process) or 2 (the account stage in a forked child, see the module);
    None chooses (:func:`replay_jobs`). ``destination_order`` always runs in one process.
    """
    started = time.perf_counter()
    decider = Decider(model, hold_seconds=hold_seconds, feedback=feedback, structuring=structuring)
    state = FeatureState(model.params, structuring=structuring, feedback=feedback)
    verdicts: list[dict[str, Any]] = []
    scores: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    labels: list[str | None] = []
    chunk: list[Pending] = []
    stamp = time.time() if now is None else now

    published = state.decided = _Published()

    def flush() -> None:
        decided = decider.decide(chunk, now=stamp)
        for item, verdict in zip(chunk, decided, strict=True):
            if item.decided is None:
                published[item.event.withdrawal_id] = verdict
        verdicts.extend(decided)
        scores.append(decider.last_scores)
        rows.append(decider.last_rows)
        chunk.clear()

    if not isinstance(events, Sequence):
        events = list(events)
    if replay_jobs(jobs, len(events), destination_order) == 2:
        items = _pipelined(state, events, reports)
    else:
        items = _items(state, events, destination_order, reports)
    for item in items:
        if score_from is not None and item.event.requested_at < score_from:
            continue  # warm-up: the state moved, nothing is decided
        chunk.append(item)
        labels.append(item.event.label)
        if len(chunk) >= CHUNK:
            flush()
    if chunk:
        flush()
    return ReplayResult(
        verdicts,
        np.concatenate(scores) if scores else np.empty(0),
        labels,
        time.perf_counter() - started,
        np.concatenate(rows) if rows else np.empty((0, len(model.feature_names))),
    )


class _Published(dict[str, Any]):
    """The verdicts on record, as documents: encoded (as the worker keeps them) only when a
    repeat of a withdrawal reads its verdict; replay never changes a document it returned."""

    def get(self, key: str, default: Any = None) -> Any:
        doc = super().get(key)
        return default if doc is None else verdict_text(doc)


def _label_schedule(
    events: Sequence[Withdrawal], reports: Sequence[Label]
) -> dict[int, list[Label]]:
    """Position of an event -> the labels applied just before it: each label at its
    ``reported_at``, before a withdrawal at the same instant, in order (labels after the last
    withdrawal change nothing that is decided). One schedule for the one-process replay and
    for both processes of the two-process one."""
    pending = sorted(reports, key=lambda label: label.reported_at)
    due: dict[int, list[Label]] = {}
    i = 0
    for k, event in enumerate(events):
        while i < len(pending) and pending[i].reported_at <= event.requested_at:
            due.setdefault(k, []).append(pending[i])
            i += 1
        if i == len(pending):
            break
    return due


def _items(
    state: FeatureState,
    events: Sequence[Withdrawal],
    destination_order: Sequence[str] | None,
    reports: Sequence[Label],
) -> Iterator[Pending]:
    """Both stages in event-time order, labels applied at their ``reported_at`` (before a
    withdrawal at the same instant); or stage 1 in event-time order, then stage 2 in the
    worker's destination order (every withdrawal must be in it)."""
    if destination_order is None:
        due = _label_schedule(events, reports)
        for k, event in enumerate(events):
            for label in due.get(k, ()):
                state.label(label)
            yield state.step(event)
        return
    if reports:
        raise ValueError("destination_order and reports cannot be combined")
    first: dict[str, tuple[Withdrawal, AccountFeatures]] = {}
    for event in events:
        acc = state.account(event)
        first.setdefault(event.withdrawal_id, (event, acc))
    missing = set(first) - set(destination_order)
    if missing:
        raise ValueError(f"{len(missing)} withdrawals are not in destination_order")
    for wid in dict.fromkeys(destination_order):
        if wid in first:
            event, acc = first[wid]
            yield state.destination(event, acc)


# Features cross from the child in messages of this many events: a small first message
# starts this process early; a reader thread takes them as they come, so the child never
# waits for this process (scoring still goes by CHUNK, the batches of one process).
MESSAGE = 512


def _pipelined(
    state: FeatureState, events: Sequence[Withdrawal], reports: Sequence[Label]
) -> Iterator[Pending]:
    """As :func:`_items` without ``destination_order``, the account stage in a forked child
    that inherits ``events`` and the label schedule; this process runs the destination stage
    on the account features as they come (a label's account part is applied in the child,
    its destination part here, both before the same withdrawal)."""
    due = _label_schedule(events, reports)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_account_stage,
        args=(
            sender,
            receiver,
            events,
            due,
            state.params,
            state.structuring,
            state.feedback,
        ),
        name="replay-accounts",
        daemon=True,
    )
    child.start()
    sender.close()
    inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    reader = threading.Thread(target=_read, args=(receiver, inbox), daemon=True)
    reader.start()
    try:
        make = AccountFeatures._make
        destination = state.destination
        for start in range(0, len(events), MESSAGE):
            message = inbox.get()
            if message is None:
                child.join()
                raise ReplayError(
                    f"replay: the account stage's process ended early (exit code {child.exitcode})"
                )
            accounts = pickle.loads(message)
            if isinstance(accounts, str):
                raise ReplayError(f"replay: the account stage failed:\n{accounts}")
            batch = events[start : start + MESSAGE]
            for k, (event, values) in enumerate(zip(batch, accounts, strict=True), start):
                for label in due.get(k, ()):
                    state.destination_label(label)
                yield destination(event, make(values))
        child.join()
    finally:  # also when this process stopped early (an error, or its caller left)
        if child.is_alive():
            child.kill()
        child.join()
        reader.join()  # the child's end is closed: the reader saw the end of the pipe
        receiver.close()


def _read(receiver: Connection, inbox: queue.SimpleQueue[bytes | None]) -> None:
    """The reader thread: every message of the child, then None."""
    try:
        while True:
            inbox.put(receiver.recv_bytes())
    except (EOFError, OSError):
        inbox.put(None)


def _account_stage(
    sender: Connection,
    inherited: Connection,
    events: Sequence[Withdrawal],
    due: dict[int, list[Label]],
    params: FeatureParams,
    structuring: Structuring | None,
    feedback: Feedback,
) -> None:
    """The child: stage 1 over ``events`` (labels' account parts where ``due`` says),
    the features sent as plain tuples, :data:`MESSAGE` events a message (a traceback's text
    instead when it fails).

    Ctrl-C is the parent's to handle (it stops this process). The pipe's reading end, which
    the fork copied here, is closed: if the parent dies (kill -9, the OOM killer), the next
    send fails and this process ends instead of waiting forever for a reader."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inherited.close()
    try:
        state = FeatureState(params, structuring=structuring, feedback=feedback)
        account = state.account
        for start in range(0, len(events), MESSAGE):
            features: list[tuple[Any, ...]] = []
            for k, event in enumerate(events[start : start + MESSAGE], start):
                for label in due.get(k, ()):
                    state.account_label(label)
                features.append(tuple(account(event)))
            sender.send_bytes(pickle.dumps(features, pickle.HIGHEST_PROTOCOL))
    except BaseException:  # whatever it is, the parent raises it with this traceback
        with contextlib.suppress(OSError):  # unless the parent is gone already
            sender.send_bytes(pickle.dumps(traceback.format_exc(), pickle.HIGHEST_PROTOCOL))
    finally:
        sender.close()


def quality_report(
    verdicts: Sequence[dict[str, Any]], labels: Sequence[str | None]
) -> dict[str, Any]:
    """Counts, and when labels exist: normal flagged rate, attack recall, recall by scenario."""
    tally = Tally()
    for verdict, label in zip(verdicts, labels, strict=True):
        tally.add(verdict["verdict"], label)
    return tally.report()


def write_verdicts(verdicts: Iterable[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for verdict in verdicts:
            out.write(verdict_text(verdict))
            out.write("\n")
