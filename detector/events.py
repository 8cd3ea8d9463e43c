"""The withdrawal event contract: parse raw Kafka bytes into a validated :class:`Withdrawal`.

Every rule of ``architecture.md``'s contract is checked here and nowhere else. A broken
rule raises :class:`~detector.errors.InvalidEvent` with a stable ``code`` (the DLQ metric
label) and a human-readable ``reason`` (the DLQ record's text).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from detector.errors import InvalidEvent

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_INT_DIGITS",
    "MAX_NESTING",
    "Withdrawal",
    "decode_json",
    "format_rfc3339",
    "parse_rfc3339",
    "parse_withdrawal",
    "validate_withdrawal",
]

# Bigger than any sane withdrawal with metadata; guards the parser against abuse (bytes).
# Far under the producer's 1 MB request limit, so anything accepted can be forwarded.
MAX_EVENT_BYTES = 64 * 1024
# Deepest nesting of arrays/objects accepted anywhere in an event (levels): metadata is a
# small record, and Python's json recursion must never be what stops a document.
MAX_NESTING = 16
# Longest integer literal accepted (digits): far above any amount in minor units, far
# below Python's 4,300-digit conversion limit (which raises deep inside json.loads).
MAX_INT_DIGITS = 40
# Longest amount string (characters): a decimal with a generous number of digits.
MAX_AMOUNT_CHARS = 64
# Contract: ids are 1..128 characters.
MAX_ID_CHARS = 128
# Asset tickers and addresses: generous bounds that still stop garbage (characters).
MAX_ASSET_CHARS = 32
MAX_DESTINATION_CHARS = 256

# RFC 3339 date-time: full date, time with optional fraction, and a mandatory zone.
# A JSON escape of a UTF-16 surrogate (\\uD800..\\uDFFF): only these can smuggle a lone
# surrogate (invalid Unicode that fails later, when encoded) into a parsed string.
_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F][0-9a-fA-F]{2}")
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_ASSET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REQUIRED = ("withdrawal_id", "account_id", "asset", "amount", "destination", "requested_at")


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A validated withdrawal request. ``requested_at`` is epoch seconds (event time)."""

    withdrawal_id: str
    account_id: str
    asset: str
    amount: str
    amount_usd: float | None
    destination: str
    requested_at: float
    requested_at_text: str
    metadata: dict[str, Any] | None

    @property
    def value(self) -> float:
        """The amount the features use: USD when given, else the asset amount itself."""
        return self.amount_usd if self.amount_usd is not None else float(self.amount)

    @property
    def label(self) -> str | None:
        """``metadata.label`` when present (simulated or labelled history)."""
        if self.metadata is None:
            return None
        label = self.metadata.get("label")
        return label if isinstance(label, str) else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "withdrawal_id": self.withdrawal_id,
            "account_id": self.account_id,
            "asset": self.asset,
            "amount": self.amount,
            "destination": self.destination,
            "requested_at": self.requested_at_text,
        }
        if self.amount_usd is not None:
            out["amount_usd"] = self.amount_usd
        if self.metadata is not None:
            out["metadata"] = self.metadata
        return out


