"""``detector demo``: the whole path on a real broker, with a live summary, then clean up.

Starts the local Kafka (unless ``KAFKA_BOOTSTRAP_SERVERS`` is set), trains a model if none
exists, starts a worker process on per-run topics, streams synthetic traffic with labelled
attacks plus a few malformed records, prints progress every second and a final summary,
and stops everything it started (also on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from detector.config import Settings, bootstrap_configured
from detector.errors import DetectorError
from detector.events import Withdrawal, validate_withdrawal
from detector.local import broker, traffic
from detector.local.backfill import build_state, write_state
from detector.local.process import worker_process
from detector.model import Model
from detector.offline import simulate
from detector.offline.quality import NORMAL_LABEL, Tally
from detector.stream.app import topic_specs
from detector.stream.topics import delete_topics, ensure_topics

__all__ = ["run_demo"]

# Malformed records mixed into the stream to show the dead-letter path (count).
_INVALID_RECORDS = 12
# How long the demo waits for the last verdicts after the traffic ends (s).
_DRAIN_TIMEOUT_S = 60.0
# Flow control: the sender pauses while more than this many seconds of traffic (at the
# asked rate) wait for a verdict, so a slower machine gets a slower demo, not a backlog.
_MAX_BACKLOG_S = 1.0
# The simulator's traffic averages ~2.5 withdrawals per account-day (events); the
# demo streams at least this many days (days) with this many attacks of each kind (count).
_EVENTS_PER_ACCOUNT_DAY = 2.5
_MIN_DAYS = 3.0
_ATTACKS_PER_SCENARIO = 4
# Training set used when no model exists yet (accounts, days).
_TRAIN_ACCOUNTS, _TRAIN_DAYS = 400, 14.0


@dataclass
class _Tally:
    """What the demo's consumer saw; shared between threads under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent_at: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    dlq: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0
    sent: int = 0
    throttled_s: float = 0.0  # time the sender waited for the worker to catch up


class _RecordingProducer:
    """Wraps the real producer: remembers when each withdrawal was handed to Kafka, and
    holds the next one back while the worker is more than ``max_backlog`` behind."""

    def __init__(self, inner: Any, tally: _Tally, max_backlog: int) -> None:
        self._inner = inner
        self._tally = tally
        self._max_backlog = max_backlog

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        waited = time.monotonic()
        while True:
            with self._tally.lock:
                backlog = self._tally.sent - len(self._tally.verdicts)
            if backlog <= self._max_backlog:
                break
            time.sleep(0.005)
        with self._tally.lock:
            self._tally.throttled_s += time.monotonic() - waited
        doc = json.loads(value or b"{}")
        with self._tally.lock:
            self._tally.sent_at[doc["withdrawal_id"]] = time.monotonic()
            self._tally.labels[doc["withdrawal_id"]] = doc.get("metadata", {}).get("label", "")
            self._tally.sent += 1
        return self._inner.send(topic, value=value, key=key)

    def flush(self, timeout: float | None = None) -> Any:
        return self._inner.flush(timeout=timeout)


