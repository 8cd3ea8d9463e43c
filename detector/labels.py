"""The label contract: what someone learned about a withdrawal, an account or an address.

Labels come from analysts (the review queue's Release / Refuse), customers' reports and chain
analytics, on the ``labels`` topic (UTF-8 JSON)::

    {"label_id": "review:5f0c...", "withdrawal_id": "w-1", "account_id": "acct-7",
     "destination": "bc1q...", "label": "fraud", "source": "analyst",
     "reported_at": "2026-11-24T10:05:00.000Z", "note": "customer confirmed takeover",
     "schema_version": 1}

* ``label_id`` (1..128 characters, required): unique per label; consumers dedupe on it.
* ``withdrawal_id``, ``account_id``, ``destination`` (each optional, at least one): what the
  label is about. ``fraud`` on a destination means "funds sent there are lost to fraud";
  on an account, "the account is compromised"; on a withdrawal, "this one was fraud".
* ``label``: ``fraud`` or ``legit``.
* ``source``: a short token (``analyst``, ``customer_report``, ``chain_analytics``, ...).
* ``reported_at``: RFC 3339 with a zone (when the fact was reported).
* ``note`` (optional, at most 2,000 characters): free text for people, never parsed.
* ``schema_version`` (optional): 1.

Unknown fields are ignored (a newer producer may add some). The Kafka key should be
:func:`label_key`: the account_id when there is one, else the destination, else the
withdrawal_id. A consumer that joins labels with per-destination or per-account state
repartitions them itself, so :func:`parse_label` accepts a key naming any of the label's
subjects (or no key); a key naming none of them is a producer bug (``key_mismatch``).

A broken rule raises :class:`~detector.errors.InvalidEvent` with a stable ``code`` and a
sentence, exactly like the withdrawal validator (:mod:`detector.events`): a consumer sends the
original bytes to its dead-letter topic with that reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from detector.errors import InvalidEvent
from detector.events import (
    MAX_DESTINATION_CHARS,
    MAX_ID_CHARS,
    decode_json,
    format_rfc3339,
    parse_rfc3339,
)

__all__ = [
    "LABELS",
    "LABEL_SCHEMA_VERSION",
    "MAX_LABEL_BYTES",
    "MAX_NOTE_CHARS",
    "Label",
    "LabelKind",
    "label_key",
    "parse_label",
    "validate_label",
]

LabelKind = Literal["fraud", "legit"]
LABELS: tuple[LabelKind, ...] = ("fraud", "legit")
LABEL_SCHEMA_VERSION = 1
# A label is a few ids and a note: 16 KiB is far above any honest one (bytes).
MAX_LABEL_BYTES = 16 * 1024
# Free text for people; long enough for a paragraph of context (characters).
MAX_NOTE_CHARS = 2000
# Sources are tokens that name a feed, e.g. "customer_report" (characters).
_SOURCE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_REQUIRED = ("label_id", "label", "source", "reported_at")
_SUBJECTS = ("withdrawal_id", "account_id", "destination")


@dataclass(frozen=True, slots=True)
class Label:
    """A validated label. ``reported_at`` is epoch seconds."""

    label_id: str
    withdrawal_id: str | None
    account_id: str | None
    destination: str | None
    label: LabelKind
    source: str
    reported_at: float
    reported_at_text: str
    note: str | None = None

    @property
    def is_fraud(self) -> bool:
        return self.label == "fraud"

    def to_json(self) -> dict[str, Any]:
        """The contract's document (optional fields only when set)."""
        out: dict[str, Any] = {"label_id": self.label_id}
        for name in _SUBJECTS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(
            label=self.label,
            source=self.source,
            reported_at=self.reported_at_text,
            schema_version=LABEL_SCHEMA_VERSION,
        )
        if self.note is not None:
            out["note"] = self.note
        return out

    @classmethod
    def create(
        cls,
        *,
        label_id: str,
        label: LabelKind,
        source: str,
        reported_at: float,
        withdrawal_id: str | None = None,
        account_id: str | None = None,
        destination: str | None = None,
        note: str | None = None,
    ) -> Label:
        """A label built by our own code, held to the same rules as one read from Kafka."""
        doc: dict[str, Any] = {
            "label_id": label_id,
            "withdrawal_id": withdrawal_id,
            "account_id": account_id,
            "destination": destination,
            "label": label,
            "source": source,
            "reported_at": format_rfc3339(reported_at),
            "note": note,
        }
        return validate_label({k: v for k, v in doc.items() if v is not None})


