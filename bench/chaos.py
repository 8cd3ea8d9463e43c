"""Chaos harness: real workers, real Kafka, disruptions, then an audit of every verdict.

    python bench/chaos.py [--n 20000] [--partitions 4] [--workers 2] [--rate R]
                          [--schedule kill,kill] [--victim last|alternate]
                          [--restart-after 5] [--settle 40] [--warmup 15]
                          [--set session_timeout_s=10 ...] [--static] [--own-broker]
                          [--worker-src DIR] [--trace] [--keep] [--dump] [--ci]

What it does, in order:

1. Broker: the running one (``KAFKA_BOOTSTRAP_SERVERS``, default 127.0.0.1:9092), or with
   ``--own-broker`` (forced when the schedule has a ``broker`` step) its own single-node
   Kafka on 127.0.0.1:19092 (data in ``.detector-chaos``), stopped at the end. A broker
   restart is never done to a broker this script did not start.
2. Topics of its own (``topic_specs`` of an isolated app id), deleted at the end.
3. ``--n`` realistic withdrawals from ``detector.offline.simulate`` (attacks included, so
   verdicts depend on state and a double-applied event can flip a verdict), streamed by a
   kafka-python producer (acks=all, idempotent, retries through a broker outage) at a rate
   that spreads them over the whole schedule (``--rate`` overrides).
4. ``--workers`` real ``python -m detector worker`` processes in one group, then the
   schedule, one step after another (``--warmup`` s after the first verdicts):

   ``kill``    SIGKILL one worker (``--victim``), restart it after ``--restart-after`` s,
               wait ``--settle`` s
   ``add``     start one more worker (graceful join), wait ``--settle`` s
   ``remove``  SIGTERM the newest worker (graceful leave), wait ``--settle`` s
   ``broker``  restart the own broker (down ``--broker-down`` s), wait ``--settle`` s
   ``sleep:S`` wait S seconds

   A monitor thread describes the consumer group every 0.5 s (members, the web URL that
   Faust's assignor puts in each member's metadata, their partitions): that is how a kill
   knows the victim's partitions and when the dead member left the group.
5. Drain: wait until every withdrawal has a verdict, or no new verdict came for
   ``--drain-timeout`` s. Workers are stopped (SIGTERM).
6. Audit with a second client (kafka-python, from the beginning): the withdrawals, the
   repartition topic, every verdict, the group's committed offsets. Reports withdrawals
   sent, lost (no verdict; split into never forwarded / forwarded but not decided, with
   partition, offset and the group's committed offset), duplicate verdict messages, how
   many are byte-identical, contradictions (same withdrawal_id, different ``verdict``),
   and per step: failover (kill -> first verdict of a withdrawal produced after the kill
   whose account *and* destination partition the victim owned, i.e. both stages resumed),
   the longest verdict gap on any decisions partition, and when the group evicted the
   dead member.

``--set FIELD=VALUE`` overrides any :class:`detector.config.Settings` field of the workers
(e.g. the consumer-group timings); ``--static`` gives each worker slot its own
``group_instance_id``; ``--worker-src DIR`` runs the workers from another source tree (an
export of another commit: before/after in one session); ``--trace`` makes the workers log
acks, commits, holes, seeks and rebalances (``bench/chaos_trace``); ``--keep`` keeps the
topics for inspection; ``--dump`` writes what the audit read (withdrawals, forwards with
their account features, verdicts, labels, kill times) to ``<run dir>/dump/*.jsonl``, to
diff a replay mismatch stage by stage. Every topic is the run's own (``chaos-<run>-*``,
labels and shadow verdicts included) and only those are deleted at the end. ``--ci`` is a
small run for a broker test (~2-3 min):
2,000 withdrawals, two workers, one kill; exit status 1 when a withdrawal is lost, a
duplicate contradicts (with ``--max-contradictions``), or failover exceeds
``--max-failover``. The summary is printed and written to ``<run dir>/result.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

from detector.config import Settings, child_environment  # noqa: E402
from detector.local import broker as local_broker  # noqa: E402
from detector.local.process import stop_process, wait_exit  # noqa: E402
from detector.offline import simulate  # noqa: E402
from detector.stream.app import topic_specs  # noqa: E402
from detector.stream.compat import import_kafka  # noqa: E402
from detector.stream.topics import admin_client, delete_topics, ensure_topics  # noqa: E402

OWN_PORT = 19092
OWN_CONTROLLER_PORT = 19093
OWN_DATA_DIR = REPO / ".detector-chaos"
READY_TIMEOUT_S = 120.0
GROUP_POLL_S = 0.5
_URL_RE = re.compile(r'"url":\s*"([^"]+)"')
_EVENTS_PER_ACCOUNT = 30  # simulate gives ~2.5 withdrawals per account-day over 14 days


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------- workers


@dataclass
class Worker:
    """One ``detector worker`` process slot (restartable: same settings, same web port)."""

    name: str
    settings: Settings
    log_path: Path
    log_level: str
    extra_env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def start(self) -> None:
        env = child_environment(self.settings, DETECTOR_LOG_LEVEL=self.log_level, **self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log_path.open("ab") as out:
            out.write(f"\n===== chaos: start #{self.starts} at {time.time():.3f} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "detector", "worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        began = time.monotonic()
        while not _answers_200(self.url + "/readyz"):
            if not self.alive():
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            if time.monotonic() - began > timeout:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s")
            time.sleep(0.2)
        return time.monotonic() - began

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        wait_exit(self.proc.pid, 10.0)
        with contextlib.suppress(ChildProcessError):
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except OSError:
        return False


# --------------------------------------------------------------------------- group monitor


@dataclass
class GroupSnapshot:
    t: float
    state: str
    members: dict[str, tuple[str, frozenset[int]]]  # member_id -> (web url, input partitions)


class GroupMonitor(threading.Thread):
    """Describes the consumer group every 0.5 s; keeps every snapshot (for the audit)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        super().__init__(daemon=True, name="group-monitor")
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.snapshots: list[GroupSnapshot] = []
        self.stopping = threading.Event()
        self.errors = 0
        self.raw_sample: Any = None

    def run(self) -> None:
        admin_cm: Any = None
        admin: Any = None
        while not self.stopping.is_set():
            try:
                if admin is None:
                    admin_cm = admin_client(self.bootstrap, timeout=5.0)
                    admin = admin_cm.__enter__()
                described = admin.describe_groups([self.group])[self.group]
                if self.raw_sample is None and described.get("members"):
                    self.raw_sample = described
                self.snapshots.append(self._snapshot(described))
            except Exception:
                self.errors += 1
                if admin_cm is not None:
                    with contextlib.suppress(Exception):
                        admin_cm.__exit__(None, None, None)
                admin_cm = admin = None
            self.stopping.wait(GROUP_POLL_S)
        if admin_cm is not None:
            with contextlib.suppress(Exception):
                admin_cm.__exit__(None, None, None)

    def _snapshot(self, described: dict[str, Any]) -> GroupSnapshot:
        members: dict[str, tuple[str, frozenset[int]]] = {}
        for member in described.get("members") or []:
            # Faust's assignor puts its web URL in the subscription's user data (JSON);
            # kafka-python 3.0 leaves that metadata undecoded (str/bytes) outside Stable.
            metadata = member.get("member_metadata")
            if isinstance(metadata, bytes):
                metadata = metadata.decode("latin-1")
            found = _URL_RE.search(str(metadata or ""))
            url = found.group(1) if found else ""
            parts: set[int] = set()
            assignment = member.get("member_assignment") or {}
            entries = (
                assignment.get("assigned_partitions", []) if isinstance(assignment, dict) else []
            )
            for entry in entries:
                topic, partitions = _topic_partitions(entry)
                if topic == self.topic:
                    parts.update(partitions)
            members[str(member.get("member_id"))] = (url, frozenset(parts))
        return GroupSnapshot(time.time(), str(described.get("group_state", "?")), members)

    def latest(self) -> GroupSnapshot | None:
        return self.snapshots[-1] if self.snapshots else None

    def partitions_of(self, url: str) -> frozenset[int]:
        snap = self.latest()
        if snap is None:
            return frozenset()
        owned: set[int] = set()
        for member_url, parts in snap.members.values():
            if member_url.rstrip("/") == url.rstrip("/"):
                owned |= parts
        return frozenset(owned)

    def members_of(self, url: str) -> set[str]:
        snap = self.latest()
        if snap is None:
            return set()
        return {m for m, (u, _) in snap.members.items() if u.rstrip("/") == url.rstrip("/")}


