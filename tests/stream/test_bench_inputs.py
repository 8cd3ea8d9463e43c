"""The throughput benchmark's input: what it produces must be a plausible withdrawal history."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from detector.events import parse_rfc3339, validate_withdrawal


def test_withdrawals_tops_up_with_copies_that_follow_the_history_in_time(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate = bench.simulate.generate

    def short(config: Any) -> list[dict[str, Any]]:
        return generate(config)[:500]  # fewer than asked for: the top-up runs

    monkeypatch.setattr(bench.simulate, "generate", short)
    events = bench.withdrawals(1_250)
    assert len(events) == 1_250
    assert len({e["withdrawal_id"] for e in events}) == 1_250
    times = [parse_rfc3339(e["requested_at"]) for e in events]
    assert times == sorted(times)  # copies come after the history, not on top of it
    span = times[499] - times[0] + 3600.0
    assert times[500] == pytest.approx(times[0] + span, abs=1e-3)
    assert times[1_000] == pytest.approx(times[0] + 2 * span, abs=1e-3)
    for e in (events[0], events[500], events[1_249]):
        validate_withdrawal(e)  # every copy is a valid withdrawal
