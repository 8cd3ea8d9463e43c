"""Per-withdrawal history, computed from the contract's fields only (not the model's).

The baselines and the "what the misses look like" sections need, for every withdrawal,
what the account did before it: its trailing 30-day median amount, how many withdrawals it
made in the last hour and day, and whether it paid this destination before. One pass over
history + test in time order (warm, like the replays), exactly the definitions of Sparkov's
``baselines.py`` (``trailing_median``, ``history_features``), so the baselines computed here
reproduce that script's numbers.
"""

from __future__ import annotations

import bisect
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["History", "history"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]

_DAY_S = 86_400.0  # seconds in a day (s)
_HOUR_S = 3_600.0  # seconds in an hour (s)
# Window of the trailing median amount (days): Sparkov's baselines.py uses 30.
MEDIAN_DAYS = 30.0


@dataclass(frozen=True)
class History:
    """Per withdrawal (same order as the input)."""

    median_30d: FloatArray  # the account's median amount over the previous 30 days (NaN: none)
    count_1h: IntArray  # the account's withdrawals in the last hour, this one included
    count_24h: IntArray  # the same over 24 hours
    new_destination: BoolArray  # the account never paid this destination before

    def ratio_of(self, amounts: FloatArray) -> FloatArray:
        """Amount / the account's trailing 30-day median (1 without history), Sparkov's
        baselines.py ``ratio``."""
        missing = np.isnan(self.median_30d)
        return np.where(missing, 1.0, amounts / np.where(missing, 1.0, self.median_30d))


def history(
    accounts: Sequence[str],
    times: FloatArray,
    amounts: FloatArray,
    destinations: Sequence[str],
) -> History:
    """One pass in the given order, which must be event-time order."""
    n = len(times)
    if np.any(np.diff(times) < 0):
        raise ValueError("withdrawals must be in time order")
    median = np.full(n, np.nan)
    c1h = np.zeros(n, dtype=np.int32)
    c24h = np.zeros(n, dtype=np.int32)
    new = np.zeros(n, dtype=np.bool_)
    window: defaultdict[str, deque[tuple[float, float]]] = defaultdict(deque)
    ordered: defaultdict[str, list[float]] = defaultdict(list)  # sorted amounts of window
    recent: defaultdict[str, deque[float]] = defaultdict(deque)  # times within 24 h
    paid: defaultdict[str, set[str]] = defaultdict(set)
    horizon = MEDIAN_DAYS * _DAY_S
    t_list = times.tolist()
    x_list = amounts.tolist()
    for i in range(n):
        a, t, x = accounts[i], t_list[i], x_list[i]
        w, s = window[a], ordered[a]
        while w and w[0][0] <= t - horizon:
            s.pop(bisect.bisect_left(s, w.popleft()[1]))
        if s:
            m = len(s)
            median[i] = s[m // 2] if m % 2 else 0.5 * (s[m // 2 - 1] + s[m // 2])
        w.append((t, x))
        bisect.insort(s, x)
        q = recent[a]
        while q and q[0] <= t - _DAY_S:
            q.popleft()
        q.append(t)
        c24h[i] = len(q)
        c1h[i] = len(q) - bisect.bisect_right(q, t - _HOUR_S)
        dests = paid[a]
        d = destinations[i]
        if d not in dests:
            new[i] = True
            dests.add(d)
    return History(median, c1h, c24h, new)
