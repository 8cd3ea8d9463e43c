"""The chaos harness's audit without a broker: its comparison with ``replay`` and its topics."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from detector.config import Settings
from detector.events import validate_withdrawal
from detector.model import Model
from detector.offline.replay import replay
from detector.pipeline import verdict_text

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_harness", REPO / "bench" / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos_harness"] = module
    spec.loader.exec_module(module)
    return module


def _worker_run(events: list[dict[str, Any]], settings: Settings) -> dict[str, list[bytes]]:
    """What a faithful worker publishes: replay's verdicts (destination order = event order)."""
    offline = replay(
        [validate_withdrawal(e) for e in events],
        Model.load(settings.model_dir),
        hold_seconds=settings.hold_seconds,
        destination_order=[e["withdrawal_id"] for e in events],
    )
    return {v["withdrawal_id"]: [verdict_text(v).encode()] for v in offline.verdicts}


def test_a_forwarded_but_undecided_withdrawal_still_counts_for_later_ones(
    chaos: ModuleType,
) -> None:
    # A stalled destination partition: withdrawals forwarded (the account stage counted them)
    # but never decided. Their accounts' later withdrawals were decided with that history;
    # replay must count them too, or it reports those verdicts as mismatches.
    settings = replace(Settings(), model_dir=REPO / "models" / "default")
    events = chaos.make_events(600, 7)
    order = [e["withdrawal_id"] for e in events]
    verdicts = _worker_run(events, settings)
    by_account: dict[str, list[str]] = {}
    for e in events:
        by_account.setdefault(e["account_id"], []).append(e["withdrawal_id"])
    undecided = [ids[0] for ids in by_account.values() if len(ids) >= 3][:20]
    assert undecided
    for wid in undecided:
        del verdicts[wid]
    assert chaos._replay_mismatches(settings, events, order, verdicts) == []
    # ... and a real difference is still found.
    wid = next(iter(verdicts))
    verdicts[wid] = [verdicts[wid][0].replace(b'"score":', b'"score":1', 1)]
    (mismatch,) = chaos._replay_mismatches(settings, events, order, verdicts)
    assert mismatch["withdrawal_id"] == wid and mismatch["field"] == "score"


def test_a_run_has_topics_of_its_own(chaos: ModuleType) -> None:
    # The default labels topic is shared with everything else on the broker: a run's workers
    # would apply labels that replay never sees, and other runs create and delete it.
    names = chaos.run_topic_names("abc123")
    defaults = Settings()
    for field in ("topic_withdrawals", "topic_decisions", "topic_dlq", "topic_labels"):
        assert "abc123" in names[field] and names[field] != getattr(defaults, field)
    assert "abc123" in names["topic_decisions_shadow"]


def test_ci_mode_keeps_every_option_given(chaos: ModuleType) -> None:
    """``--ci`` shrinks the run, but only where the caller said nothing: a ``--schedule`` equal
    to the parser's default (kill,kill) once became a single kill."""
    given = chaos.parse_args(["--ci", "--schedule", "kill,kill", "--drain-timeout=90"])
    assert (given.schedule, given.drain_timeout, given.n) == ("kill,kill", 90.0, 2000)
    plain = chaos.parse_args(["--ci"])
    assert (plain.schedule, plain.drain_timeout, plain.settle) == ("kill", 60.0, 25.0)
    assert chaos.parse_args([]).schedule == "kill,kill"
