"""The detector learns its scales from the data: a world in another currency unit, or one
whose accounts withdraw four times more or less often, gets the same verdicts.

Every scale a feature uses (amounts, the usual gap, the long window, the new-destination
rate) is learned by ``learn_params``; nothing is a dollar amount or a number of minutes in
the code. So multiplying every amount by 1000 (or 0.001), or stretching every time gap by 4
(or 0.25), and training again on the transformed history must change no verdict, and the
model rows only by rounding.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import pytest

from detector.events import Withdrawal, format_rfc3339, validate_withdrawal
from detector.features import learn_params
from detector.offline import simulate
from detector.offline.replay import replay
from detector.offline.training import fit_model
from detector.pipeline import feature_rows

Transform = Callable[[Withdrawal], Withdrawal]


@functools.cache
def _world() -> tuple[list[Withdrawal], float]:
    config = simulate.SimConfig(accounts=120, days=10, seed=7, attacks_per_scenario=2)
    events = [validate_withdrawal(doc) for doc in simulate.generate(config)]
    events.sort(key=lambda e: e.requested_at)
    return events, events[0].requested_at


def _amounts(factor: float) -> Transform:
    def scaled(e: Withdrawal) -> Withdrawal:
        usd = None if e.amount_usd is None else e.amount_usd * factor
        return dataclasses.replace(e, amount=repr(float(e.amount) * factor), amount_usd=usd)

    return scaled


def _gaps(factor: float) -> Transform:
    origin = _world()[1]

    def stretched(e: Withdrawal) -> Withdrawal:
        t = origin + (e.requested_at - origin) * factor  # features read the float
        return dataclasses.replace(e, requested_at=t, requested_at_text=format_rfc3339(t))

    return stretched


def _decide(events: list[Withdrawal]) -> tuple[list[str], np.ndarray]:
    params = learn_params(events)
    rows = np.array([it.row for it in feature_rows(events, params)], dtype=np.float64)
    model, _ = fit_model(
        rows, params, delay_rate=0.02, refuse_rate=0.004, n_estimators=40, max_samples=256
    )
    result = replay(events, model, now=0.0)
    return [v["verdict"] for v in result.verdicts], rows


@functools.cache
def _base() -> tuple[list[str], np.ndarray]:
    return _decide(_world()[0])


@pytest.mark.parametrize(
    ("name", "transform"),
    [
        ("amounts x1000", _amounts(1000.0)),
        ("amounts x0.001", _amounts(0.001)),
        ("gaps x4", _gaps(4.0)),
        ("gaps x0.25", _gaps(0.25)),
    ],
)
def test_verdicts_do_not_depend_on_the_currency_unit_or_the_pace(
    name: str, transform: Transform
) -> None:
    verdicts, rows = _base()
    assert {"delay", "refuse"} & set(verdicts)  # the base world does flag withdrawals
    changed, changed_rows = _decide([transform(e) for e in _world()[0]])
    np.testing.assert_allclose(changed_rows, rows, rtol=1e-6, atol=1e-6, err_msg=name)
    differ = sum(a != b for a, b in zip(verdicts, changed, strict=True))
    assert differ == 0, f"{name}: {differ} of {len(verdicts)} verdicts differ"