def run_demo(settings: Settings, *, duration: float, rate: float, accounts: int) -> int:
    run_id = uuid.uuid4().hex[:8]
    demo = replace(
        settings,
        app_id=f"detector-demo-{run_id}",
        topic_withdrawals=f"demo-{run_id}-withdrawals",
        topic_decisions=f"demo-{run_id}-decisions",
        topic_dlq=f"demo-{run_id}-withdrawals-dlq",
        topic_labels=f"demo-{run_id}-labels",
        topic_decisions_shadow=f"demo-{run_id}-decisions-shadow",
        topic_review_decisions=f"demo-{run_id}-review-decisions",
        web_port=_free_port(settings.web_host, settings.web_port),
        # The demo plays simulated days of history in seconds: no event-time bounds.
        max_event_age_s=0.0,
        max_event_ahead_s=0.0,
    )
    stop = threading.Event()
    # SIGTERM (a `kill`, a CI timeout) cleans up like Ctrl-C: no orphaned worker or broker.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # Everything the demo starts is undone in reverse order, on success, error or Ctrl-C.
    with contextlib.ExitStack() as undo:
        undo.callback(signal.signal, signal.SIGTERM, previous)
        undo.callback(stop.set)
        try:
            demo.data_dir.mkdir(parents=True, exist_ok=True)
            if not bootstrap_configured():
                _say(f"[1/5] local Kafka on {demo.bootstrap_servers} (data in {demo.data_dir})")
                if broker.start(demo):
                    undo.callback(broker.stop, demo)
                    # Runs before the broker stops: clients still retrying would only log
                    # connection errors from then on.
                    undo.callback(_silence_kafka_clients)
            else:
                _say(f"[1/5] using Kafka at {demo.bootstrap_servers}")
                broker.wait_ready(demo.bootstrap_servers, 30.0)
            _ensure_model(demo)
            _say(f"[3/5] creating topics for run {run_id} ({demo.partitions} partitions each)")
            specs = topic_specs(demo)
            security = demo.kafka_python_config()
            ensure_topics(demo.bootstrap_servers, specs, security=security)
            undo.callback(
                _delete_quietly, demo.bootstrap_servers, [s.name for s in specs], security
            )
            # Attacks come after the simulation's warm-up: its withdrawals become the
            # worker's state before it starts (as `detector backfill` does), the rest is
            # streamed, so the worker decides warm, as in production.
            config = _demo_world(duration, rate, accounts, int(run_id, 16) % 10_000)
            warm, events = _split_warm_up(config)
            began = time.monotonic()
            state = build_state(warm, demo, Model.load(demo.model_dir).params)
            write_state(demo, state)
            _say(
                f"      warm start: {len(warm)} withdrawals of the warm-up -> state of "
                f"{len(state.accounts)} accounts in {time.monotonic() - began:.1f} s"
            )
            log_path = demo.data_dir / f"{demo.app_id}.log"
            _say(
                f"[4/5] starting worker (log: {log_path}, metrics: "
                f"http://{demo.web_host}:{demo.web_port}/metrics)"
            )
            began = time.monotonic()
            undo.enter_context(worker_process(demo, log_path=log_path))
            _say(f"      worker ready in {time.monotonic() - began:.1f} s")
            tally = _Tally()
            consumer = threading.Thread(target=_consume, args=(demo, tally, stop), daemon=True)
            consumer.start()
            _say(
                f"[5/5] streaming {len(events)} withdrawals at {rate:.0f}/s "
                f"(+{_INVALID_RECORDS} malformed records); Ctrl-C stops"
            )
            sender = threading.Thread(target=_send, args=(demo, events, rate, tally), daemon=True)
            sender.start()
            _watch(tally, sender, len(events), stop)
            stop.set()
            consumer.join(timeout=5.0)
            missing = _summary(tally, rate)
            if missing:
                _say(
                    f"demo: error: {missing} withdrawals got no verdict within "
                    f"{_DRAIN_TIMEOUT_S:.0f} s after the traffic ended (worker log: {log_path})"
                )
                return 1
            return 0
        except KeyboardInterrupt:
            _say("\ninterrupted: cleaning up")
            return 130


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _demo_world(duration: float, rate: float, accounts: int, seed: int) -> simulate.SimConfig:
    """The simulated world whose period after the warm-up streams in about ``duration``."""
    live_share = 1.0 - simulate.SimConfig.warmup_fraction
    days = max(_MIN_DAYS, duration * rate / (accounts * _EVENTS_PER_ACCOUNT_DAY * live_share))
    return simulate.SimConfig(
        accounts=accounts, days=days, seed=seed, attacks_per_scenario=_ATTACKS_PER_SCENARIO
    )


