"""The record stage 1 sends stage 2 through Kafka: versioned, batched, read by field name.

Version 2 (written now) carries many withdrawals per Kafka record: everything one stage-1
micro-batch sends to one destination partition, so stage 2 pays Faust's per-record cost
once per batch rather than once per withdrawal; labels naming a destination travel the
same way, in order with the withdrawals::

    {"v": 2, "items": [{"e": <withdrawal>, "a": <account features by name>},
                       {"l": <label>}, ...]}

Readers accept every version: 2, 1 (``{"v": 1, "e": ..., "a": ...}``: one withdrawal) and 0
(no ``v``; account features as a positional list). Unknown fields are ignored and features a
newer writer added are dropped, missing optional ones take their defaults, so workers of two
versions side by side during a rolling deploy read each other's records instead of
dead-lettering them. Each item names the feature schema that computed it (``s``); features
of another schema (another ``s``, or model inputs missing: a positional list, an older
release) cannot be scored by this model: the withdrawal is held for review, unscored
(reason ``unscored``), never dead-lettered or let through. An item of schema ``repeat``
carries no features: a withdrawal_id stage 1 forwarded in an earlier batch, whose verdict
stage 2 has on record and publishes again.
"""

from __future__ import annotations

from typing import Any

import orjson

from detector.errors import InvalidEvent
from detector.events import Withdrawal, validate_withdrawal
from detector.features import FEATURE_SCHEMA, AccountFeatures
from detector.labels import Label, validate_label
from detector.pipeline import Repeat

__all__ = [
    "MAX_RECORD_BYTES",
    "PAYLOAD_VERSION",
    "batch_records",
    "decode_forwards",
    "encode_item",
    "encode_label",
]

PAYLOAD_VERSION = 2
REPEAT_SCHEMA = "repeat"  # an item without features: a repeat stage 1 forwarded before
# Largest forward record (bytes): half the producer's 1 MiB request limit. Items are at
# most ~66 KiB (a 64 KiB event and its features), so any item fits with room to spare.
MAX_RECORD_BYTES = 512 * 1024
_HEAD = b'{"v":2,"items":['
_TAIL = b"]}"


def encode_item(event: Withdrawal, acc: AccountFeatures | Repeat) -> bytes:
    """One withdrawal and its account features, as an element of a version-2 record
    (``t``: the event time as epoch seconds, so the reader need not parse it again). A
    :class:`~detector.pipeline.Repeat` goes without features, under the schema name
    ``repeat``: every reader (this version's or an older one) takes it as features of another
    schema, i.e. publishes the verdict on record, or holds it unscored if there is none."""
    if isinstance(acc, Repeat):
        return orjson.dumps({"e": event.to_json(), "s": REPEAT_SCHEMA, "t": event.requested_at})
    return orjson.dumps(
        {"e": event.to_json(), "a": acc.to_json(), "s": FEATURE_SCHEMA, "t": event.requested_at}
    )


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


def _withdrawal(entry: dict[str, Any]) -> Withdrawal:
    """The withdrawal of an item. Stage 1 validated it: when the item carries what this
    version needs (the event time ``t`` too), it is rebuilt without parsing it again;
    otherwise (another version wrote it) it is validated again."""
    doc, t = entry["e"], entry.get("t")
    if (
        isinstance(t, float)
        and isinstance(doc, dict)
        and all(isinstance(doc.get(name), str) for name in _FIELDS)
        and isinstance(doc.get("amount_usd", 0.0), int | float)
        and isinstance(doc.get("metadata", {}), dict)
    ):
        usd = doc.get("amount_usd")
        return Withdrawal(
            doc["withdrawal_id"],
            doc["account_id"],
            doc["asset"],
            doc["amount"],
            None if usd is None else float(usd),
            doc["destination"],
            t,
            doc["requested_at"],
            doc.get("metadata"),
        )
    return validate_withdrawal(doc)


_FIELDS = ("withdrawal_id", "account_id", "asset", "amount", "destination", "requested_at")


def _features(entry: dict[str, Any]) -> AccountFeatures | None:
    """The item's account features; None when another feature schema computed them."""
    if entry.get("s", FEATURE_SCHEMA) != FEATURE_SCHEMA:
        return None
    return AccountFeatures.read(entry["a"])


def decode_forwards(
    raw: bytes | None,
) -> list[tuple[Withdrawal, AccountFeatures | None] | Label]:
    """Every withdrawal and label of a stage-1 record of any version, in order;
    InvalidEvent if it is not one. A withdrawal's features are None when a worker of another
    feature schema computed them (during a rolling deploy): stage 2 holds it unscored."""
    try:
        doc = orjson.loads(raw or b"")
        entries: list[Any] = doc.get("items", [doc])
        return [
            validate_label(entry["l"]) if "l" in entry else (_withdrawal(entry), _features(entry))
            for entry in entries
        ]
    except InvalidEvent:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # incl. JSONDecodeError
        raise InvalidEvent("internal_format", f"unreadable repartition record: {exc}") from None
