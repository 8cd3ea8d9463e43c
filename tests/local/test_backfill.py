"""Backfill's state build (no Kafka): the state the worker would hold after the history."""

from __future__ import annotations

from kafka_io import DEFAULT_MODEL

from detector.config import Settings
from detector.events import validate_withdrawal
from detector.local.backfill import build_state
from detector.model import Model
from detector.offline import simulate
from detector.pipeline import FeatureState


def test_the_backfilled_state_is_the_deciding_state_without_its_dedupe_memory() -> None:
    config = simulate.SimConfig(accounts=80, days=6, seed=3, attacks_per_scenario=1)
    events = [validate_withdrawal(doc) for doc in simulate.generate(config)]
    params = Model.load(DEFAULT_MODEL).params
    deciding = FeatureState(params)
    for event in events:
        deciding.step(event)
    history = [*events[:50], events[10], *events[50:]]  # a producer's retry in the file
    warm = build_state(history, Settings(), params)
    for state in deciding.accounts.values():
        del state["seen"]
    assert warm.accounts == deciding.accounts
    assert warm.destinations == deciding.destinations
    assert warm.decided == {}