def _split_warm_up(config: simulate.SimConfig) -> tuple[list[Withdrawal], list[dict[str, Any]]]:
    """The world's withdrawals before the end of its warm-up (validated), and the rest."""
    events = simulate.generate(config)
    end = config.warmup_end.timestamp()
    warm: list[Withdrawal] = []
    for i, doc in enumerate(events):
        event = validate_withdrawal(doc)
        if event.requested_at >= end:
            return warm, events[i:]
        warm.append(event)
    return warm, []


def _silence_kafka_clients() -> None:
    for name in ("kafka", "aiokafka"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _delete_quietly(bootstrap_servers: str, names: list[str], security: Any) -> None:
    with contextlib.suppress(Exception):
        delete_topics(bootstrap_servers, names, security=security)


def _say(text: str) -> None:
    print(text, flush=True)


def _free_port(host: str, preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise DetectorError("no free TCP port for the worker's web server")


def _ensure_model(settings: Settings) -> None:
    if (settings.model_dir / "model.json").exists():
        _say(f"[2/5] model: {settings.model_dir}")
        return
    from detector.offline.training import train

    path = settings.data_dir / "demo-training.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    _say(
        f"[2/5] no model in {settings.model_dir}: simulating {_TRAIN_ACCOUNTS} accounts x "
        f"{_TRAIN_DAYS:.0f} days of history and training one"
    )
    config = simulate.SimConfig(accounts=_TRAIN_ACCOUNTS, days=_TRAIN_DAYS, seed=1)
    simulate.write_jsonl(simulate.generate(config), path)
    result = train(path, settings.model_dir, fit_from=config.warmup_end.timestamp())
    _say(f"      trained {result.model.version} on {result.report['events']} withdrawals")


_MALFORMED = (
    b"{not json",
    b'{"withdrawal_id": "x"}',
    b'{"withdrawal_id": "b", "account_id": "demo", "asset": "BTC", "amount": "-1", '
    b'"destination": "d", "requested_at": "2026-11-24T10:00:00Z"}',
)


def _send(settings: Settings, events: list[dict[str, Any]], rate: float, tally: _Tally) -> None:
    """Valid traffic through the simulator's paced streamer; malformed records beside it."""
    from kafka import KafkaProducer

    inner = KafkaProducer(
        bootstrap_servers=settings.bootstrap_list,
        acks="all",
        linger_ms=2,
        **settings.kafka_python_config(),
    )
    done = threading.Event()
    span_s = len(events) / rate

    def send_malformed() -> None:
        for i in range(_INVALID_RECORDS):
            if done.wait(span_s / (_INVALID_RECORDS + 1)):
                return
            inner.send(
                settings.topic_withdrawals, value=_MALFORMED[i % len(_MALFORMED)], key=b"demo"
            )

    side = threading.Thread(target=send_malformed, daemon=True)
    side.start()
    try:
        traffic.stream_to_kafka(
            events,
            bootstrap_servers=settings.bootstrap_servers,
            topic=settings.topic_withdrawals,
            rate=rate,
            shift_to_now=False,
            producer=_RecordingProducer(inner, tally, max(50, int(rate * _MAX_BACKLOG_S))),
        )
    finally:
        done.set()
        side.join()
        inner.flush()
        inner.close()


def _consume(settings: Settings, tally: _Tally, stop: threading.Event) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        settings.topic_decisions,
        settings.topic_dlq,
        bootstrap_servers=settings.bootstrap_list,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=200,
        **settings.kafka_python_config(),
    )
    try:
        while not stop.is_set():
            for record in consumer:
                now = time.monotonic()
                if record.topic == settings.topic_dlq:
                    headers = dict(record.headers or [])
                    with tally.lock:
                        tally.dlq.append(
                            (
                                headers.get("dlq.code", b"?").decode(),
                                headers.get("dlq.reason", b"?").decode(),
                            )
                        )
                    continue
                verdict = json.loads(record.value)
                wid = verdict["withdrawal_id"]
                with tally.lock:
                    if wid in tally.verdicts:
                        tally.duplicates += 1
                        continue
                    tally.verdicts[wid] = verdict
                    sent = tally.sent_at.get(wid)
                    if sent is not None:
                        tally.latencies.append(now - sent)
                if stop.is_set():
                    break
    finally:
        consumer.close()


