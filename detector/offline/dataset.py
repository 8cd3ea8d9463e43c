"""Read withdrawal history from JSONL files; a bad line stops with its number and why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from detector.errors import InputFileError, InvalidEvent
from detector.events import Withdrawal, decode_json, parse_withdrawal
from detector.labels import Label, validate_label

__all__ = ["iter_events", "load_events", "load_labels"]


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its end) of every non-blank line of ``path``."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputFileError(str(path), 0, f"cannot open: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line.rstrip(b"\r\n")


def iter_events(path: Path) -> Iterator[Withdrawal]:
    """Validated events in file order. Blank lines are skipped; anything else must be valid."""
    for number, line in _lines(path):
        try:
            yield parse_withdrawal(line)
        except InvalidEvent as exc:
            raise InputFileError(str(path), number, f"{exc.code}: {exc.reason}") from None


def load_events(path: Path) -> list[Withdrawal]:
    """All events of ``path`` in event-time order (stable: ties keep file order)."""
    events = list(iter_events(path))
    events.sort(key=lambda e: e.requested_at)
    return events


def load_labels(path: Path, *, source: str = "backtest") -> list[Label]:
    """Labels of a JSONL file, by ``reported_at`` (ties keep file order). Files made for
    backtests often lack the contract's ``label_id`` and ``source``: a missing ``source``
    becomes ``source``, a missing ``label_id`` ``<source>:<line>``."""
    out: list[Label] = []
    for number, line in _lines(path):
        try:
            doc = decode_json(line)
            if isinstance(doc, dict):
                doc.setdefault("source", source)
                doc.setdefault("label_id", f"{doc['source']}:{number}")
            out.append(validate_label(doc))
        except InvalidEvent as exc:
            raise InputFileError(str(path), number, f"{exc.code}: {exc.reason}") from None
    out.sort(key=lambda label: label.reported_at)
    return out