def parse_withdrawal(
    raw: bytes,
    *,
    key: bytes | None = None,
    require_key: bool = False,
    now: float | None = None,
    max_age_s: float = 0.0,
    max_ahead_s: float = 0.0,
) -> Withdrawal:
    """Decode and validate one Kafka record; anything else raises :class:`InvalidEvent`.

    ``key``, when given, must be the account_id; ``require_key`` refuses a record without
    one (the worker: a keyless record would land on a random partition). With ``now``, the
    event time must lie within ``max_age_s`` before and ``max_ahead_s`` after it (0: no
    bound on that side).
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("too_large", f"event is {len(raw)} bytes, limit is {MAX_EVENT_BYTES}")
    if key is None and require_key:
        raise InvalidEvent(
            "key_missing",
            "the record has no Kafka key: key every withdrawal by its account_id so "
            "per-account state stays on one partition",
        )
    event = validate_withdrawal(decode_json(raw))
    if now is not None:
        _check_event_time(event, now, max_age_s, max_ahead_s)
    if key is not None:
        try:
            key_text = key.decode("utf-8")
        except UnicodeDecodeError:
            key_text = repr(key)
        if key_text != event.account_id:
            raise InvalidEvent(
                "key_mismatch",
                f"Kafka key {key_text!r} is not the account_id {event.account_id!r}: "
                "key every withdrawal by its account_id so per-account state stays on "
                "one partition",
            )
    return event


def decode_json(raw: bytes) -> Any:
    """Strict JSON from raw record bytes, or :class:`InvalidEvent`: UTF-8, no NaN/Infinity,
    integers of at most :data:`MAX_INT_DIGITS` digits, at most :data:`MAX_NESTING` levels,
    no lone UTF-16 surrogates. Shared by every contract read from Kafka (withdrawals,
    labels); the caller bounds the size first."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(
            "invalid_utf8", f"value is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_int=_bounded_int)
    except InvalidEvent:
        raise
    except RecursionError:
        raise InvalidEvent(
            "too_deep", f"the event nests deeper than {MAX_NESTING} levels of arrays/objects"
        ) from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise InvalidEvent("invalid_json", f"value is not JSON: {_clip(str(exc))}") from None
    # Only a document with more opening brackets than the limit can nest that deep.
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING:
        _check_nesting(doc)
    if _SURROGATE_ESCAPE.search(raw):
        _check_unicode(doc)
    return doc


