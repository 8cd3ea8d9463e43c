"""What the review queue reads and writes on Kafka.

Reads verdicts from ``decisions`` (:func:`parse_verdict`; only ``delay`` ones are queued) and
writes, for every analyst decision, one record to ``review-decisions`` and one label to
``labels`` (:func:`analyst_label`, the contract of :mod:`detector.labels`).

The ``review-decisions`` contract (topic ``review-decisions``, key = ``account_id``, UTF-8
JSON; consumed by wallet services, which release or cancel the held withdrawal)::

    {"review_id": "2c5e0b0d4f7a4c4e9f1d3b7a8e6c5d4f",
     "withdrawal_id": "w-1", "account_id": "acct-7",
     "decision": "refuse",
     "reviewer": "alice", "reviewed_at": "2026-11-24T10:05:00.000Z",
     "why": "new address, 250x the usual amount, customer unreachable",
     "verdict": {"verdict": "delay", "score": 0.646, "reasons": [{"code": "...", "detail": "..."}],
                 "model_version": "iforest-cdafb68553", "decided_at": "2026-11-24T10:00:00.012Z",
                 "hold_seconds": 3600},
     "withdrawal": {"asset": "BTC", "amount": "3.1", "amount_usd": 250000.0,
                    "destination": "bc1q...", "requested_at": "2026-11-24T10:00:00.000Z"},
     "audit": {"client_addr": "10.0.0.7", "user_agent": "Mozilla/5.0 ...",
               "session": "3f2a9c1e", "service": "detector-review 0.1.0 on host-1"},
     "schema_version": 1}

* ``decision``: ``release`` (let it go) or ``refuse`` (cancel it). Final.
* The audit record is the document itself: ``reviewer`` (who), ``reviewed_at`` (when),
  ``decision`` on ``withdrawal_id`` (what), ``why`` (the analyst's required reason, 1..2,000
  characters); ``audit`` adds where it came from (client address, user agent, a short hash of
  the session, the service instance). The same record is logged by the service.
* ``verdict``: the held verdict the analyst reviewed; ``withdrawal``: what the page showed
  of the withdrawal (absent when the service had not seen it).
* ``review_id`` is unique per decision. At most one decision per withdrawal is written by a
  service instance; should two analysts on two instances decide the same withdrawal at the
  same moment, the first record on the partition (same key, same partition) wins: consumers
  take the first ``review-decisions`` record per ``withdrawal_id`` and ignore later ones.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from detector.errors import InvalidEvent
from detector.events import (
    MAX_ID_CHARS,
    Withdrawal,
    decode_json,
    format_rfc3339,
    parse_rfc3339,
)
from detector.labels import MAX_NOTE_CHARS, Label

__all__ = [
    "ANALYST_SOURCE",
    "DECISIONS",
    "LABEL_OF_DECISION",
    "MAX_WHY_CHARS",
    "REVIEW_SCHEMA_VERSION",
    "Decision",
    "ReviewDecision",
    "VerdictRecord",
    "analyst_label",
    "new_review_decision",
    "parse_review_decision",
    "parse_verdict",
    "valid_reviewer",
]

Decision = Literal["release", "refuse"]
DECISIONS: tuple[Decision, ...] = ("release", "refuse")
REVIEW_SCHEMA_VERSION = 1
# The analyst's reason is free text for auditors: a paragraph, stored whole in the label's
# note as well, so the two limits are one (characters).
MAX_WHY_CHARS = MAX_NOTE_CHARS
# A verdict is ids, a score and three reasons; a review decision adds a withdrawal summary and
# a paragraph. Anything bigger is not ours (bytes).
MAX_RECORD_BYTES = 64 * 1024
# What each final decision teaches: a refused withdrawal was fraud, a released one legit.
LABEL_OF_DECISION: dict[Decision, Literal["fraud", "legit"]] = {
    "refuse": "fraud",
    "release": "legit",
}
ANALYST_SOURCE = "analyst"
# Reviewer names: the users file's names (login names, e-mail-like ids).
_REVIEWER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
_VERDICTS = ("allow", "delay", "refuse")


def valid_reviewer(name: str) -> bool:
    """A reviewer name the contract accepts (1..64 characters: letters, digits, ``._@+-``)."""
    return bool(_REVIEWER.match(name))


@dataclass(frozen=True, slots=True)
class VerdictRecord:
    """A verdict read from ``decisions``; ``hold_seconds`` is 0 unless it is a ``delay``."""

    withdrawal_id: str
    account_id: str
    verdict: str
    score: float
    reasons: tuple[tuple[str, str, str], ...]  # (code, family, detail); family "" if absent
    model_version: str
    decided_at: float
    decided_at_text: str
    hold_seconds: int = 0

    @property
    def held(self) -> bool:
        return self.verdict == "delay"

    @property
    def due_at(self) -> float:
        """When the hold ends (epoch seconds)."""
        return self.decided_at + self.hold_seconds

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(code for code, _, _ in self.reasons)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "verdict": self.verdict,
            "score": self.score,
            "reasons": [
                {"code": c, "family": f, "detail": d} if f else {"code": c, "detail": d}
                for c, f, d in self.reasons
            ],
            "model_version": self.model_version,
            "decided_at": self.decided_at_text,
        }
        if self.held:
            out["hold_seconds"] = self.hold_seconds
        return out


def parse_verdict(raw: bytes) -> VerdictRecord:
    """One record of ``decisions`` (the verdict contract); anything else is InvalidEvent."""
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidEvent("too_large", f"verdict is {len(raw)} bytes")
    doc = _object(decode_json(raw), "verdict")
    kind = _str(doc, "verdict", 16)
    if kind not in _VERDICTS:
        raise InvalidEvent("bad_verdict", f"verdict must be one of {_VERDICTS}, got {kind!r}")
    score = doc.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise InvalidEvent("bad_score", "score must be a finite number")
    reasons = doc.get("reasons") or []
    if not isinstance(reasons, list) or not all(isinstance(r, dict) for r in reasons):
        raise InvalidEvent(
            "bad_reasons", "reasons must be a list of {code, family, detail} objects"
        )
    hold = doc.get("hold_seconds", 0) if kind == "delay" else 0
    if isinstance(hold, bool) or not isinstance(hold, int) or hold < 0:
        raise InvalidEvent("bad_hold_seconds", "hold_seconds must be an integer >= 0")
    decided_text = _str(doc, "decided_at", 64)
    return VerdictRecord(
        withdrawal_id=_str(doc, "withdrawal_id", MAX_ID_CHARS),
        account_id=_str(doc, "account_id", MAX_ID_CHARS),
        verdict=kind,
        score=float(score),
        reasons=tuple(
            (
                str(r.get("code", ""))[:64],
                str(r.get("family", ""))[:32],
                str(r.get("detail", ""))[:500],
            )
            for r in reasons[:10]
        ),
        model_version=str(doc.get("model_version", ""))[:128],
        decided_at=parse_rfc3339(decided_text, field="decided_at"),
        decided_at_text=decided_text,
        hold_seconds=hold,
    )


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    """One record of ``review-decisions`` (see the module docstring for the contract)."""

    review_id: str
    withdrawal_id: str
    account_id: str
    decision: Decision
    reviewer: str
    reviewed_at: float
    reviewed_at_text: str
    why: str
    verdict: dict[str, Any] | None = None
    withdrawal: dict[str, Any] | None = None
    audit: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> bytes:
        """The Kafka key: the account_id (like withdrawals and verdicts)."""
        return self.account_id.encode()

    @property
    def destination(self) -> str | None:
        if self.withdrawal is None:
            return None
        destination = self.withdrawal.get("destination")
        return destination if isinstance(destination, str) and destination.strip() else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "review_id": self.review_id,
            "withdrawal_id": self.withdrawal_id,
            "account_id": self.account_id,
            "decision": self.decision,
            "reviewer": self.reviewer,
            "reviewed_at": self.reviewed_at_text,
            "why": self.why,
        }
        if self.verdict is not None:
            out["verdict"] = self.verdict
        if self.withdrawal is not None:
            out["withdrawal"] = self.withdrawal
        out["audit"] = self.audit
        out["schema_version"] = REVIEW_SCHEMA_VERSION
        return out

    @staticmethod
    def summarize(withdrawal: Withdrawal) -> dict[str, Any]:
        """The ``withdrawal`` field: what the analyst saw (no metadata)."""
        out: dict[str, Any] = {
            "asset": withdrawal.asset,
            "amount": withdrawal.amount,
            "destination": withdrawal.destination,
            "requested_at": withdrawal.requested_at_text,
        }
        if withdrawal.amount_usd is not None:
            out["amount_usd"] = withdrawal.amount_usd
        return out


def new_review_decision(
    *,
    held: VerdictRecord,
    withdrawal: Withdrawal | None,
    decision: str,
    reviewer: str,
    why: str,
    at: float,
    audit: dict[str, Any],
) -> ReviewDecision:
    """An analyst's decision on a held verdict, checked like one read back from Kafka
    (InvalidEvent: the page shows the reason). ``why`` is stripped and must not be blank."""
    if decision not in DECISIONS:
        raise InvalidEvent("bad_decision", f"decision must be one of {', '.join(DECISIONS)}")
    if not valid_reviewer(reviewer):
        raise InvalidEvent("bad_reviewer", f"reviewer {reviewer!r} is not a valid name")
    why = why.strip()
    if not why:
        raise InvalidEvent("bad_why", "say why: the reason is part of the audit record")
    if len(why) > MAX_WHY_CHARS:
        raise InvalidEvent(
            "bad_why", f"the reason has {len(why)} characters, the limit is {MAX_WHY_CHARS}"
        )
    at_text = format_rfc3339(at)
    return ReviewDecision(
        review_id=uuid.uuid4().hex,
        withdrawal_id=held.withdrawal_id,
        account_id=held.account_id,
        decision="refuse" if decision == "refuse" else "release",
        reviewer=reviewer,
        reviewed_at=parse_rfc3339(at_text),
        reviewed_at_text=at_text,
        why=why,
        verdict=held.to_json(),
        withdrawal=None if withdrawal is None else ReviewDecision.summarize(withdrawal),
        audit=audit,
    )


def parse_review_decision(raw: bytes) -> ReviewDecision:
    """One record of ``review-decisions``; anything else is InvalidEvent."""
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidEvent("too_large", f"review decision is {len(raw)} bytes")
    doc = _object(decode_json(raw), "review decision")
    decision = doc.get("decision")
    if decision not in DECISIONS:
        raise InvalidEvent("bad_decision", f"decision must be one of {DECISIONS}")
    reviewer = _str(doc, "reviewer", 64)
    if not valid_reviewer(reviewer):
        raise InvalidEvent("bad_reviewer", f"reviewer {reviewer!r} is not a valid name")
    why = _str(doc, "why", MAX_WHY_CHARS)
    if not why.strip():
        raise InvalidEvent("bad_why", "why must not be blank")
    if doc.get("schema_version", REVIEW_SCHEMA_VERSION) != REVIEW_SCHEMA_VERSION:
        raise InvalidEvent("bad_schema_version", f"schema_version must be {REVIEW_SCHEMA_VERSION}")
    reviewed_text = _str(doc, "reviewed_at", 64)
    verdict, withdrawal, audit = doc.get("verdict"), doc.get("withdrawal"), doc.get("audit", {})
    if any(v is not None and not isinstance(v, dict) for v in (verdict, withdrawal, audit)):
        raise InvalidEvent("bad_field", "verdict, withdrawal and audit must be objects")
    return ReviewDecision(
        review_id=_str(doc, "review_id", MAX_ID_CHARS),
        withdrawal_id=_str(doc, "withdrawal_id", MAX_ID_CHARS),
        account_id=_str(doc, "account_id", MAX_ID_CHARS),
        decision="refuse" if decision == "refuse" else "release",
        reviewer=reviewer,
        reviewed_at=parse_rfc3339(reviewed_text, field="reviewed_at"),
        reviewed_at_text=reviewed_text,
        why=why,
        verdict=verdict,
        withdrawal=withdrawal,
        audit=audit or {},
    )


def analyst_label(decision: ReviewDecision) -> Label:
    """The label a final decision teaches: ``fraud`` for refuse, ``legit`` for release, from
    source ``analyst``, about the withdrawal, its account and (when known) its destination.
    ``label_id`` is ``review:<review_id>``, so a resent label deduplicates."""
    return Label.create(
        label_id=f"review:{decision.review_id}",
        label=LABEL_OF_DECISION[decision.decision],
        source=ANALYST_SOURCE,
        reported_at=decision.reviewed_at,
        withdrawal_id=decision.withdrawal_id,
        account_id=decision.account_id,
        destination=decision.destination,
        note=decision.why,
    )


def _object(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise InvalidEvent("not_an_object", f"a {what} must be a JSON object")
    return doc


def _str(doc: dict[str, Any], name: str, limit: int) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise InvalidEvent(f"bad_{name}", f"{name} must be a string of 1..{limit} characters")
    return value