def _topic_partitions(entry: Any) -> tuple[str, list[int]]:
    if isinstance(entry, dict):
        return str(entry.get("topic")), list(entry.get("partitions") or [])
    topic, partitions = entry
    return str(topic), list(partitions)


# --------------------------------------------------------------------------------- traffic


def make_events(n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` (by event time) withdrawals of a simulated population."""
    accounts = max(150, math.ceil(n / _EVENTS_PER_ACCOUNT))
    events: list[dict[str, Any]] = []
    while len(events) < n:
        attacks = max(2, min(8, accounts // 60))
        events = simulate.generate(
            simulate.SimConfig(accounts=accounts, days=14, seed=seed, attacks_per_scenario=attacks)
        )
        accounts = math.ceil(accounts * 1.3)
    return events[:n]


class Streamer(threading.Thread):
    """Sends the events at a fixed rate (acks=all, idempotent, retries through outages)."""

    def __init__(self, bootstrap: list[str], topic: str, events: list[dict[str, Any]], rate: float):
        super().__init__(daemon=True, name="streamer")
        self.bootstrap, self.topic, self.events, self.rate = bootstrap, topic, events, rate
        self.sent = 0
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            retries=2**31 - 1,
            delivery_timeout_ms=600_000,
            request_timeout_ms=30_000,
        )
        began = time.monotonic()
        try:
            for i, event in enumerate(self.events):
                due = began + i / self.rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                future = producer.send(
                    self.topic,
                    key=event["account_id"].encode(),
                    value=simulate.encode_event(event),
                )
                future.add_errback(lambda exc: self.errors.append(repr(exc)))
                self.sent = i + 1
            producer.flush(600)
        finally:
            producer.close(30)
            self.done.set()


# ---------------------------------------------------------------------------- Kafka reads


def read_topic(bootstrap: list[str], topic: str, timeout: float = 120.0) -> list[Any]:
    """Every record of ``topic`` from the beginning to the end offsets seen at the start."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                out.extend(records)
                if records and records[-1].offset + 1 >= end[tp]:
                    remaining.discard(tp)
            remaining = {tp for tp in remaining if consumer.position(tp) < end[tp]}
        return out
    finally:
        consumer.close()


def end_offsets(bootstrap: list[str], topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    with admin_client(bootstrap) as admin:
        got = admin.list_group_offsets(group).get(group, {})
    return {(tp.topic, tp.partition): int(meta.offset) for tp, meta in got.items()}


class VerdictWatcher(threading.Thread):
    """Tails the decisions topic so the run knows when every withdrawal has a verdict."""

    def __init__(self, bootstrap: list[str], topic: str) -> None:
        super().__init__(daemon=True, name="verdict-watcher")
        self.bootstrap, self.topic = bootstrap, topic
        self.ids: set[str] = set()
        self.messages = 0
        self.last_new = time.monotonic()
        self.stopping = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        try:
            while not self.stopping.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        self.messages += 1
                        with contextlib.suppress(Exception):
                            wid = json.loads(record.value)["withdrawal_id"]
                            if wid not in self.ids:
                                self.ids.add(wid)
                                self.last_new = time.monotonic()
        finally:
            consumer.close()


# ------------------------------------------------------------------------------- schedule


@dataclass
class StepRecord:
    step: str
    t: float  # wall clock (time.time) of the disruption
    t_end: float = 0.0
    worker: str = ""
    partitions: frozenset[int] = frozenset()
    members: set[str] = field(default_factory=set)
    note: str = ""


def parse_schedule(text: str) -> list[str]:
    steps = [s.strip() for s in text.split(",") if s.strip()]
    for step in steps:
        name, _, arg = step.partition(":")
        if name not in {"kill", "add", "remove", "broker", "sleep"}:
            raise SystemExit(f"unknown schedule step {step!r} (kill, add, remove, broker, sleep:S)")
        if name == "sleep" and not arg:
            raise SystemExit("sleep needs seconds: sleep:10")
    return steps


def step_seconds(step: str, args: argparse.Namespace) -> float:
    name, _, arg = step.partition(":")
    if name == "sleep":
        return float(arg)
    if name == "kill":
        return args.restart_after + 6.0 + args.settle
    if name == "broker":
        return args.broker_down + 10.0 + args.settle
    return 6.0 + args.settle


class Chaos:
    def __init__(self, args: argparse.Namespace, settings: Settings, run_dir: Path) -> None:
        self.args, self.settings, self.run_dir = args, settings, run_dir
        self.workers: list[Worker] = []
        self.steps: list[StepRecord] = []
        self.monitor = GroupMonitor(
            settings.bootstrap_servers, settings.app_id, settings.topic_withdrawals
        )
        self.own_broker: Settings | None = None
        self.t0 = time.time()

    def new_worker(self) -> Worker:
        from kafka_io import free_port

        index = len(self.workers)
        settings = replace(
            self.settings, web_port=free_port(), data_dir=self.run_dir / f"w{index}" / "data"
        )
        if self.args.static:  # one stable id per worker slot: a restart reuses it
            settings = replace(settings, group_instance_id=f"{settings.app_id}-w{index}")
        worker = Worker(f"w{index}", settings, self.run_dir / f"w{index}.log", self.args.log_level)
        paths = [os.environ.get("PYTHONPATH", "")]
        if self.args.worker_src:  # e.g. an export of another commit: A/B in one session
            worker.cwd = self.args.worker_src.resolve()  # `python -m` puts the cwd first
            paths.insert(0, str(worker.cwd))
        if self.args.trace:
            paths.insert(0, str(REPO / "bench" / "chaos_trace"))
            worker.extra_env["CHAOS_TRACE_DIR"] = str(self.run_dir)
        if any(paths):
            worker.extra_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.workers.append(worker)
        return worker

    def running(self) -> list[Worker]:
        return [w for w in self.workers if w.alive()]

    def victim(self, kill_number: int) -> Worker:
        running = self.running()
        if self.args.victim == "alternate":
            return running[kill_number % len(running)]
        return running[-1]  # "last": the most recently started of the running ones

    def run_step(self, step: str, kill_number: int) -> None:
        name, _, arg = step.partition(":")
        if name == "sleep":
            time.sleep(float(arg))
            return
        record = StepRecord(step, time.time())
        if name == "kill":
            worker = self.victim(kill_number)
            record.worker = worker.name
            record.partitions = self.monitor.partitions_of(worker.url)
            record.members = self.monitor.members_of(worker.url)
            record.t = time.time()
            worker.kill()
            log(f"kill -9 {worker.name} (owned input partitions {sorted(record.partitions)})")
            time.sleep(self.args.restart_after)
            worker.start()
            ready = worker.wait_ready()
            record.note = f"restarted after {self.args.restart_after:.0f} s, ready in {ready:.1f} s"
            log(f"{worker.name} {record.note}")
        elif name == "add":
            worker = self.new_worker()
            record.worker = worker.name
            worker.start()
            ready = worker.wait_ready()
            record.note = f"ready in {ready:.1f} s"
            log(f"added {worker.name} ({record.note})")
        elif name == "remove":
            worker = self.running()[-1]
            record.worker = worker.name
            record.partitions = self.monitor.partitions_of(worker.url)
            record.t = time.time()
            began = time.monotonic()
            worker.stop()
            record.note = f"SIGTERM, exited in {time.monotonic() - began:.1f} s"
            log(f"removed {worker.name} ({record.note})")
        elif name == "broker":
            assert self.own_broker is not None
            local_broker.stop(self.own_broker, log=log)
            time.sleep(self.args.broker_down)
            local_broker.start(self.own_broker, log=log)
            record.note = f"down {self.args.broker_down:.0f} s"
        self.steps.append(record)
        time.sleep(self.args.settle)
        record.t_end = time.time()


# ---------------------------------------------------------------------------------- audit


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def longest_gap(times: list[float], start: float, end: float) -> float:
    """Longest interval in [start, end] without a timestamp (start and end count as edges)."""
    inside = sorted(t for t in times if start <= t <= end)
    edges = [start, *inside, end]
    return max(b - a for a, b in itertools.pairwise(edges)) if end > start else 0.0


def audit(chaos: Chaos, events: list[dict[str, Any]]) -> dict[str, Any]:
    settings = chaos.settings
    boot = settings.bootstrap_list
    inputs = read_topic(boot, settings.topic_withdrawals)
    forwards = read_topic(boot, settings.topic_by_destination)
    decisions = read_topic(boot, settings.topic_decisions)
    dlq = read_topic(boot, settings.topic_dlq)
    committed = committed_offsets(settings.bootstrap_servers, settings.app_id)
    if chaos.args.dump:
        _dump(chaos, events, inputs, forwards, decisions)
    ends = {
        topic: end_offsets(boot, topic)
        for topic in (settings.topic_withdrawals, settings.topic_by_destination)
    }

    where: dict[str, tuple[int, int, float]] = {}  # id -> (partition, offset, produced at)
    for record in inputs:
        wid = json.loads(record.value)["withdrawal_id"]
        where.setdefault(wid, (record.partition, record.offset, record.timestamp / 1000))
    forwarded: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    stage2_order: list[str] = []  # withdrawal ids in the order the destination stage took them
    for record in sorted(forwards, key=lambda r: (r.partition, r.offset)):
        doc = json.loads(record.value)
        for item in doc.get("items", [doc]):
            if "e" not in item:
                continue  # a label
            wid = item["e"]["withdrawal_id"]
            forwarded[wid].append((record.partition, record.offset, record.timestamp / 1000))
            stage2_order.append(wid)
    verdicts: dict[str, list[bytes]] = defaultdict(list)
    first_verdict: dict[str, float] = {}
    verdict_times: dict[int, list[float]] = defaultdict(list)
    for record in decisions:
        wid = json.loads(record.value)["withdrawal_id"]
        verdicts[wid].append(record.value)
        ts = record.timestamp / 1000
        first_verdict[wid] = min(first_verdict.get(wid, ts), ts)
        verdict_times[record.partition].append(ts)

    expected = {e["withdrawal_id"] for e in events}
    lost_ids = sorted(expected - set(verdicts))
    lost = []
    for wid in lost_ids:
        part, offset, _ = where.get(wid, (-1, -1, 0.0))
        item: dict[str, Any] = {
            "withdrawal_id": wid,
            "input": f"{settings.topic_withdrawals}[{part}]@{offset}",
            "input_committed": committed.get((settings.topic_withdrawals, part)),
        }
        if forwarded.get(wid):
            fpart, foff, _ = forwarded[wid][0]
            item["stage"] = "forwarded, never decided"
            item["forward"] = f"by-destination[{fpart}]@{foff} (x{len(forwarded[wid])})"
            item["forward_committed"] = committed.get((settings.topic_by_destination, fpart))
        else:
            item["stage"] = "never forwarded" if wid in where else "never produced"
        lost.append(item)

    duplicate_messages = sum(len(v) - 1 for v in verdicts.values())
    identical = sum(sum(1 for x in v[1:] if x == v[0]) for v in verdicts.values())
    contradictions = [
        wid for wid, v in verdicts.items() if len({json.loads(x)["verdict"] for x in v}) > 1
    ]
    different_score = sum(
        1 for v in verdicts.values() if len({json.loads(x)["score"] for x in v}) > 1
    )
    latencies = [first_verdict[w] - where[w][2] for w in first_verdict if w in where]
    replay_mismatches = _replay_mismatches(settings, events, stage2_order, verdicts)

    not_at_end = {
        f"{topic}[{p}]": (committed.get((topic, p)), end)
        for topic, by_part in ends.items()
        for p, end in by_part.items()
        if committed.get((topic, p)) != end
    }

    dest_part = {wid: f[0][0] for wid, f in forwarded.items()}
    steps = []
    all_times = [t for ts in verdict_times.values() for t in ts]
    for i, record in enumerate(chaos.steps):
        next_t = chaos.steps[i + 1].t if i + 1 < len(chaos.steps) else max(all_times, default=0)
        row: dict[str, Any] = {
            "step": record.step,
            "worker": record.worker,
            "at_s": round(record.t - chaos.t0, 1),
            "partitions": sorted(record.partitions),
            "note": record.note,
        }
        gaps = {p: longest_gap(ts, record.t, next_t) for p, ts in verdict_times.items()}
        row["max_verdict_gap_s"] = round(max(gaps.values(), default=0.0), 1)
        if record.step == "kill" and record.partitions:
            owned = record.partitions
            both = [
                first_verdict[w] - record.t
                for w in first_verdict
                if w in where
                and where[w][2] > record.t
                and where[w][0] in owned
                and dest_part.get(w) in owned
            ]
            acc = [
                first_verdict[w] - record.t
                for w in first_verdict
                if w in where and where[w][2] > record.t and where[w][0] in owned
            ]
            row["failover_s"] = round(min(both), 1) if both else None
            row["failover_accounts_stage_s"] = round(min(acc), 1) if acc else None
            row["dead_member_evicted_s"] = evicted_after(chaos.monitor, record)
        steps.append(row)

    return {
        "sent": len(events),
        "inputs_in_topic": len(where),
        "verdict_messages": len(decisions),
        "with_verdict": len(expected & set(verdicts)),
        "lost": len(lost),
        "lost_detail": lost,
        "duplicate_messages": duplicate_messages,
        "duplicates_identical": identical,
        "duplicates_different_score": different_score,
        "contradictions": len(contradictions),
        "contradiction_examples": contradictions[:5],
        "replay_mismatches": len(replay_mismatches),
        "replay_mismatch_examples": replay_mismatches[:5],
        "dlq": len(dlq),
        "forward_messages": len(forwards),
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p99_s": round(percentile(latencies, 99), 3),
        "latency_max_s": round(max(latencies, default=float("nan")), 1),
        "group_committed_to_end": not not_at_end,
        "group_not_at_end": {k: list(v) for k, v in not_at_end.items()},
        "steps": steps,
    }


def _dump(
    chaos: Chaos, events: list[dict[str, Any]], inputs: list[Any], *topics: list[Any]
) -> None:
    """``--dump``: the run's raw material for offline analysis (``dump/*.jsonl``)."""
    out = chaos.run_dir / "dump"
    out.mkdir(exist_ok=True)
    with (out / "events.jsonl").open("w") as f:
        for event in events:
            f.write(json.dumps(event, default=str) + "\n")
    labels = read_topic(chaos.settings.bootstrap_list, chaos.settings.topic_labels)
    names = ("inputs", "forwards", "decisions", "labels")
    for name, records in zip(names, (inputs, *topics, labels), strict=True):
        with (out / f"{name}.jsonl").open("w") as f:
            for r in records:
                row = {"p": r.partition, "o": r.offset, "ts": r.timestamp}
                row["v"] = r.value.decode() if name != "inputs" else None
                row["k"] = r.key.decode() if r.key is not None else None
                f.write(json.dumps(row) + "\n")
    steps = [
        {"step": s.step, "t": s.t, "worker": s.worker, "parts": sorted(s.partitions)}
        for s in chaos.steps
    ]
    (out / "steps.json").write_text(json.dumps({"t0": chaos.t0, "steps": steps}))


def evicted_after(monitor: GroupMonitor, record: StepRecord) -> float | None:
    """Seconds from the kill until no snapshot lists the victim's old member id(s)."""
    if not record.members:
        return None
    for snap in monitor.snapshots:
        if snap.t >= record.t and not (record.members & set(snap.members)):
            return round(snap.t - record.t, 1)
    return None


# ---------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Chaos harness for the detector workers (see the module docstring)."
    )
    parser.add_argument("--n", type=int, default=20_000, help="withdrawals to stream")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="workers at the start")
    parser.add_argument("--schedule", default="kill,kill", help="kill,add,remove,broker,sleep:S")
    parser.add_argument("--victim", choices=["last", "alternate"], default="last")
    parser.add_argument(
        "--restart-after", type=float, default=5.0, help="s a killed one stays dead"
    )
    parser.add_argument("--settle", type=float, default=40.0, help="s after each step")
    parser.add_argument("--warmup", type=float, default=15.0, help="s of traffic before step 1")
    parser.add_argument("--tail", type=float, default=10.0, help="s of traffic after the last step")
    parser.add_argument("--broker-down", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=None, help="events/s (default: spread)")
    parser.add_argument("--drain-timeout", type=float, default=150.0, help="s without progress")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--own-broker", action="store_true", help="own broker on 19092")
    parser.add_argument(
        "--static", action="store_true", help="static group membership (group_instance_id)"
    )
    parser.add_argument("--keep", action="store_true", help="keep topics (for inspection)")
    parser.add_argument(
        "--dump", action="store_true", help="write the audited records to <run dir>/dump"
    )
    parser.add_argument("--log-level", default="info", help="workers' log level")
    parser.add_argument(
        "--trace", action="store_true", help="workers write acks/commits/rebalances (chaos_trace)"
    )
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument(
        "--worker-src",
        type=Path,
        default=None,
        help="run the workers from this source tree (a directory holding `detector/`, e.g. "
        "`git archive <commit> detector | tar -x -C DIR`): before/after in one session",
    )
    parser.add_argument("--ci", action="store_true", help="small run with pass/fail exit status")
    parser.add_argument("--max-failover", type=float, default=None, help="fail above this (s)")
    parser.add_argument("--max-contradictions", type=int, default=None)
    parser.add_argument(
        "--max-replay-mismatches",
        type=int,
        default=0,
        help="with --ci: first verdicts allowed to differ from replay (default 0)",
    )
    args = parser.parse_args(argv)
    if args.ci:  # smaller defaults, for the options not given (given = kept, default or not)
        given = {a.partition("=")[0] for a in (sys.argv[1:] if argv is None else argv)}
        defaults = {
            "n": 2000,
            "schedule": "kill",
            "settle": 25.0,
            "warmup": 10.0,
            "tail": 5.0,
            "drain_timeout": 60.0,
        }
        for key, value in defaults.items():
            if f"--{key.replace('_', '-')}" not in given:
                setattr(args, key, value)
    return args


def settings_overrides(pairs: list[str]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {pair!r}: not FIELD=VALUE with a Settings field")
        kind = str(fields[name].type)
        conv: Callable[[str], Any] = {"int": int, "float": float, "Path": Path}.get(kind, str)
        out[name] = conv(raw)
    return out


@contextlib.contextmanager
def broker_for(
    args: argparse.Namespace, schedule: list[str]
) -> Iterator[tuple[str, Settings | None]]:
    wants_own = args.own_broker or any(s.startswith("broker") for s in schedule)
    if not wants_own:
        bootstrap = Settings.from_env().bootstrap_servers
        local_broker.wait_ready(bootstrap, 30.0)
        yield bootstrap, None
        return
    own = replace(
        Settings(),
        data_dir=OWN_DATA_DIR,
        kafka_port=OWN_PORT,
        kafka_controller_port=OWN_CONTROLLER_PORT,
    )
    local_broker.start(own, log=log)
    try:
        yield f"127.0.0.1:{OWN_PORT}", own
    finally:
        local_broker.stop(own, log=log)


def _replay_mismatches(
    settings: Settings,
    events: list[dict[str, Any]],
    stage2_order: list[str],
    verdicts: dict[str, list[bytes]],
) -> list[dict[str, Any]]:
    """Withdrawals whose (first) verdict differs from `replay` over the same events, with the
    destination stage's order taken from the by-destination topic (README: "the same as
    replay"): verdict, score and reasons must match exactly.

    Replay gets every withdrawal the account stage processed, i.e. every one that was
    forwarded, decided or not: a withdrawal forwarded but never decided (lost) still
    counts in its account's history and its destination's fan-in for the later ones, so
    leaving it out would report their verdicts as mismatches. Only decided ones are
    compared."""
    from detector.events import validate_withdrawal
    from detector.model import Model
    from detector.offline.replay import replay

    seen = set(stage2_order)
    processed = [e for e in events if e["withdrawal_id"] in seen]
    if not processed or any(wid not in seen for wid in verdicts):
        return []  # nothing to compare (a lost withdrawal is reported on its own)
    withdrawals = [validate_withdrawal(e) for e in processed]
    offline = replay(
        withdrawals,
        Model.load(settings.model_dir),
        hold_seconds=settings.hold_seconds,
        destination_order=stage2_order,
    )
    out = []
    for expected in offline.verdicts:
        if expected["withdrawal_id"] not in verdicts:
            continue  # forwarded, never decided: reported as lost
        actual = json.loads(verdicts[expected["withdrawal_id"]][0])
        # model_version first: a worker serving another model differs in score too.
        for name in ("model_version", "verdict", "score", "reasons"):
            if actual[name] != expected[name]:
                out.append(
                    {
                        "withdrawal_id": expected["withdrawal_id"],
                        "field": name,
                        "worker": actual[name],
                        "replay": expected[name],
                    }
                )
                break
    return out


def run_topic_names(run: str) -> dict[str, str]:
    """The run's app id and topics: all of its own. The labels and shadow topics too: their
    default names are shared with everything else on the broker, whose labels the workers
    would apply (replay sees none) and which other runs create and delete."""
    return {
        "app_id": f"chaos-{run}",
        "topic_withdrawals": f"chaos-{run}-withdrawals",
        "topic_decisions": f"chaos-{run}-decisions",
        "topic_dlq": f"chaos-{run}-dlq",
        "topic_labels": f"chaos-{run}-labels",
        "topic_decisions_shadow": f"chaos-{run}-decisions-shadow",
        "topic_review_decisions": f"chaos-{run}-review-decisions",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    import_kafka()
    schedule = parse_schedule(args.schedule)
    overrides = settings_overrides(args.set)
    run = uuid.uuid4().hex[:8]
    run_dir = args.run_dir or (REPO / ".detector-chaos" / f"run-{run}")
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"run {run}: dir {run_dir}")

    with broker_for(args, schedule) as (bootstrap, own):
        settings = replace(
            Settings(),
            bootstrap_servers=bootstrap,
            partitions=args.partitions,
            model_dir=REPO / "models" / "default",
            data_dir=run_dir / "data",
            max_event_age_s=0.0,  # simulated history, days of it streamed in minutes
            **{**run_topic_names(run), **overrides},
        )
        chaos = Chaos(args, settings, run_dir)
        chaos.own_broker = own
        specs = topic_specs(settings)
        ensure_topics(bootstrap, specs)
        try:
            return run_chaos(chaos, args, schedule, overrides, run_dir)
        finally:
            for worker in chaos.workers:
                with contextlib.suppress(Exception):
                    worker.stop()
            if not args.keep:
                with contextlib.suppress(Exception):
                    # Only the run's own topics (never a name shared with others, even
                    # when --set points one at it).
                    delete_topics(bootstrap, [s.name for s in specs if run in s.name])


def run_chaos(
    chaos: Chaos,
    args: argparse.Namespace,
    schedule: list[str],
    overrides: dict[str, Any],
    run_dir: Path,
) -> int:
    settings = chaos.settings
    events = make_events(args.n, args.seed)
    planned = args.warmup + sum(step_seconds(s, args) for s in schedule) + args.tail
    rate = args.rate or max(20.0, len(events) / planned)
    log(
        f"{len(events)} withdrawals at {rate:.0f}/s over ~{len(events) / rate:.0f} s; "
        f"{args.workers} workers, {args.partitions} partitions, schedule {','.join(schedule)}; "
        f"overrides {overrides or 'none'}"
    )
    for _ in range(args.workers):
        chaos.new_worker().start()
    for worker in chaos.workers:
        ready = worker.wait_ready()
        log(f"{worker.name} ready in {ready:.1f} s ({worker.url}, log {worker.log_path})")
    chaos.monitor.start()
    watcher = VerdictWatcher(settings.bootstrap_list, settings.topic_decisions)
    watcher.start()
    streamer = Streamer(settings.bootstrap_list, settings.topic_withdrawals, events, rate)
    chaos.t0 = time.time()
    streamer.start()
    time.sleep(args.warmup)
    kills = 0
    for step in schedule:
        log(f"step {step}: sent {streamer.sent}, verdicts {len(watcher.ids)}")
        chaos.run_step(step, kills)
        kills += step == "kill"
    streamer.done.wait()
    log(f"all {streamer.sent} sent (producer errors: {len(streamer.errors)}); draining")
    while len(watcher.ids) < len(events):
        if time.monotonic() - watcher.last_new > args.drain_timeout:
            log(f"no new verdict for {args.drain_timeout:.0f} s: stop waiting")
            break
        time.sleep(1.0)
    time.sleep(5.0)  # duplicates and final commits
    if args.trace:  # stack dumps of every worker (bench/chaos_trace), e.g. for stuck ones
        for worker in chaos.running():
            assert worker.proc is not None
            (run_dir / f"dump-{worker.proc.pid}.req").touch()
        time.sleep(3.0)
    for worker in chaos.running():
        worker.stop()
    chaos.monitor.stopping.set()
    watcher.stopping.set()
    result = audit(chaos, events)
    result["config"] = {
        "n": len(events),
        "rate": round(rate, 1),
        "workers": args.workers,
        "partitions": args.partitions,
        "schedule": schedule,
        "overrides": {k: str(v) for k, v in overrides.items()},
        "static": args.static,
        "worker_src": str(args.worker_src or REPO),
        "producer_errors": len(streamer.errors),
        "run_dir": str(run_dir),
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print_summary(result)
    return verdict_of(result, args)


def verdict_of(result: dict[str, Any], args: argparse.Namespace) -> int:
    problems = []
    if result["lost"]:
        problems.append(f"{result['lost']} withdrawals without verdict")
    if args.max_contradictions is not None and result["contradictions"] > args.max_contradictions:
        problems.append(f"{result['contradictions']} contradictions")
    if args.ci:
        different = result["duplicate_messages"] - result["duplicates_identical"]
        if different:
            problems.append(f"{different} duplicate verdicts are not byte-identical")
        if result["replay_mismatches"] > args.max_replay_mismatches:
            problems.append(f"{result['replay_mismatches']} verdicts differ from replay")
    if args.max_failover is not None:
        for step in result["steps"]:
            failover = step.get("failover_s")
            if step["step"] == "kill" and (failover is None or failover > args.max_failover):
                problems.append(f"failover {failover} s > {args.max_failover} s")
    for problem in problems:
        log(f"FAIL: {problem}")
    return 1 if problems and (args.ci or args.max_failover is not None) else 0


def print_summary(r: dict[str, Any]) -> None:
    c = r["config"]
    print()
    print(
        f"=== chaos summary ({c['n']} withdrawals, {c['workers']} workers, "
        f"{c['partitions']} partitions, schedule {','.join(c['schedule'])}) ==="
    )
    print(
        f"workers from {c['worker_src']}; static membership {c.get('static')}; "
        f"overrides: {c['overrides'] or 'none'}"
    )
    print(f"run dir {c['run_dir']}")
    rows = [
        ("withdrawals sent", r["sent"]),
        ("with a verdict", r["with_verdict"]),
        ("LOST (no verdict)", r["lost"]),
        ("verdict messages", r["verdict_messages"]),
        ("duplicate verdict messages", r["duplicate_messages"]),
        ("  of which byte-identical", r["duplicates_identical"]),
        ("  withdrawals with differing scores", r["duplicates_different_score"]),
        ("CONTRADICTIONS (different verdict)", r["contradictions"]),
        ("verdicts that differ from replay", r["replay_mismatches"]),
        ("dead letters", r["dlq"]),
        ("group committed every input to its end", r["group_committed_to_end"]),
        (
            "latency p50 / p99 / max (s)",
            f"{r['latency_p50_s']} / {r['latency_p99_s']} / {r['latency_max_s']}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if r["lost_detail"]:
        print("lost withdrawals:")
        for item in r["lost_detail"]:
            print(f"  {item}")
    if r["group_not_at_end"]:
        print(f"not committed to end: {r['group_not_at_end']}")
    print()
    header = (
        f"  {'step':<8} {'at s':>6} {'worker':<6} {'parts':<10} {'failover s':>10} "
        f"{'acc. stage s':>12} {'evicted s':>9} {'max gap s':>9}  note"
    )
    print(header)
    for s in r["steps"]:
        print(
            f"  {s['step']:<8} {s['at_s']:>6} {s['worker']:<6} {s['partitions']!s:<10} "
            f"{_fmt(s.get('failover_s')):>10} {_fmt(s.get('failover_accounts_stage_s')):>12} "
            f"{_fmt(s.get('dead_member_evicted_s')):>9} {_fmt(s['max_verdict_gap_s']):>9}  "
            f"{s['note']}"
        )
    print()


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


if __name__ == "__main__":
    sys.exit(main())
