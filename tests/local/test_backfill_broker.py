"""A warm start: state built from history by `detector backfill`, recovered by a new worker,
and its first verdict equal to `replay` over the history plus that withdrawal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka_io import DEFAULT_MODEL, consume_until, produce, verdicts_of

from detector.config import Settings
from detector.errors import KafkaSetupError
from detector.events import validate_withdrawal
from detector.local.backfill import backfill
from detector.model import Model
from detector.offline import simulate
from detector.offline.replay import replay

pytestmark = pytest.mark.broker


def test_the_first_verdict_after_a_backfill_equals_replay_of_history_and_it(
    worker_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Any],
    tmp_path: Path,
) -> None:
    events = simulate.generate(
        simulate.SimConfig(accounts=120, days=10, seed=33, attacks_per_scenario=1)
    )
    history, probes = events[:-40], events[-40:]  # decide the last 40 after a warm start
    path = tmp_path / "history.jsonl"
    simulate.write_jsonl(history, path)
    settings = worker_settings(partitions=4)
    result = backfill(path, settings, Model.load(DEFAULT_MODEL).params, log=lambda _: None)
    assert result.events == len(history) and result.accounts > 100
    start_worker(settings)
    probe_records = [(e["account_id"].encode(), simulate.encode_event(e)) for e in probes]
    produce(settings, probe_records)
    got = consume_until(settings, [settings.topic_decisions], lambda r: len(r) >= len(probes))
    online = {v["withdrawal_id"]: v for v in verdicts_of(got, settings.topic_decisions)}
    offline = replay([validate_withdrawal(e) for e in events], Model.load(DEFAULT_MODEL))
    expected = {v["withdrawal_id"]: v for v in offline.verdicts[-len(probes) :]}
    assert set(online) == set(expected)
    for wid, verdict in expected.items():
        assert online[wid]["score"] == verdict["score"], wid
        assert online[wid]["reasons"] == verdict["reasons"], wid
    # Warm, not cold: at least one probe's account had history the worker used.
    cold = replay([validate_withdrawal(e) for e in probes], Model.load(DEFAULT_MODEL))
    assert [v["score"] for v in cold.verdicts] != [
        expected[e["withdrawal_id"]]["score"] for e in probes
    ]


def test_a_backfill_is_refused_while_workers_run(
    worker_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Any],
    tmp_path: Path,
) -> None:
    settings = worker_settings(partitions=2)
    start_worker(settings)
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps({"withdrawal_id": "x"}) + "\n")
    with pytest.raises(KafkaSetupError, match="stop the workers"):
        backfill(path, settings, Model.load(DEFAULT_MODEL).params, log=lambda _: None)