def _bounded_int(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > MAX_INT_DIGITS:
        raise InvalidEvent(
            "invalid_json", f"an integer has {digits} digits, the limit is {MAX_INT_DIGITS}"
        )
    return int(text)


def _check_nesting(doc: Any) -> None:
    """Refuse documents nested deeper than :data:`MAX_NESTING` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_NESTING:
            raise InvalidEvent(
                "too_deep", f"the event nests deeper than {MAX_NESTING} levels of arrays/objects"
            )
        stack.extend((child, depth + 1) for child in children)


def _check_unicode(doc: Any) -> None:
    """Refuse lone UTF-16 surrogates anywhere (keys included): not valid Unicode, they
    would fail later when the event or its verdict is encoded."""
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            texts: Any = (node,)
        elif isinstance(node, dict):
            texts = node.keys()
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
            continue
        else:
            continue
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidEvent(
                    "invalid_unicode",
                    f"a string holds a lone UTF-16 surrogate (\\u{ord(text[_bad(text)]):04x}), "
                    "which is not valid Unicode",
                ) from None


def _bad(text: str) -> int:
    return next(i for i, ch in enumerate(text) if 0xD800 <= ord(ch) <= 0xDFFF)


def _check_event_time(event: Withdrawal, now: float, max_age_s: float, max_ahead_s: float) -> None:
    age = now - event.requested_at
    if max_age_s > 0 and age > max_age_s:
        raise InvalidEvent(
            "stale_timestamp",
            f"requested_at {event.requested_at_text} is {age / 3600:.1f} h before the "
            f"worker's clock; the limit is {max_age_s / 3600:.1f} h",
        )
    if max_ahead_s > 0 and -age > max_ahead_s:
        raise InvalidEvent(
            "future_timestamp",
            f"requested_at {event.requested_at_text} is {-age:.0f} s after the worker's "
            f"clock; the limit is {max_ahead_s:.0f} s",
        )


def validate_withdrawal(doc: Any) -> Withdrawal:
    """Validate an already-decoded JSON document against the contract."""
    if not isinstance(doc, dict):
        raise InvalidEvent("not_an_object", f"event must be a JSON object, got {_json_type(doc)}")
    missing = [name for name in _REQUIRED if name not in doc or doc[name] is None]
    if missing:
        raise InvalidEvent("missing_field", f"required field(s) missing: {', '.join(missing)}")
    withdrawal_id = _id(doc, "withdrawal_id")
    account_id = _id(doc, "account_id")
    asset = doc["asset"]
    if (
        not isinstance(asset, str)
        or not 1 <= len(asset) <= MAX_ASSET_CHARS
        or not _ASSET.match(asset)
    ):
        raise InvalidEvent(
            "bad_asset",
            f'asset must be a ticker like "BTC" (1..{MAX_ASSET_CHARS}'
            f" letters/digits), got {_show(asset)}",
        )
    amount = _amount(doc["amount"])
    amount_usd = _amount_usd(doc.get("amount_usd"))
    destination = doc["destination"]
    if (
        not isinstance(destination, str)
        or not destination.strip()
        or len(destination) > MAX_DESTINATION_CHARS
    ):
        raise InvalidEvent(
            "bad_destination",
            f"destination must be a non-empty address string "
            f"of at most {MAX_DESTINATION_CHARS} characters, "
            f"got {_show(destination)}",
        )
    requested_text = doc["requested_at"]
    if not isinstance(requested_text, str):
        raise InvalidEvent(
            "bad_timestamp",
            f"requested_at must be an RFC 3339 string, got {_json_type(requested_text)}",
        )
    requested_at = parse_rfc3339(requested_text)
    metadata = doc.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidEvent(
            "bad_metadata", f"metadata must be an object, got {_json_type(metadata)}"
        )
    return Withdrawal(
        withdrawal_id,
        account_id,
        asset,
        amount,
        amount_usd,
        destination,
        requested_at,
        requested_text,
        metadata,
    )


def parse_rfc3339(text: str, *, field: str = "requested_at") -> float:
    """RFC 3339 timestamp with a zone -> epoch seconds; anything else is InvalidEvent
    (``bad_timestamp``, the reason naming ``field``)."""
    if not _RFC3339.match(text):
        raise InvalidEvent(
            "bad_timestamp",
            f"{field} must be RFC 3339 with a zone, e.g. 2026-11-24T10:00:00Z, got {_show(text)}",
        )
    normalized = text.replace("t", "T").replace("z", "Z").replace(" ", "T", 1)
    if "." in normalized:  # fromisoformat takes at most 6 fractional digits
        head, _, rest = normalized.partition(".")
        digits = re.match(r"\d+", rest)
        assert digits is not None  # guaranteed by _RFC3339
        frac = digits.group(0)
        normalized = f"{head}.{frac[:6].ljust(6, '0')}{rest[len(frac) :]}"
    try:
        return datetime.fromisoformat(normalized).timestamp()
    except ValueError as exc:
        raise InvalidEvent(
            "bad_timestamp", f"{field} {text!r} is not a real date/time: {exc}"
        ) from None


def format_rfc3339(epoch_seconds: float) -> str:
    """Epoch seconds -> RFC 3339 UTC, rounded to the millisecond: 2026-11-24T10:00:00.000Z.

    The one formatter of timestamps (with :func:`parse_rfc3339`, the one parser)."""
    ms = round(epoch_seconds * 1000.0)
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _id(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        raise InvalidEvent(
            f"bad_{name}",
            f"{name} must be a string of 1..{MAX_ID_CHARS} characters, got {_show(value)}",
        )
    return value


def _amount(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidEvent(
            "bad_amount", f"amount must be a decimal string or a number, got {_json_type(value)}"
        )
    text = value.strip() if isinstance(value, str) else repr(value)
    if len(text) > MAX_AMOUNT_CHARS:
        raise InvalidEvent(
            "bad_amount", f"amount has {len(text)} characters, the limit is {MAX_AMOUNT_CHARS}"
        )
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise InvalidEvent("bad_amount", f"amount {_show(value)} is not a decimal number") from None
    if not number.is_finite():
        raise InvalidEvent("bad_amount", f"amount must be finite, got {_show(value)}")
    if number <= 0:
        raise InvalidEvent("bad_amount", f"amount must be > 0, got {_show(value)}")
    if not math.isfinite(float(number)):
        raise InvalidEvent("bad_amount", f"amount {_show(value)} is out of range")
    return text


def _amount_usd(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent(
            "bad_amount_usd", f"amount_usd must be a number, got {_json_type(value)}"
        )
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise InvalidEvent("bad_amount_usd", f"amount_usd must be finite and >= 0, got {value!r}")
    return number


def _reject_constant(name: str) -> Any:
    raise InvalidEvent("invalid_json", f"value is not strict JSON: {name} is not allowed")


def _json_type(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
