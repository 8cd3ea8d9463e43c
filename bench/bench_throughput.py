"""Throughput and latency of the worker, beside a raw aiokafka pass-through and a no-op Faust
agent, measured in one run on the same preloaded topic (needs a broker).

    python bench/bench_throughput.py                 # 200,000 withdrawals, 4 partitions
    python bench/bench_throughput.py --n 50000 --rates 500,1000 --seconds 30
    python bench/bench_throughput.py --n 60000 --skip raw,faust,faust-batch,faust-lean,latency \
        --cpu-quota 0.4                          # (c) and (d), each worker capped at 0.4 core
    python bench/bench_throughput.py --n 60000 --skip raw,faust,faust-batch,faust-lean,latency \
        --cpu-quota 0.4 --steady                 # the same at steady state (no join inside)

``--steady`` also prints, per configuration, the stage-2 items per micro-batch and the records
the workers produced per measured withdrawal, by topic (each changelog record is one more
record every standby replica consumes).

(a) raw aiokafka getmany -> send, (b) a no-op Faust agent (raw bytes in, a fixed JSON out
per event), (b') a Faust agent in micro-batches of Faust's ``take_events`` (the producer
directly, the worker's transport and settings; one fixed JSON out per event), (b'') the same
with the worker's own batch reader (``compat.take_batches``): what Faust costs the worker
before it does anything, (c) the detector worker
(default model), (d) two workers in one group: each drains the same N preloaded withdrawals
from the earliest offset; printed: withdrawals/s (first to last record handled), Python CPU
per withdrawal (process CPU time over the drain) and the ratios c/b, c/a, c/b'. Then the
latency ladder: produce -> verdict consumed, p50/p99, at fixed offered rates and for a lone
withdrawal, through (e) a raw aiokafka relay with the worker's topology and no work (a
forward, then the verdict on record and the verdict, each round acknowledged: what the
broker and the transport cost on this machine) and through one worker, and the difference.
Then the floor of any pipeline on this machine (``floor``): (f) Kafka's own end-to-end
latency tool (``org.apache.kafka.tools.EndToEndLatency``, the Java client: one record at a
time, produced with acks=all and consumed, one hop, nothing between; its jar is fetched with
Maven), (g) the ladder's own clients with no pipeline at all (they produce to and read the
input topic), (h) one hop of raw aiokafka with no work (``pipelines.py hop``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from chaos import settings_overrides  # noqa: E402
from kafka_io import isolated_settings  # noqa: E402

from detector.config import Settings  # noqa: E402
from detector.events import format_rfc3339, parse_rfc3339  # noqa: E402
from detector.local.process import stop_process, worker_process  # noqa: E402
from detector.offline import simulate  # noqa: E402
from detector.stream.app import topic_specs  # noqa: E402
from detector.stream.compat import import_kafka  # noqa: E402
from detector.stream.topics import TopicSpec, delete_topics, ensure_topics  # noqa: E402

TICKS = 100  # /proc/<pid>/stat clock ticks per second (Linux default)
LONE = 200  # lone withdrawals measured (one every 0.2 s)
WARMUP = 20  # lone withdrawals sent first and not reported (a fresh worker's first verdicts)


def preload(settings: Settings, n: int) -> None:
    """N simulated withdrawals (realistic accounts and destinations) into the input topic."""
    produce(settings, settings.topic_withdrawals, withdrawals(n))


def withdrawals(n: int) -> list[dict[str, Any]]:
    """N simulated withdrawals (realistic accounts and destinations), in time order."""
    accounts = max(100, n // 100)
    events = simulate.generate(
        simulate.SimConfig(accounts=accounts, days=40.0, seed=11, attacks_per_scenario=4)
    )
    base = list(events)
    times = [parse_rfc3339(e["requested_at"]) for e in base]
    span = times[-1] - times[0] + 3600.0
    copy = 0
    while len(events) < n:  # top up with copies under new ids, each after the one before
        copy += 1
        events += [
            {
                **e,
                "withdrawal_id": f"{e['withdrawal_id']}-{copy}",
                "requested_at": format_rfc3339(t + copy * span),
            }
            for e, t in zip(base[: n - len(events)], times, strict=False)
        ]
    return events[:n]


def produce(settings: Settings, topic: str, events: list[dict[str, Any]]) -> None:
    """``events`` into ``topic``, keyed by account, as fast as the producer goes."""
    import_kafka()
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_list, acks=1, linger_ms=20, batch_size=1 << 19
    )
    for event in events:
        producer.send(
            topic,
            key=event["account_id"].encode(),
            value=simulate.encode_event(event),
        )
    producer.flush()
    producer.close()


def run_reference(mode: str, settings: Settings, n: int, tmp: Path) -> dict[str, Any]:
    sink = f"bench-{mode}-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings.bootstrap_servers, [TopicSpec(sink, settings.partitions)])
    result = tmp / f"{mode}.json"
    try:
        subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "pipelines.py"),
                mode,
                settings.bootstrap_list[0],
                settings.topic_withdrawals,
                sink,
                f"bench-{mode}-{uuid.uuid4().hex[:8]}",
                str(n),
                str(result),
            ],
            check=False,
            timeout=3600,
            stdout=subprocess.DEVNULL,
            stderr=(tmp / f"{mode}.log").open("wb"),
        )
        return dict(json.loads(result.read_text()))
    finally:
        delete_topics(settings.bootstrap_servers, [sink])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _record_times(settings: Settings, topic: str) -> tuple[int, float, float]:
    """(records, first, last): count and the first/last CreateTime (s) on ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_list)
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    consumer.assign(tps)
    ends = consumer.end_offsets(tps)
    starts = consumer.beginning_offsets(tps)
    count = sum(ends[tp] - starts[tp] for tp in tps)
    first, last = float("inf"), 0.0
    for tp in tps:
        if ends[tp] == starts[tp]:
            continue
        for offset in (starts[tp], ends[tp] - 1):
            consumer.seek(tp, offset)
            records = consumer.poll(timeout_ms=5000, max_records=1).get(tp, [])
            if records:
                stamp = records[0].timestamp / 1000.0
                first, last = min(first, stamp), max(last, stamp)
    consumer.close()
    return count, first, last


