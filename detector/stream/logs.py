"""The worker's logging: explicit configuration, and rate limits so an outage cannot flood.

During a broker outage aiokafka, kafka-python and Faust log the same connection error
thousands of times a second (measured: ~100,000 lines in 40 s). :class:`RateLimitFilter`
lets each *kind* of record (logger + message template) through a few times per window and
then counts what it drops; the first record after a quiet window reports the count.
:class:`RateLimitedLog` does the same for our own per-record warnings.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RateLimitFilter", "RateLimitedLog", "configure_logging"]

# Records of one kind let through per window, and the window (s): enough to see what is
# happening, few enough that a tight retry loop stays a handful of lines a minute.
BURST = 5
WINDOW_S = 60.0
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers of the libraries that repeat themselves during outages.
NOISY = ("aiokafka", "kafka", "faust", "mode")


class _Limiter:
    """Per key: how many records passed in the current window, how many were dropped."""

    def __init__(self, burst: int, window_s: float, clock: Callable[[], float]) -> None:
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._state: dict[Any, list[float]] = {}  # key -> [window start, passed, dropped]

    def admit(self, key: Any) -> tuple[bool, int]:
        """``(let it through, records dropped before it in the previous window)``."""
        now = self.clock()
        with self._lock:
            entry = self._state.get(key)
            if entry is None or now - entry[0] >= self.window_s:
                dropped = int(entry[2]) if entry is not None else 0
                self._state[key] = [now, 1, 0]
                if len(self._state) > 10_000:  # bounded: forget the oldest kinds
                    oldest = min(self._state, key=lambda k: self._state[k][0])
                    del self._state[oldest]
                return True, dropped
            if entry[1] < self.burst:
                entry[1] += 1
                return True, 0
            entry[2] += 1
            return False, 0


class RateLimitFilter(logging.Filter):
    """A logging filter: at most ``burst`` records per (logger, template) per window."""

    def __init__(
        self,
        burst: int = BURST,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._limiter = _Limiter(burst, window_s, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        ok, dropped = self._limiter.admit((record.name, record.levelno, str(record.msg)))
        if ok and dropped:
            record.msg = f"{record.msg} [{dropped} similar records suppressed]"
        return ok


class RateLimitedLog:
    """``warning``/``error`` on a logger, each message template limited like the filter."""

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = BURST,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._limiter = _Limiter(burst, window_s, clock)

    def warning(self, msg: str, *args: Any) -> None:
        self._log(logging.WARNING, msg, args)

    def error(self, msg: str, *args: Any) -> None:
        self._log(logging.ERROR, msg, args)

    def _log(self, level: int, msg: str, args: tuple[Any, ...]) -> None:
        ok, dropped = self._limiter.admit((level, msg))
        if not ok:
            return
        if dropped:
            msg = f"{msg} [{dropped} similar messages suppressed]"
        self._logger.log(level, msg, *args)


def configure_logging(level: str) -> logging.Handler:
    """One stderr handler on the root logger at ``level``, rate-limited for the noisy
    libraries; returns the handler. (Faust's own log setup is switched off: see
    ``loghandlers=[]`` and the worker's ``quiet`` spinner.)"""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
