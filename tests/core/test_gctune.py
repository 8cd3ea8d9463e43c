"""The garbage collector's settings for the worker and for replay."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from detector import gctune


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_settle_freezes_startup_and_sizes_the_young_generation() -> None:
    gc.unfreeze()
    middle, old = gc.get_threshold()[1:]
    gctune.settle(12_345)
    assert gc.get_freeze_count() > 1000  # the interpreter, pytest, the detector's modules
    assert gc.get_threshold() == (12_345, middle, old)
    cycle: list[object] = []
    cycle.append(cycle)  # a cycle made after settling is still collected
    del cycle
    assert gc.collect() >= 1


@pytest.mark.usefixtures("restore_gc")
def test_settle_zero_keeps_the_interpreters_threshold() -> None:
    before = gc.get_threshold()
    gctune.settle(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restore_gc")
def test_relaxed_restores_the_threshold_even_on_error() -> None:
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError), gctune.relaxed(50_000):
        assert gc.get_threshold() == (50_000, 10, 10)
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)
    gc.set_threshold(90_000, 10, 10)
    with gctune.relaxed(50_000):  # never lowers a larger setting
        assert gc.get_threshold() == (90_000, 10, 10)
