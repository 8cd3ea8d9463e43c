"""Broker tier: the README's first command (`detector demo`) shows verdicts flowing."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from kafka_io import DEFAULT_MODEL, free_port

from detector.config import Settings
from detector.local.demo import run_demo

pytestmark = pytest.mark.broker


def test_demo_streams_and_reports_on_a_real_broker(
    bootstrap_servers: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers)  # use the test broker
    settings = replace(
        Settings.from_env(), model_dir=DEFAULT_MODEL, data_dir=tmp_path, web_port=free_port()
    )
    assert run_demo(settings, duration=6.0, rate=800.0, accounts=120) == 0
    out = capsys.readouterr().out
    sent = int(re.search(r"withdrawals sent: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert sent > 1000
    assert f"verdicts: {sent}   missing: 0" in out
    assert "dead-letter records: 12" in out
    assert re.search(r"latency \(produced -> verdict consumed\): p50 [\d.]+ ms", out)
    # Attacks were streamed and the summary reports them per scenario.
    for scenario in ("scripted_burst", "fan_in", "structuring"):
        assert re.search(rf"{scenario}\s+\d+/\d+\s+flagged", out), scenario
    assert "=== demo summary ===" in out
