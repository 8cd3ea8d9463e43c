"""The dead-letter record: built for any input, whatever its size or bytes.

Every invalid record goes to the DLQ topic with its original key and value and headers that
say why. A value too large to forward (the broker accepted it, but a copy with our headers
could exceed the producer's request limit and be retried forever, stalling every partition)
is stored truncated, with its size and SHA-256 in the headers so it can still be identified.
"""

from __future__ import annotations

import hashlib

from detector.errors import InvalidEvent
from detector.events import format_rfc3339

__all__ = [
    "DLQ_MAX_KEY_BYTES",
    "DLQ_MAX_VALUE_BYTES",
    "dead_letter_record",
    "internal_error",
]

# Largest value copied whole into the DLQ (bytes): ~1/8 of the producer's 1 MiB request
# limit, and twice the largest event the parser accepts, so every *parseable-size* record
# is kept whole and nothing the DLQ writes can be refused for its size.
DLQ_MAX_VALUE_BYTES = 128 * 1024
# Largest key copied whole (bytes); keys are account ids of at most 128 characters.
DLQ_MAX_KEY_BYTES = 1024
# Longest header text (bytes): reasons are sentences; this only bounds the unexpected.
_MAX_HEADER_BYTES = 1024

Headers = list[tuple[str, bytes]]


def _clip(data: bytes, limit: int) -> bytes:
    return data if len(data) <= limit else data[:limit]


def dead_letter_record(
    key: bytes | None,
    value: bytes | None,
    exc: InvalidEvent,
    *,
    topic: str,
    partition: int,
    offset: int,
    at: float,
) -> tuple[bytes | None, bytes, Headers]:
    """``(key, value, headers)`` of the DLQ record for an input record and why it failed."""
    value = value or b""
    headers: Headers = [
        ("dlq.code", _clip(exc.code.encode(), _MAX_HEADER_BYTES)),
        ("dlq.reason", _clip(exc.reason.encode("utf-8", "replace"), _MAX_HEADER_BYTES)),
        ("dlq.topic", _clip(topic.encode(), _MAX_HEADER_BYTES)),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
        ("dlq.at", format_rfc3339(at).encode()),
    ]
    if len(value) > DLQ_MAX_VALUE_BYTES:
        headers += [
            ("dlq.truncated", b"value"),
            ("dlq.value_bytes", str(len(value)).encode()),
            ("dlq.value_sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
        value = value[:DLQ_MAX_VALUE_BYTES]
    if key is not None and len(key) > DLQ_MAX_KEY_BYTES:
        headers += [
            ("dlq.truncated_key", b"true"),
            ("dlq.key_bytes", str(len(key)).encode()),
            ("dlq.key_sha256", hashlib.sha256(key).hexdigest().encode()),
        ]
        key = key[:DLQ_MAX_KEY_BYTES]
    return key, value, headers


def internal_error(where: str, exc: BaseException) -> InvalidEvent:
    """An unexpected exception on one record, as a dead-letter reason (the record is kept,
    the worker goes on)."""
    text = f"{type(exc).__name__}: {exc}"
    return InvalidEvent("internal_error", f"{where} failed on this record: {text[:300]}")
