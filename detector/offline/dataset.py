"""Read withdrawal history from JSONL files; a bad line stops with its number and why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from detector.errors import InputFileError, InvalidEvent
from detector.events import Withdrawal, parse_withdrawal

__all__ = ["iter_events", "load_events"]


def iter_events(path: Path) -> Iterator[Withdrawal]:
    """Validated events in file order. Blank lines are skipped; anything else must be valid."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputFileError(str(path), 0, f"cannot open: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield parse_withdrawal(line.rstrip(b"\r\n"))
            except InvalidEvent as exc:
                raise InputFileError(str(path), number, f"{exc.code}: {exc.reason}") from None


def load_events(path: Path) -> list[Withdrawal]:
    """All events of ``path`` in event-time order (stable: ties keep file order)."""
    events = list(iter_events(path))
    events.sort(key=lambda e: e.requested_at)
    return events