def _count(settings: Settings, topic: str, partitions: int | None = None) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_list)
    n = settings.partitions if partitions is None else partitions
    tps = [TopicPartition(topic, p) for p in range(n)]
    ends, starts = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
    consumer.close()
    return sum(ends[tp] - starts[tp] for tp in tps)


@contextlib.contextmanager
def cpu_quota(pid: int, cores: float) -> Iterator[None]:
    """Cap process ``pid`` (all its threads) at ``cores`` of CPU time with a cgroup of its own
    (cgroup v1's cpu controller or cgroup v2's cpu.max; needs root), removed afterwards."""
    period = 100_000
    quota = int(cores * period)
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        group = v1 / f"bench-{uuid.uuid4().hex[:8]}"
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(period))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
        back = v1
    elif "cpu" in Path("/sys/fs/cgroup/cgroup.controllers").read_text().split():
        back = Path("/sys/fs/cgroup")
        (back / "cgroup.subtree_control").write_text("+cpu")
        group = back / f"bench-{uuid.uuid4().hex[:8]}"
        group.mkdir()
        (group / "cpu.max").write_text(f"{quota} {period}")
    else:
        raise SystemExit("--cpu-quota needs the cgroup cpu controller (v1 or v2) and root")
    try:
        (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        with contextlib.suppress(OSError):
            (back / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()


def _batch_sizes(port: int) -> tuple[float, float]:
    """(withdrawals scored, scoring calls) from a worker's /metrics (stage 2's batches)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        text = page.read().decode()
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        for key in found:
            if name == f"detector_batch_size_{key}":
                found[key] = float(value)
    return found["sum"], found["count"]


def start_workers(
    stack: contextlib.ExitStack, settings: Settings, workers: int, base: Path, quota: float
) -> tuple[list[subprocess.Popen[bytes]], list[float]]:
    """``workers`` worker processes of one group (web ports from ``settings.web_port`` up,
    data and logs under ``base``), each capped at ``quota`` cores when > 0, each stopped
    when ``stack`` closes; returned once each is ready, with each one's CPU time (s) when it
    was (a worker may start draining before the next is up)."""
    procs, cpu0 = [], []
    for i in range(workers):
        one = replace(settings, web_port=settings.web_port + i, data_dir=base / f"data-{i}")
        proc = stack.enter_context(worker_process(one, log_path=base / f"worker-{i}.log"))
        if quota > 0:
            stack.enter_context(cpu_quota(proc.pid, quota))
        procs.append(proc)
        cpu0.append(_cpu_s(proc.pid))
    return procs, cpu0


def run_workers(
    settings: Settings, n: int, workers: int, tmp: Path, quota: float = 0.0
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    decisions = f"bench-decisions-{run}"
    mine = replace(settings, app_id=f"bench-{run}", topic_decisions=decisions)
    ensure_topics(mine.bootstrap_servers, topic_specs(mine))
    try:
        with contextlib.ExitStack() as stack:
            procs, cpu0 = start_workers(stack, mine, workers, tmp / f"worker-{run}", quota)
            deadline = time.monotonic() + 3600
            while _count(mine, decisions) < n and time.monotonic() < deadline:
                time.sleep(0.5)
            cpu = sum(_cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True))
            batches = [_batch_sizes(mine.web_port + i) for i in range(workers)]
            for proc in procs:
                stop_process(proc)
        count, first, last = _record_times(mine, decisions)
        scored, calls = (sum(b[i] for b in batches) for i in (0, 1))
        return {
            "count": count,
            "first": first,
            "last": last,
            "cpu_s": cpu,
            "batch": scored / max(calls, 1),
        }
    finally:
        delete_topics(
            mine.bootstrap_servers,
            [s.name for s in topic_specs(mine) if s.name != mine.topic_withdrawals],
        )


STEADY_WARMUP = 2_000  # withdrawals decided before the measured ones (--steady)


def _group_members(settings: Settings) -> dict[str, int]:
    """Member id -> partitions assigned, of the workers' consumer group once it is stable
    (kafka-python 3's ``describe_groups``: the assignment decoded into plain dicts)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_list)
    try:
        group = admin.describe_groups([settings.app_id])[settings.app_id]
        if group.get("group_state") != "Stable":
            return {}
        out = {}
        for member in group.get("members", []):
            assignment = member.get("member_assignment") or {}
            parts = (
                assignment.get("assigned_partitions", []) if isinstance(assignment, dict) else []
            )
            out[str(member["member_id"])] = sum(len(tp.get("partitions", [])) for tp in parts)
        return out
    finally:
        admin.close()


def run_steady(
    settings: Settings, n: int, workers: int, tmp: Path, quota: float = 0.0
) -> dict[str, Any]:
    """``workers`` workers in one group on a fresh input topic, started and given a warm-up
    (its verdicts waited for, the group stable with every worker assigned partitions) before
    the N measured withdrawals are produced at once: no start, join or rebalance inside the
    measurement, and no stage of any measured withdrawal before it. The span runs from just
    before the first measured withdrawal is produced to the last verdict's CreateTime; CPU
    is the workers' own over it."""
    run = uuid.uuid4().hex[:8]
    mine = replace(
        settings,
        app_id=f"bench-steady-{run}",
        topic_withdrawals=f"bench-in-{run}",
        topic_decisions=f"bench-decisions-{run}",
    )
    ensure_topics(mine.bootstrap_servers, topic_specs(mine))
    events = withdrawals(STEADY_WARMUP + n)
    try:
        with contextlib.ExitStack() as stack:
            procs, _ = start_workers(stack, mine, workers, tmp / f"steady-{run}", quota)
            produce(mine, mine.topic_withdrawals, events[:STEADY_WARMUP])
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                members = _group_members(mine)
                if (
                    _count(mine, mine.topic_decisions) >= STEADY_WARMUP
                    and len(members) == workers
                    and all(members.values())
                ):
                    break
                time.sleep(1.0)
            else:
                raise SystemExit("steady: the warm-up was not decided or the group not stable")
            cpu0 = [_cpu_s(p.pid) for p in procs]
            batches0 = [_batch_sizes(mine.web_port + i) for i in range(workers)]
            produced0 = _produced(mine)
            first = time.time()  # CreateTime is this machine's clock too
            produce(mine, mine.topic_withdrawals, events[STEADY_WARMUP:])
            while _count(mine, mine.topic_decisions) < STEADY_WARMUP + n:
                if time.monotonic() > deadline + 3600:
                    raise SystemExit("steady: verdicts missing after an hour")
                time.sleep(0.5)
            cpu = sum(_cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True))
            batches = [_batch_sizes(mine.web_port + i) for i in range(workers)]
            produced = _produced(mine)
            members = _group_members(mine)
        count, _, last = _record_times(mine, mine.topic_decisions)
        pairs = list(zip(batches, batches0, strict=True))
        scored, calls = (sum(b[i] - b0[i] for b, b0 in pairs) for i in (0, 1))
        return {
            "count": count - STEADY_WARMUP,
            "first": first,
            "last": last,
            "cpu_s": cpu,
            "members": len(members),
            "batch": scored / max(calls, 1),
            "records": {
                t.removeprefix(f"{mine.app_id}-"): (produced[t] - produced0[t]) / n
                for t in produced
            },
        }
    finally:
        delete_topics(mine.bootstrap_servers, [s.name for s in topic_specs(mine)])


def _produced(settings: Settings) -> dict[str, int]:
    """Records in each topic the workers write (the input and the labels aside)."""
    skip = {settings.topic_withdrawals, settings.topic_labels}
    return {
        s.name: _count(settings, s.name, s.partitions)
        for s in topic_specs(settings)
        if s.name not in skip
    }


@contextlib.contextmanager
def relay_process(
    settings: Settings, tmp: Path, mode: str = "relay"
) -> Iterator[subprocess.Popen[bytes]]:
    """``pipelines.py relay`` (with its own two intermediate topics) or ``pipelines.py hop``
    from the withdrawals topic to the decisions topic, until the block exits."""
    sink = settings.topic_decisions
    between = [f"{sink}-{t}" for t in ("mid", "record")] if mode == "relay" else []
    ensure_topics(settings.bootstrap_servers, [TopicSpec(t, settings.partitions) for t in between])
    command = [sys.executable, str(REPO / "bench" / "pipelines.py"), mode]
    command += [settings.bootstrap_list[0], settings.topic_withdrawals, sink]
    command += [f"bench-{mode}-{uuid.uuid4().hex[:8]}", "0", "-"]
    with (tmp / f"{mode}.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield proc
    finally:
        stop_process(proc)
        if between:
            delete_topics(settings.bootstrap_servers, between)


@contextlib.contextmanager
def no_pipeline() -> Iterator[None]:
    """Nothing between the ladder's producer and its reader (which reads the input topic)."""
    yield None


def kafka_tool_latency(settings: Settings, tmp: Path, n: int = 5000) -> str:
    """Kafka's own ``EndToEndLatency`` tool (Java client) on the broker: ``n`` records of 200
    bytes, one at a time, each produced (acks=all) and consumed before the next; its summary
    lines (whole milliseconds), or why it did not run. Its jar (``kafka-tools``, not among
    the broker's) is fetched with Maven, the broker's jars supply the rest."""
    from detector.local.broker import resolve_jars

    version = settings.kafka_version
    repository = Path.home() / ".m2" / "repository" / "org" / "apache" / "kafka"
    tools = repository / "kafka-tools" / version / f"kafka-tools-{version}.jar"
    if not tools.is_file():
        fetch = ["mvn", "-B", "-q", "dependency:get", "-Dtransitive=false"]
        fetch.append(f"-Dartifact=org.apache.kafka:kafka-tools:{version}")
        got = subprocess.run(fetch, capture_output=True, text=True, timeout=300, check=False)
        if got.returncode != 0 or not tools.is_file():
            return f"not run: Maven could not fetch kafka-tools {version}: {got.stdout[-300:]}"
    jars = [str(j) for j in sorted(resolve_jars(settings, log=lambda _: None).glob("*.jar"))]
    topic = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    command = ["java", "-cp", ":".join([*jars, str(tools)])]
    command += ["-Dlog4j.configuration=file:/dev/null", "org.apache.kafka.tools.EndToEndLatency"]
    command += [settings.bootstrap_list[0], topic, str(n), "all", "200"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    finally:
        delete_topics(settings.bootstrap_servers, [topic])
    lines = [x for x in done.stdout.splitlines() if x.startswith(("Avg latency", "Percentiles"))]
    if done.returncode != 0 or len(lines) != 2:
        return f"not run: exit {done.returncode}: {(done.stdout + done.stderr)[-300:]}"
    return "; ".join(lines)


def latency_ladder(
    base: Settings,
    rates: list[float],
    seconds: float,
    tmp: Path,
    overrides: dict[str, Any],
    *,
    through: str = "worker",
) -> dict[float, tuple[float, float]]:
    """Produce -> verdict consumed at each offered rate (0: a lone withdrawal), through one
    worker, the raw aiokafka ``relay`` (the worker's topology) or ``hop`` (one hop), or
    ``none`` (the withdrawal itself read back from the input topic); returns
    ``{rate: (p50 ms, p99 ms)}``."""
    from kafka import KafkaConsumer, KafkaProducer

    settings = isolated_settings(base.bootstrap_servers, tmp / "lat", partitions=base.partitions)
    settings = replace(settings, **overrides)
    ensure_topics(settings.bootstrap_servers, topic_specs(settings))
    figures: dict[float, tuple[float, float]] = {}
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    stop = threading.Event()

    def consume() -> None:
        consumer = KafkaConsumer(
            settings.topic_withdrawals if through == "none" else settings.topic_decisions,
            bootstrap_servers=settings.bootstrap_list,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
        )
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                now = time.perf_counter()
                for record in records:
                    got.setdefault(json.loads(record.value)["withdrawal_id"], now)
        consumer.close()

    try:
        pipeline: contextlib.AbstractContextManager[subprocess.Popen[bytes] | None]
        if through == "worker":
            pipeline = worker_process(settings, log_path=tmp / "latency-worker.log")
        elif through == "none":
            pipeline = no_pipeline()
        else:
            pipeline = relay_process(settings, tmp, through)
        with pipeline as proc:
            reader = threading.Thread(target=consume, daemon=True)
            reader.start()
            producer = KafkaProducer(
                bootstrap_servers=settings.bootstrap_list, acks="all", linger_ms=0
            )
            time.sleep(2.0)
            # -1: warm-up (not reported: the first verdicts of a fresh worker and topics take
            # 30-130 ms); 0: a lone withdrawal every 0.2 s, 200 of them, so p99 is not the max.
            for rate in [-1.0, 0.0, *rates]:
                ids = []
                count = {-1.0: WARMUP, 0.0: LONE}.get(rate, int(rate * seconds))
                began, cpu0 = time.perf_counter(), _cpu_s(proc.pid) if proc else 0.0
                for i in range(count):
                    due = began + (i * 0.2 if rate <= 0 else i / rate)
                    pause = due - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    wid = f"lat-{rate:g}-{i}"
                    account = f"acct-{i % 5000}"
                    event = {
                        "withdrawal_id": wid,
                        "account_id": account,
                        "asset": "USDT",
                        "amount": "120",
                        "amount_usd": 120.0,
                        "destination": f"T-{i % 3000}",
                        "requested_at": format_rfc3339(time.time()),
                    }
                    sent[wid] = time.perf_counter()
                    producer.send(
                        settings.topic_withdrawals,
                        key=account.encode(),
                        value=json.dumps(event).encode(),
                    )
                    ids.append(wid)
                    if rate <= 0:
                        producer.flush()
                producer.flush()
                time.sleep(3.0)
                cpu = f"{(_cpu_s(proc.pid) - cpu0) / count * 1e6:,.0f} µs" if proc else "-"
                lat = sorted((got[w] - sent[w]) * 1000 for w in ids if w in got)
                missing = len(ids) - len(lat)
                label = "lone withdrawal" if rate == 0 else f"{rate:,.0f}/s for {seconds:g} s"
                if lat and rate >= 0:
                    figures[rate] = (statistics.median(lat), lat[int(0.99 * (len(lat) - 1))])
                    print(
                        f"  {label:22s} p50 {statistics.median(lat):7.1f} ms   "
                        f"p99 {lat[int(0.99 * (len(lat) - 1))]:7.1f} ms   "
                        f"({len(lat)} verdicts, {missing} missing; "
                        f"CPU {cpu}/withdrawal)"
                    )
            producer.close()
            stop.set()
    finally:
        delete_topics(settings.bootstrap_servers, [s.name for s in topic_specs(settings)])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rates", default="500,1000,2000")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--skip",
        default="",
        help="comma list of: raw,faust,faust-batch,faust-lean,worker,two,latency,relay,floor",
    )
    parser.add_argument(
        "--cpu-quota",
        type=float,
        default=0.0,
        metavar="CORES",
        help="cap each worker of (c) and (d) at CORES of CPU (a cgroup each; root): a core of "
        "its own for each worker, scaled down to what the machine has",
    )
    parser.add_argument(
        "--steady",
        action="store_true",
        help="(c) and (d) at steady state: workers started, warmed up and the group stable "
        "before the N withdrawals are produced; the rate from the first produced to the last "
        "verdict",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a Settings field of the workers (e.g. batch_max=2000), as chaos.py",
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    import_kafka()
    tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    settings = isolated_settings(
        Settings.from_env().bootstrap_servers, tmp, partitions=args.partitions
    )
    settings = replace(settings, **settings_overrides(args.set))
    ensure_topics(settings.bootstrap_servers, topic_specs(settings))
    try:
        drains = {"raw", "faust", "faust-batch", "faust-lean", "worker", "two"} - skip
        if args.steady:
            drains -= {"worker", "two"}  # they produce to topics of their own
        if drains:
            started = time.perf_counter()
            preload(settings, args.n)
            print(
                f"preloaded {args.n:,} withdrawals on {args.partitions} partitions in "
                f"{time.perf_counter() - started:.1f} s; draining each from the earliest offset"
            )
        results: dict[str, dict[str, Any]] = {}
        plan = [
            (
                "raw",
                "(a) raw aiokafka getmany -> send",
                lambda: run_reference("raw", settings, args.n, tmp),
            ),
            (
                "faust",
                "(b) no-op Faust agent",
                lambda: run_reference("faust", settings, args.n, tmp),
            ),
            (
                "faust-batch",
                "(b') Faust agent, micro-batches as ours",
                lambda: run_reference("faust-batch", settings, args.n, tmp),
            ),
            (
                "faust-lean",
                "(b'') as (b'), the worker's batch reader",
                lambda: run_reference("faust-lean", settings, args.n, tmp),
            ),
            (
                "worker",
                "(c) the detector worker",
                lambda: (run_steady if args.steady else run_workers)(
                    settings, args.n, 1, tmp, args.cpu_quota
                ),
            ),
            (
                "two",
                "(d) two workers, one group",
                lambda: (run_steady if args.steady else run_workers)(
                    settings, args.n, 2, tmp, args.cpu_quota
                ),
            ),
        ]
        print(f"{'pipeline':40s} {'withdrawals/s':>14s} {'CPU µs/withdrawal':>18s}")
        for key, title, run in plan:
            if key in skip:
                continue
            r = run()
            rate = r["count"] / max(r["last"] - r["first"], 1e-9)
            cpu_us = r["cpu_s"] / max(r["count"], 1) * 1e6
            results[key] = {"rate": rate, "cpu_us": cpu_us, **r}
            extra = f"   (stage 2: {r['batch']:,.0f} per batch)" if "batch" in r else ""
            if "members" in r:
                extra += (
                    f"   (steady: {r['count']:,} verdicts measured, {r['members']} in the group)"
                )
            print(f"{title:40s} {rate:14,.0f} {cpu_us:18.1f}{extra}")
            if "records" in r:
                per = ", ".join(f"{t} {v:.3f}" for t, v in r["records"].items() if v)
                print(f"{'':40s} records produced per withdrawal: {per}")
        for a, b, title in (
            ("worker", "faust", "c/b (worker / no-op Faust agent)"),
            ("worker", "raw", "c/a (worker / raw aiokafka)"),
            ("worker", "faust-batch", "c/b' (worker / Faust micro-batches)"),
            ("two", "worker", "d/c (two workers / one)"),
        ):
            if a in results and b in results:
                print(f"{title:34s} {results[a]['rate'] / results[b]['rate']:.3f}x")
        rates = [float(r) for r in args.rates.split(",") if r]
        if "latency" not in skip:
            overrides = settings_overrides(args.set)
            floor = {}
            if "relay" not in skip:
                print("latency, produce -> verdict consumed, (e) raw aiokafka relay, no work:")
                floor = latency_ladder(
                    settings, rates, args.seconds, tmp, overrides, through="relay"
                )
            print("latency, produce -> verdict consumed (one worker):")
            ours = latency_ladder(settings, rates, args.seconds, tmp, overrides)
            for rate in sorted(set(floor) & set(ours)):
                label = "lone withdrawal" if rate == 0 else f"{rate:,.0f}/s"
                (p50, p99), (f50, f99) = ours[rate], floor[rate]
                print(
                    f"  worker - relay, {label:16s} p50 {p50 - f50:+7.1f} ms   "
                    f"p99 {p99 - f99:+7.1f} ms"
                )
        if "floor" not in skip:
            print("the floor on this machine: no pipeline work at all")
            print("  (f) Kafka's EndToEndLatency (Java client), one hop, 5,000 records in turn:")
            print(f"      {kafka_tool_latency(settings, tmp)}")
            print("  (g) the ladder's own clients, no pipeline (the withdrawal read back):")
            latency_ladder(settings, rates, args.seconds, tmp, {}, through="none")
            print("  (h) raw aiokafka, one hop (consume -> produce acks=all), no work:")
            latency_ladder(settings, rates, args.seconds, tmp, {}, through="hop")
    finally:
        delete_topics(settings.bootstrap_servers, [s.name for s in topic_specs(settings)])


if __name__ == "__main__":
    main()
