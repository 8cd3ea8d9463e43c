"""Every rule of the label contract, each rejected with a stable code and a clear reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.errors import InvalidEvent
from detector.events import MAX_NESTING
from detector.labels import (
    MAX_LABEL_BYTES,
    MAX_NOTE_CHARS,
    Label,
    label_key,
    parse_label,
    validate_label,
)

_DROP = object()


def valid(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "label_id": "review:0001",
        "withdrawal_id": "w-1",
        "account_id": "acct-1",
        "destination": "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
        "label": "fraud",
        "source": "analyst",
        "reported_at": "2026-11-24T10:05:00Z",
        "note": "customer confirmed the takeover",
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not _DROP}


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def rejects(data: bytes, code: str, fragment: str, *, key: bytes | None = None) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_label(data, key=key)
    assert info.value.code == code
    assert fragment in info.value.reason, info.value.reason


def test_a_label_dated_too_far_ahead_of_the_clock_is_refused() -> None:
    from detector.events import parse_rfc3339

    now = parse_rfc3339("2026-11-24T10:00:00Z")
    data = raw(valid(reported_at="2026-11-24T10:05:00Z"))  # 300 s ahead
    with pytest.raises(InvalidEvent) as info:
        parse_label(data, now=now, max_ahead_s=60)
    assert info.value.code == "future_timestamp" and "300 s after" in info.value.reason
    assert parse_label(data, now=now, max_ahead_s=600).label_id == "review:0001"
    assert parse_label(data, now=now, max_ahead_s=0).label_id == "review:0001"  # check off


def test_a_valid_label_round_trips_every_field() -> None:
    label = parse_label(raw(valid()), key=b"acct-1")
    assert label == Label(
        label_id="review:0001",
        withdrawal_id="w-1",
        account_id="acct-1",
        destination="bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
        label="fraud",
        source="analyst",
        reported_at=1795514700.0,
        reported_at_text="2026-11-24T10:05:00Z",
        note="customer confirmed the takeover",
    )
    assert label.is_fraud
    assert label.to_json() == {**valid(), "schema_version": 1}
    assert parse_label(raw(label.to_json())) == label


def test_one_subject_is_enough_and_optional_fields_stay_out_of_the_document() -> None:
    doc = valid(withdrawal_id=_DROP, account_id=_DROP, note=_DROP, label="legit")
    label = parse_label(raw(doc))
    assert (label.withdrawal_id, label.account_id, label.note) == (None, None, None)
    assert label.label == "legit" and not label.is_fraud
    assert set(label.to_json()) == {
        "label_id",
        "destination",
        "label",
        "source",
        "reported_at",
        "schema_version",
    }


def test_explicit_nulls_count_as_absent_and_unknown_fields_are_ignored() -> None:
    label = parse_label(raw(valid(withdrawal_id=None, note=None, confidence=0.9)))
    assert label.withdrawal_id is None and label.note is None


def test_the_producer_key_is_the_account_then_the_destination_then_the_withdrawal() -> None:
    assert label_key(validate_label(valid())) == b"acct-1"
    no_account = validate_label(valid(account_id=_DROP))
    assert label_key(no_account) == b"bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh"
    only_withdrawal = validate_label(valid(account_id=_DROP, destination=_DROP))
    assert label_key(only_withdrawal) == b"w-1"


@pytest.mark.parametrize(
    "key", [None, b"acct-1", b"w-1", b"bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh"]
)
def test_a_key_naming_any_subject_of_the_label_is_accepted(key: bytes | None) -> None:
    assert parse_label(raw(valid()), key=key).label_id == "review:0001"


def test_a_key_naming_no_subject_is_a_producer_bug() -> None:
    rejects(raw(valid()), "key_mismatch", "'acct-2'", key=b"acct-2")
    rejects(raw(valid()), "key_mismatch", "names none", key=b"\xff\xfe")


def test_label_create_holds_our_own_labels_to_the_same_rules() -> None:
    label = Label.create(
        label_id="review:42",
        label="legit",
        source="analyst",
        reported_at=1795514700.0,
        withdrawal_id="w-9",
        account_id="acct-9",
    )
    assert label.reported_at_text == "2026-11-24T10:05:00.000Z"
    assert parse_label(raw(label.to_json()), key=label_key(label)) == label
    with pytest.raises(InvalidEvent) as info:
        Label.create(
            label_id="x", label="legit", source="Analyst!", reported_at=0.0, account_id="a"
        )
    assert info.value.code == "bad_source"


@pytest.mark.parametrize(
    ("doc", "code", "fragment"),
    [
        ([1, 2], "not_an_object", "got an array"),
        ("fraud", "not_an_object", "got a string"),
        (valid(label_id=_DROP), "missing_field", "label_id"),
        (valid(label=_DROP, source=_DROP), "missing_field", "label, source"),
        (valid(reported_at=None), "missing_field", "reported_at"),
        (valid(label_id=""), "bad_label_id", "1..128"),
        (valid(label_id="x" * 129), "bad_label_id", "1..128"),
        (valid(label_id=7), "bad_label_id", "got a number"),
        (
            valid(withdrawal_id=_DROP, account_id=_DROP, destination=_DROP),
            "no_subject",
            "at least one",
        ),
        (valid(account_id=""), "bad_account_id", "1..128"),
        (valid(account_id=["a"]), "bad_account_id", "got an array"),
        (valid(withdrawal_id="w" * 129), "bad_withdrawal_id", "1..128"),
        (valid(destination="d" * 257), "bad_destination", "1..256"),
        (valid(destination="   "), "bad_destination", "blank"),
        (valid(label="compromised"), "bad_label", "fraud, legit"),
        (valid(label=True), "bad_label", "got a boolean"),
        (valid(label=["fraud"]), "bad_label", "got an array"),
        (valid(source="Customer Report"), "bad_source", "lowercase token"),
        (valid(source="x" * 33), "bad_source", "at most 32"),
        (valid(source=3), "bad_source", "got a number"),
        (valid(reported_at="yesterday"), "bad_timestamp", "reported_at must be RFC 3339"),
        (valid(reported_at="2026-11-24T10:05:00"), "bad_timestamp", "reported_at must be"),
        (valid(reported_at="2026-02-30T10:05:00Z"), "bad_timestamp", "not a real date"),
        (valid(reported_at=1795514700), "bad_timestamp", "got a number"),
        (valid(note="n" * (MAX_NOTE_CHARS + 1)), "bad_note", f"1..{MAX_NOTE_CHARS}"),
        (valid(note=""), "bad_note", "1.."),
        (valid(schema_version=2), "bad_schema_version", "must be 1"),
        (valid(schema_version=True), "bad_schema_version", "must be 1"),
        (valid(schema_version="1"), "bad_schema_version", "must be 1"),
    ],
)
def test_each_rule_has_a_stable_code_and_a_sentence(doc: Any, code: str, fragment: str) -> None:
    rejects(raw(doc), code, fragment)


def test_hostile_bytes_are_refused_before_anything_is_trusted() -> None:
    rejects(b"x" * (MAX_LABEL_BYTES + 1), "too_large", f"limit is {MAX_LABEL_BYTES}")
    rejects(b"\xff\xfe{}", "invalid_utf8", "not UTF-8")
    rejects(b"{label: fraud}", "invalid_json", "not JSON")
    rejects(b'{"label_id": NaN}', "invalid_json", "NaN is not allowed")
    rejects(b'{"label_id": 1' + b"0" * 60 + b"}", "invalid_json", "digits")
    rejects(b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), "too_deep", "levels")
    lone = raw(valid()).replace(b'"acct-1"', b'"acct-\\ud800"')
    rejects(lone, "invalid_unicode", "lone UTF-16 surrogate")
    paired = raw(valid(note="\U0001f600 emoji")).replace(b"\\ud83d\\ude00", b"\\uD83D\\uDE00")
    assert parse_label(paired).note == "\U0001f600 emoji"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_as_anything_but_invalid_event(data: bytes) -> None:
    try:
        label = parse_label(data, key=data[:8] or None)
    except InvalidEvent as exc:
        assert exc.code and exc.reason
    else:
        assert isinstance(label, Label)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "label_id": _json_values | st.text(min_size=1, max_size=10),
            "withdrawal_id": _json_values,
            "account_id": _json_values | st.just("acct-1"),
            "destination": _json_values,
            "label": _json_values | st.sampled_from(["fraud", "legit"]),
            "source": _json_values | st.sampled_from(["analyst", "chain_analytics"]),
            "reported_at": _json_values | st.just("2026-11-24T10:05:00Z"),
            "note": _json_values,
            "schema_version": _json_values,
        },
    )
)
def test_arbitrary_documents_are_labels_or_invalid_events(doc: dict[str, Any]) -> None:
    try:
        label = parse_label(json.dumps(doc).encode())
    except InvalidEvent as exc:
        assert exc.code and exc.reason
    else:
        assert parse_label(json.dumps(label.to_json()).encode()) == label