def label_key(label: Label) -> bytes:
    """The Kafka key producers should use: account_id, else destination, else withdrawal_id."""
    key = label.account_id or label.destination or label.withdrawal_id
    assert key is not None  # validate_label guarantees a subject
    return key.encode()


def parse_label(
    raw: bytes, *, key: bytes | None = None, now: float | None = None, max_ahead_s: float = 0.0
) -> Label:
    """Decode and validate one record of the labels topic; anything else is InvalidEvent.

    With ``now`` and ``max_ahead_s`` > 0, a ``reported_at`` more than ``max_ahead_s`` after
    ``now`` is refused (``future_timestamp``), as for withdrawals: a report dated in the
    future would otherwise stretch its effect past the feedback windows it is given."""
    if len(raw) > MAX_LABEL_BYTES:
        raise InvalidEvent("too_large", f"label is {len(raw)} bytes, limit is {MAX_LABEL_BYTES}")
    label = validate_label(decode_json(raw))
    if now is not None and max_ahead_s > 0 and label.reported_at - now > max_ahead_s:
        raise InvalidEvent(
            "future_timestamp",
            f"reported_at {label.reported_at_text} is {label.reported_at - now:.0f} s after "
            f"the worker's clock; the limit is {max_ahead_s:.0f} s",
        )
    if key is not None:
        subjects = {getattr(label, name) for name in _SUBJECTS} - {None}
        try:
            key_text = key.decode("utf-8")
        except UnicodeDecodeError:
            key_text = repr(key)
        if key_text not in subjects:
            raise InvalidEvent(
                "key_mismatch",
                f"Kafka key {_show(key_text)} names none of the label's subjects: key labels "
                "by account_id, else destination, else withdrawal_id",
            )
    return label


def validate_label(doc: Any) -> Label:
    """Validate an already-decoded JSON document against the label contract."""
    if not isinstance(doc, dict):
        raise InvalidEvent("not_an_object", f"label must be a JSON object, got {_json_type(doc)}")
    missing = [name for name in _REQUIRED if doc.get(name) is None]
    if missing:
        raise InvalidEvent("missing_field", f"required field(s) missing: {', '.join(missing)}")
    label_id = _text(doc, "label_id", MAX_ID_CHARS)
    withdrawal_id = _optional_text(doc, "withdrawal_id", MAX_ID_CHARS)
    account_id = _optional_text(doc, "account_id", MAX_ID_CHARS)
    destination = _optional_text(doc, "destination", MAX_DESTINATION_CHARS)
    if destination is not None and not destination.strip():
        raise InvalidEvent("bad_destination", "destination must not be blank")
    if withdrawal_id is None and account_id is None and destination is None:
        raise InvalidEvent(
            "no_subject",
            "a label must name at least one of withdrawal_id, account_id, destination",
        )
    kind = doc["label"]
    if not isinstance(kind, str) or kind not in LABELS:
        raise InvalidEvent(
            "bad_label", f"label must be one of {', '.join(LABELS)}, got {_show(kind)}"
        )
    source = doc["source"]
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise InvalidEvent(
            "bad_source",
            "source must be a lowercase token of at most 32 characters "
            f'(e.g. "analyst", "customer_report"), got {_show(source)}',
        )
    reported_text = doc["reported_at"]
    if not isinstance(reported_text, str):
        raise InvalidEvent(
            "bad_timestamp",
            f"reported_at must be an RFC 3339 string, got {_json_type(reported_text)}",
        )
    reported_at = parse_rfc3339(reported_text, field="reported_at")
    note = _optional_text(doc, "note", MAX_NOTE_CHARS, code="bad_note")
    version = doc.get("schema_version", LABEL_SCHEMA_VERSION)
    if type(version) is not int or version != LABEL_SCHEMA_VERSION:
        raise InvalidEvent(
            "bad_schema_version",
            f"schema_version must be {LABEL_SCHEMA_VERSION}, got {_show(version)}",
        )
    return Label(
        label_id,
        withdrawal_id,
        account_id,
        destination,
        "fraud" if kind == "fraud" else "legit",
        source,
        reported_at,
        reported_text,
        note,
    )


def _text(doc: dict[str, Any], name: str, limit: int, *, code: str | None = None) -> str:
    value = doc[name]
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise InvalidEvent(
            code or f"bad_{name}",
            f"{name} must be a string of 1..{limit} characters, got {_show(value)}",
        )
    return value


def _optional_text(
    doc: dict[str, Any], name: str, limit: int, *, code: str | None = None
) -> str | None:
    return None if doc.get(name) is None else _text(doc, name, limit, code=code)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else _json_type(value)
    return text if len(text) <= 60 else text[:57] + "..."
