"""Builders of the review queue's inputs: withdrawals, verdicts, review decisions."""

from __future__ import annotations

import json
from typing import Any

from detector.events import Withdrawal, format_rfc3339, validate_withdrawal
from detector.review.records import (
    ReviewDecision,
    VerdictRecord,
    new_review_decision,
    parse_verdict,
)

T0 = 1_795_514_400.0  # 2026-11-24T10:00:00Z


def withdrawal(
    wid: str,
    account: str = "acct-1",
    *,
    usd: float | None = 250_000.0,
    asset: str = "BTC",
    destination: str = "bc1q-new",
    at: float = T0,
    metadata: dict[str, Any] | None = None,
) -> Withdrawal:
    doc: dict[str, Any] = {
        "withdrawal_id": wid,
        "account_id": account,
        "asset": asset,
        "amount": "3.1",
        "destination": destination,
        "requested_at": format_rfc3339(at),
    }
    if usd is not None:
        doc["amount_usd"] = usd
    if metadata is not None:
        doc["metadata"] = metadata
    return validate_withdrawal(doc)


def verdict_doc(
    wid: str,
    account: str = "acct-1",
    *,
    verdict: str = "delay",
    at: float = T0 + 0.01,
    hold_seconds: int = 3600,
    reasons: tuple[str, ...] = ("amount_vs_history", "new_destination"),
    score: float = 0.646,
) -> dict[str, Any]:
    """A verdict document exactly as the worker writes it (detector.pipeline.make_verdict)."""
    doc: dict[str, Any] = {
        "withdrawal_id": wid,
        "account_id": account,
        "verdict": verdict,
        "score": score,
        "reasons": [{"code": c, "detail": f"{c} detail"} for c in reasons]
        if verdict != "allow"
        else [],
        "model_version": "iforest-test",
        "decided_at": format_rfc3339(at),
        "schema_version": 1,
    }
    if verdict == "delay":
        doc["hold_seconds"] = hold_seconds
    return doc


def verdict(wid: str, account: str = "acct-1", **kwargs: Any) -> VerdictRecord:
    return parse_verdict(json.dumps(verdict_doc(wid, account, **kwargs)).encode())


def review(
    held: VerdictRecord,
    *,
    decision: str = "refuse",
    reviewer: str = "alice",
    why: str = "new address, 250x the usual amount",
    at: float = T0 + 600,
    seen: Withdrawal | None = None,
) -> ReviewDecision:
    return new_review_decision(
        held=held,
        withdrawal=seen,
        decision=decision,
        reviewer=reviewer,
        why=why,
        at=at,
        audit={"client_addr": "127.0.0.1", "user_agent": "test", "session": "abcd1234"},
    )
