"""Hand-made inputs the core tests share: feature scales with round numbers, withdrawals."""

from __future__ import annotations

import math

from detector.events import Withdrawal, format_rfc3339
from detector.features import FeatureParams

DAY = 86400.0

# Scales as training would learn them on a population withdrawing ~100 every ~day.
PARAMS = FeatureParams(
    log_amount_median=math.log(100.0),
    acct_log_median=math.log(100.0),
    acct_log_mean=math.log(120.0),
    sigma_within=0.5,
    sigma_between=1.0,
    unit_s=DAY,
    acct_gap_s=DAY,
    new_curve=(1.0, 0.4, 0.25, 0.18, 0.11, 0.08, 0.05, 0.04),
    new_rate=0.1,
)


def withdrawal(
    t: float,
    value: float = 100.0,
    *,
    dest: str = "addr-1",
    account: str = "a1",
    wid: str = "w",
    asset: str = "USDT",
    amount: float | None = None,
) -> Withdrawal:
    """A withdrawal at epoch ``t`` of ``value`` (USD; ``amount`` in the asset, default the
    same number)."""
    units = value if amount is None else amount
    return Withdrawal(wid, account, asset, str(units), value, dest, t, format_rfc3339(t), None)
