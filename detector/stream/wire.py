"""The record stage 1 sends stage 2 through Kafka: versioned, batched, read by field name.

Version 2 (written now) carries many withdrawals per Kafka record: everything one stage-1
micro-batch sends to one destination partition, so stage 2 pays Faust's per-record cost
once per batch rather than once per withdrawal; labels naming a destination travel the
same way, in order with the withdrawals::

    {"v": 2, "items": [{"e": <withdrawal>, "a": <account features by name>},
                       {"l": <label>}, ...]}

Readers accept every version: 2, 1 (``{"v": 1, "e": ..., "a": ...}``: one withdrawal) and 0
(no ``v``; account features as a positional list). Unknown fields are ignored and features a
newer writer added are dropped, missing ones take their defaults, so workers of two versions
side by side during a rolling deploy read each other's records instead of dead-lettering
them.
"""

from __future__ import annotations

from typing import Any

import orjson

from detector.errors import InvalidEvent
from detector.events import Withdrawal, validate_withdrawal
from detector.features import AccountFeatures
from detector.labels import Label, validate_label

__all__ = [
    "MAX_RECORD_BYTES",
    "PAYLOAD_VERSION",
    "batch_records",
    "decode_forwards",
    "encode_item",
    "encode_label",
]

PAYLOAD_VERSION = 2
# Largest forward record (bytes): half the producer's 1 MiB request limit. Items are at
# most ~66 KiB (a 64 KiB event and its features), so any item fits with room to spare.
MAX_RECORD_BYTES = 512 * 1024
_HEAD = b'{"v":2,"items":['
_TAIL = b"]}"


def encode_item(event: Withdrawal, acc: AccountFeatures) -> bytes:
    """One withdrawal and its account features, as an element of a version-2 record."""
    return orjson.dumps({"e": event.to_json(), "a": acc.to_json()})


def encode_label(label: Label) -> bytes:
    """A label, as an element of a version-2 record."""
    return orjson.dumps({"l": label.to_json()})


def batch_records(items: list[bytes]) -> list[bytes]:
    """Version-2 records holding ``items`` in order, each under :data:`MAX_RECORD_BYTES`."""
    records: list[bytes] = []
    chunk: list[bytes] = []
    size = len(_HEAD) + len(_TAIL)
    for item in items:
        if chunk and size + len(item) + 1 > MAX_RECORD_BYTES:
            records.append(_HEAD + b",".join(chunk) + _TAIL)
            chunk, size = [], len(_HEAD) + len(_TAIL)
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        records.append(_HEAD + b",".join(chunk) + _TAIL)
    return records


def decode_forwards(raw: bytes | None) -> list[tuple[Withdrawal, AccountFeatures] | Label]:
    """Every withdrawal and label of a stage-1 record of any version, in order;
    InvalidEvent if it is not one."""
    try:
        doc = orjson.loads(raw or b"")
        entries: list[Any] = doc.get("items", [doc])
        return [
            validate_label(entry["l"])
            if "l" in entry
            else (validate_withdrawal(entry["e"]), AccountFeatures.from_json(entry["a"]))
            for entry in entries
        ]
    except InvalidEvent:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # incl. JSONDecodeError
        raise InvalidEvent("internal_format", f"unreadable repartition record: {exc}") from None
