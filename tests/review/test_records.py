"""The review-decisions contract, the label each decision teaches, and reading verdicts."""

from __future__ import annotations

import json

import pytest
from review_inputs import T0, review, verdict, verdict_doc, withdrawal

from detector.errors import InvalidEvent
from detector.events import format_rfc3339
from detector.labels import label_key, parse_label
from detector.pipeline import make_verdict
from detector.review.records import (
    MAX_WHY_CHARS,
    analyst_label,
    parse_review_decision,
    parse_verdict,
)


def test_a_verdict_written_by_the_worker_reads_back_whole() -> None:
    doc = make_verdict(
        withdrawal("w-1"),
        "delay",
        0.646255,
        [
            {"code": "amount_vs_history", "family": "amount", "detail": "amount 40x the median"},
            {"code": "daily_volume", "detail": "$250,000 withdrawn in 24 h"},  # features-v4
        ],
        model_version="iforest-cdafb68553",
        hold_seconds=3600,
        decided_at="2026-11-24T10:00:00.012Z",
    )
    held = parse_verdict(json.dumps(doc).encode())
    assert held.held and held.verdict == "delay"
    assert (held.withdrawal_id, held.account_id) == ("w-1", "acct-1")
    assert held.reasons == (
        ("amount_vs_history", "amount", "amount 40x the median"),
        ("daily_volume", "", "$250,000 withdrawn in 24 h"),
    )
    assert held.decided_at == pytest.approx(T0 + 0.012)
    assert held.due_at == pytest.approx(T0 + 0.012 + 3600)
    assert held.to_json() == {
        k: doc[k] for k in doc if k not in ("withdrawal_id", "account_id", "schema_version")
    }


def test_allow_and_refuse_verdicts_carry_no_hold() -> None:
    for kind in ("allow", "refuse"):
        record = verdict("w-1", verdict=kind)
        assert not record.held and record.hold_seconds == 0
        assert "hold_seconds" not in record.to_json()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"[]", "not_an_object"),
        (b"{}", "bad_verdict"),
        (json.dumps({**verdict_doc("w"), "verdict": "maybe"}).encode(), "bad_verdict"),
        (json.dumps({**verdict_doc("w"), "score": "high"}).encode(), "bad_score"),
        (json.dumps({**verdict_doc("w"), "reasons": "many"}).encode(), "bad_reasons"),
        (json.dumps({**verdict_doc("w"), "hold_seconds": -1}).encode(), "bad_hold_seconds"),
        (json.dumps({**verdict_doc("w"), "decided_at": "soon"}).encode(), "bad_timestamp"),
        (json.dumps({**verdict_doc("w"), "withdrawal_id": ""}).encode(), "bad_withdrawal_id"),
        (b"\xff", "invalid_utf8"),
    ],
)
def test_unreadable_verdicts_are_invalid_events(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_verdict(raw)
    assert info.value.code == code


def test_a_review_decision_carries_the_whole_audit_record_and_round_trips() -> None:
    seen = withdrawal("w-1", metadata={"ip": "203.0.113.7"})
    decision = review(verdict("w-1"), seen=seen, why="  customer unreachable  ")
    doc = decision.to_json()
    assert list(doc) == [
        "review_id",
        "withdrawal_id",
        "account_id",
        "decision",
        "reviewer",
        "reviewed_at",
        "why",
        "verdict",
        "withdrawal",
        "audit",
        "schema_version",
    ]
    assert len(doc["review_id"]) == 32
    assert (doc["withdrawal_id"], doc["account_id"], doc["decision"]) == ("w-1", "acct-1", "refuse")
    assert (doc["reviewer"], doc["why"]) == ("alice", "customer unreachable")
    assert doc["reviewed_at"] == format_rfc3339(T0 + 600)
    assert doc["verdict"]["verdict"] == "delay" and doc["verdict"]["hold_seconds"] == 3600
    assert doc["withdrawal"] == {
        "asset": "BTC",
        "amount": "3.1",
        "amount_usd": 250_000.0,
        "destination": "bc1q-new",
        "requested_at": format_rfc3339(T0),
    }
    assert doc["audit"]["client_addr"] == "127.0.0.1"
    assert doc["schema_version"] == 1
    assert decision.key == b"acct-1"
    assert parse_review_decision(json.dumps(doc).encode()) == decision


def test_each_review_has_its_own_id() -> None:
    held = verdict("w-1")
    assert review(held).review_id != review(held).review_id


@pytest.mark.parametrize(
    ("decision", "why", "reviewer", "code"),
    [
        ("maybe", "ok", "alice", "bad_decision"),
        ("refuse", "   ", "alice", "bad_why"),
        ("refuse", "x" * (MAX_WHY_CHARS + 1), "alice", "bad_why"),
        ("release", "ok", "alice smith", "bad_reviewer"),
    ],
)
def test_a_decision_needs_a_known_outcome_a_reason_and_a_valid_reviewer(
    decision: str, why: str, reviewer: str, code: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        review(verdict("w-1"), decision=decision, why=why, reviewer=reviewer)
    assert info.value.code == code


@pytest.mark.parametrize(("decision", "label"), [("refuse", "fraud"), ("release", "legit")])
def test_every_decision_teaches_a_label_from_the_analyst(decision: str, label: str) -> None:
    made = review(verdict("w-1"), decision=decision, seen=withdrawal("w-1"))
    taught = analyst_label(made)
    assert taught.label == label and taught.source == "analyst"
    assert taught.label_id == f"review:{made.review_id}"
    assert (taught.withdrawal_id, taught.account_id, taught.destination) == (
        "w-1",
        "acct-1",
        "bc1q-new",
    )
    assert taught.reported_at_text == made.reviewed_at_text
    assert taught.note == made.why
    assert label_key(taught) == b"acct-1"
    # the label is a valid record of the labels topic, keyed as documented
    assert parse_label(json.dumps(taught.to_json()).encode(), key=label_key(taught)) == taught


def test_a_label_without_the_withdrawal_seen_names_no_destination() -> None:
    taught = analyst_label(review(verdict("w-1")))
    assert taught.destination is None and taught.account_id == "acct-1"


@pytest.mark.parametrize(
    "change",
    [
        {"decision": "hold"},
        {"reviewer": ""},
        {"why": " "},
        {"reviewed_at": "later"},
        {"audit": []},
        {"schema_version": 2},
    ],
)
def test_review_decisions_that_break_the_contract_are_invalid_events(
    change: dict[str, object],
) -> None:
    doc = {**review(verdict("w-1")).to_json(), **change}
    with pytest.raises(InvalidEvent):
        parse_review_decision(json.dumps(doc).encode())
