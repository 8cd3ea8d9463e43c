"""Python's cyclic garbage collector, sized for a process that keeps a large live state.

The worker keeps every account's and destination's state in memory, as many small lists and
dicts: CPython's collector traverses them again and again although they are rarely garbage.
Draining 50,000 withdrawals (``bench/bench_throughput.py``), one worker spent 1.9-3.0 s of
23-34 s of CPU in collections, most of it in 11-13 full collections of 110-150 ms each (a
pause of the event loop every few thousand withdrawals); with the two measures below,
0.36-0.55 s and 2 full collections (README, Performance). The measures:

- :func:`settle` (the worker, once started): what startup built (modules, the Faust app, the
  model) moves to the permanent generation, never traversed again, and the young generation
  is collected every ``young`` allocations instead of Python's 700.
- :func:`relaxed` (``replay`` and the tools built on it): a larger young generation for the
  duration of a call that builds many small objects, then Python's settings again.

Reference cycles are still collected; only less often.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["REPLAY_YOUNG", "relaxed", "settle"]

# Young-generation size while replaying (allocations between collections).
REPLAY_YOUNG = 100_000


def settle(young: int) -> None:
    """Freeze what exists now and collect the young generation every ``young`` allocations
    (0 keeps the interpreter's threshold)."""
    gc.collect()
    gc.freeze()
    if young > 0:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young, middle, old)


@contextmanager
def relaxed(young: int = REPLAY_YOUNG) -> Iterator[None]:
    """Collect the young generation every ``young`` allocations inside the block."""
    before = gc.get_threshold()
    if young > before[0]:
        gc.set_threshold(young, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
