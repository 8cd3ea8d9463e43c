"""Replay in two processes (the account stage in a forked child) gives the verdicts of one
process, bit for bit, and fails loudly when its child does (detector/offline/replay.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka_io import DEFAULT_MODEL

from detector.cli import main
from detector.events import Withdrawal, validate_withdrawal
from detector.features import Structuring
from detector.labels import Label
from detector.model import Model
from detector.offline import replay as replay_module
from detector.offline import simulate
from detector.offline.replay import (
    PIPELINE_MIN_EVENTS,
    ReplayError,
    ReplayResult,
    cpu_quota,
    replay,
    replay_jobs,
)
from detector.offline.simulate.reports import attack_labels, write_labels
from detector.pipeline import Decider, FeatureState, Feedback

World = tuple[list[Withdrawal], list[Label]]


@pytest.fixture(scope="module")
def world() -> World:
    config = simulate.SimConfig(accounts=100, days=6, seed=5, attacks_per_scenario=2)
    docs = simulate.generate(config)
    events = [validate_withdrawal(doc) for doc in docs]
    # Repeats, as a redelivery brings them: some soon after their first copy (often in the
    # same scoring batch), some much later (a later batch: the verdict on record answers).
    for k in (3, 40, 41, 200):
        events.insert(k + 5, events[k])
    events.append(events[10])
    return events, attack_labels(docs, config)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages of 7 events and scoring batches of 50, so a few hundred events cross many
    boundaries of both (the child is forked after this, so it sees them too)."""
    monkeypatch.setattr(replay_module, "MESSAGE", 7)
    monkeypatch.setattr(replay_module, "CHUNK", 50)


def same(one: ReplayResult, two: ReplayResult) -> None:
    assert two.verdicts == one.verdicts
    assert np.array_equal(two.scores, one.scores)
    assert np.array_equal(two.rows, one.rows)
    assert two.labels == one.labels


@pytest.mark.usefixtures("small_batches")
def test_two_processes_give_the_verdicts_of_one(world: World) -> None:
    events, _ = world
    model = Model.load(DEFAULT_MODEL)
    one = replay(events, model, now=0.0, jobs=1)
    two = replay(events, model, now=0.0, jobs=2)
    same(one, two)
    assert len(two.verdicts) == len(events)
    assert {v["verdict"] for v in two.verdicts} >= {"allow", "delay"}