def _watch(tally: _Tally, sender: threading.Thread, total: int, stop: threading.Event) -> None:
    began = time.monotonic()
    drain_deadline: float | None = None
    while True:
        time.sleep(1.0)
        with tally.lock:
            done = len(tally.verdicts)
            line = _progress(tally, time.monotonic() - began)
        _say(line)
        if not sender.is_alive():
            drain_deadline = drain_deadline or time.monotonic() + _DRAIN_TIMEOUT_S
            if done >= total or time.monotonic() > drain_deadline:
                return


def _progress(tally: _Tally, elapsed: float) -> str:
    kinds = Counter(v["verdict"] for v in tally.verdicts.values())
    lat = _percentiles(tally.latencies[-5000:])
    return (
        f"  t={elapsed:5.1f}s  sent {tally.sent:6d}  verdicts {len(tally.verdicts):6d} "
        f"(allow {kinds['allow']}, delay {kinds['delay']}, refuse {kinds['refuse']})  "
        f"dlq {len(tally.dlq)}  latency p50 {lat[0]:.1f} ms p99 {lat[1]:.1f} ms"
    )


def _percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return (0.0, 0.0)
    arr = np.asarray(values) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _summary(tally: _Tally, rate: float) -> int:
    """Print the summary; return how many withdrawals have no verdict."""
    with tally.lock:
        verdicts = dict(tally.verdicts)
        kinds = Counter(v["verdict"] for v in verdicts.values())
        p50, p99 = _percentiles(tally.latencies)
        missing = len(tally.sent_at) - len(verdicts)
        quality = Tally()
        for wid, verdict in verdicts.items():
            quality.add(verdict["verdict"], tally.labels.get(wid))
        dlq = list(tally.dlq)
        duplicates = tally.duplicates
    _say("\n=== demo summary ===")
    _say(
        f"withdrawals sent: {len(tally.sent_at)}   verdicts: {len(verdicts)}   "
        f"missing: {missing}   duplicate verdict messages: {duplicates}"
    )
    _say(f"verdicts: allow {kinds['allow']}, delay {kinds['delay']}, refuse {kinds['refuse']}")
    if tally.throttled_s > 1.0:
        _say(
            f"paced by the worker: the sender waited {tally.throttled_s:.1f} s in all for "
            f"verdicts to catch up (asked {rate:.0f}/s; this machine decides fewer)"
        )
    _say(f"end-to-end latency (produced -> verdict consumed): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    _say(
        f"dead-letter records: {len(dlq)} "
        f"({', '.join(sorted({code for code, _ in dlq})) or 'none'})"
    )
    for label in quality.attacks:
        _say(
            f"  {label:18s} {quality.flagged[label]:4d}/{quality.total[label]:<4d} flagged "
            f"({quality.rate(label):.0%})"
        )
    if quality.total[NORMAL_LABEL]:
        _say(
            f"  {NORMAL_LABEL:18s} {quality.flagged[NORMAL_LABEL]:4d}/"
            f"{quality.total[NORMAL_LABEL]:<4d} flagged ({quality.rate(NORMAL_LABEL):.2%})"
        )
    shown = [v for v in verdicts.values() if v["verdict"] == "refuse"][:5]
    if shown:
        _say("some refused withdrawals:")
    else:
        shown = [v for v in verdicts.values() if v["verdict"] == "delay"][:5]
        _say("no refusals; some held (delay) withdrawals:" if shown else "nothing flagged")
    for v in shown:
        reasons = "; ".join(f"{r['code']}: {r['detail']}" for r in v["reasons"])
        _say(
            f"  {v['withdrawal_id']} account {v['account_id']} score {v['score']:.3f} "
            f"[{tally.labels.get(v['withdrawal_id'], '?')}] -> {reasons}"
        )
    return missing