@pytest.mark.usefixtures("small_batches")
def test_labels_warm_up_and_structuring_give_the_same_verdicts_too(world: World) -> None:
    events, labels = world
    assert labels
    model = Model.load(DEFAULT_MODEL)
    rule = Structuring({"USDT": 10_000.0}, band=0.9, count=3)
    # Labels' account parts apply in the child, their destination parts here: an account
    # report (cooldown) and a released withdrawal, beside the simulator's fraud reports.
    extra = [
        Label.create(
            label_id="cool-1",
            label="fraud",
            source="support",
            reported_at=events[60].requested_at,
            account_id=events[70].account_id,
        ),
        Label.create(
            label_id="legit-1",
            label="legit",
            source="analyst",
            reported_at=events[80].requested_at,
            account_id=events[90].account_id,
            destination=events[90].destination,
            withdrawal_id=events[90].withdrawal_id,
        ),
    ]
    kwargs: dict[str, Any] = {
        "now": 0.0,
        "reports": [*labels, *extra],
        "feedback": Feedback(),
        "score_from": events[len(events) // 3].requested_at,
        "structuring": rule,
    }
    one = replay(events, model, jobs=1, **kwargs)
    two = replay(events, model, jobs=2, **kwargs)
    same(one, two)
    codes = {r["code"] for v in two.verdicts for r in v["reasons"]}
    assert "reported_destination" in codes or "account_cooldown" in codes


def test_the_default_uses_two_processes_only_where_they_pay() -> None:
    assert replay_jobs(None, 100) == 1  # a fork costs more than a short input saves
    assert replay_jobs(None, PIPELINE_MIN_EVENTS, destination_order=["w"]) == 1
    assert replay_jobs(2, 10) == 2  # asked for
    assert replay_jobs(2, 10, destination_order=["w"]) == 1  # that order is one process's
    with pytest.raises(ValueError, match="1 or 2"):
        replay_jobs(3, 10)
    usable, quota = len(os.sched_getaffinity(0)), cpu_quota()
    two = usable >= 2 and (quota is None or quota >= 2)
    assert replay_jobs(None, PIPELINE_MIN_EVENTS) == (2 if two else 1)
    # Another thread alive: a fork would copy the locks it holds; one process then.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert replay_jobs(None, PIPELINE_MIN_EVENTS) == 1
    finally:
        stop.set()
        other.join()


@pytest.mark.usefixtures("small_batches")
def test_a_failing_account_stage_raises_here_with_its_traceback(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, _ = world
    model = Model.load(DEFAULT_MODEL)
    bad = events[100].withdrawal_id
    account = FeatureState.account

    def broken(self: FeatureState, event: Withdrawal) -> Any:
        if event.withdrawal_id == bad:
            raise ArithmeticError(f"boom at {bad}")
        return account(self, event)

    monkeypatch.setattr(FeatureState, "account", broken)
    with pytest.raises(ReplayError, match=f"ArithmeticError: boom at {bad}"):
        replay(events, model, now=0.0, jobs=2)
    assert not multiprocessing.active_children()


@pytest.mark.usefixtures("small_batches")
def test_a_child_that_dies_is_an_error_not_a_short_result(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, _ = world
    model = Model.load(DEFAULT_MODEL)
    account = FeatureState.account

    def dying(self: FeatureState, event: Withdrawal) -> Any:
        if event.withdrawal_id == events[150].withdrawal_id:
            os._exit(7)  # as a kill -9 or the OOM killer would end it: no message
        return account(self, event)

    monkeypatch.setattr(FeatureState, "account", dying)
    with pytest.raises(ReplayError, match="ended early \\(exit code 7\\)"):
        replay(events, model, now=0.0, jobs=2)
    assert not multiprocessing.active_children()


@pytest.mark.usefixtures("small_batches")
def test_an_error_here_stops_the_child(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    events, _ = world
    model = Model.load(DEFAULT_MODEL)
    decide = Decider.decide
    calls = []

    def failing(self: Decider, items: Any, **kwargs: Any) -> Any:
        calls.append(len(items))
        if len(calls) == 3:
            raise RuntimeError("scoring failed")
        return decide(self, items, **kwargs)

    monkeypatch.setattr(Decider, "decide", failing)
    with pytest.raises(RuntimeError, match="scoring failed"):
        replay(events, model, now=0.0, jobs=2)
    assert not multiprocessing.active_children()


def test_a_generator_of_events_is_replayed_whole(world: World) -> None:
    events, _ = world
    model = Model.load(DEFAULT_MODEL)
    one = replay(events, model, now=0.0, jobs=1)
    two = replay(iter(events), model, now=0.0, jobs=2)
    same(one, two)


@pytest.mark.usefixtures("small_batches")
def test_the_cli_gives_the_same_verdicts_with_either_jobs(world: World, tmp_path: Path) -> None:
    events, labels = world
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(e.to_json()) + "\n" for e in events))
    label_file = tmp_path / "labels.jsonl"
    write_labels(labels, label_file)
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"verdicts-{jobs}.jsonl"
        args = ["replay", "--events", str(source), "--model", str(DEFAULT_MODEL)]
        args += ["--labels", str(label_file), "--out", str(out), "--jobs", jobs]
        assert main(args) == 0
        docs = [json.loads(line) for line in out.read_text().splitlines()]
        for doc in docs:
            del doc["decided_at"]  # the wall clock of each run
        outs.append(docs)
    assert outs[1] == outs[0]
    assert len(outs[1]) == len(events)


def test_a_container_cpu_limit_below_two_keeps_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "cgroup"
    # cgroup v2: one line "0::<path>", the limit in <root>/<path>/cpu.max.
    (tmp_path / "v2" / "pod").mkdir(parents=True)
    own.write_text("0::/pod\n")
    for text, cores in (("150000 100000\n", 1.5), ("400000 100000\n", 4.0), ("max 100000\n", None)):
        (tmp_path / "v2" / "pod" / "cpu.max").write_text(text)
        assert cpu_quota(tmp_path / "v2", own) == cores
    # cgroup v1: the cpu controller's CFS quota and period.
    v1 = tmp_path / "v1" / "cpu" / "docker" / "abc"
    v1.mkdir(parents=True)
    own.write_text("12:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    for quota, cores in (("50000", 0.5), ("-1", None)):
        (v1 / "cpu.cfs_quota_us").write_text(quota + "\n")
        assert cpu_quota(tmp_path / "v1", own) == cores
    assert cpu_quota(tmp_path / "v1", tmp_path / "missing") is None  # no cgroup: no limit
    monkeypatch.setattr(replay_module, "cpu_quota", lambda: 1.0)
    assert replay_jobs(None, PIPELINE_MIN_EVENTS) == 1
    assert replay_jobs(2, PIPELINE_MIN_EVENTS) == 2  # asked for


# A replay whose account stage is slow (10 ms a withdrawal, in the child), which prints the
# child's pid once the first batch is decided, then waits.
_SLOW_REPLAY = """
import multiprocessing, sys, time
from pathlib import Path
from detector.events import validate_withdrawal
from detector.model import Model
from detector.offline import replay as replay_module, simulate
from detector.pipeline import Decider, FeatureState

config = simulate.SimConfig(accounts=100, days=6, seed=5, attacks_per_scenario=2)
events = [validate_withdrawal(doc) for doc in simulate.generate(config)]
replay_module.MESSAGE, replay_module.CHUNK = 7, 50
account = FeatureState.account

def slow(self, event):
    time.sleep(0.01)
    return account(self, event)

def waiting(self, items, **kwargs):
    print("child", multiprocessing.active_children()[0].pid, flush=True)
    time.sleep(60)

FeatureState.account = slow
Decider.decide = waiting
try:
    replay_module.replay(events, Model.load(Path(sys.argv[1])), jobs=2)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def _gone(pid: int, within_s: float) -> bool:
    """True once ``pid`` no longer runs (exited, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _start_slow_replay() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_REPLAY, str(DEFAULT_MODEL)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("child "), line
    return proc, int(line.split()[1])


def test_ctrl_c_stops_both_processes_as_an_interruption() -> None:
    proc, child = _start_slow_replay()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole group
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in out  # not a ReplayError
    assert _gone(child, 5.0)


def test_the_child_of_a_killed_replay_does_not_linger() -> None:
    proc, child = _start_slow_replay()
    proc.kill()  # kill -9 of the parent alone: the child is orphaned mid-stream
    proc.communicate(timeout=30)
    assert _gone(child, 10.0)  # its next send fails: no reader is left
