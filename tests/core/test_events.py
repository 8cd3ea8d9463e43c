"""Every rule of the withdrawal contract, each rejected with a stable code and a clear reason."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.errors import InvalidEvent
from detector.events import (
    MAX_EVENT_BYTES,
    MAX_NESTING,
    format_rfc3339,
    parse_rfc3339,
    parse_withdrawal,
)


def valid(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "withdrawal_id": "w-1",
        "account_id": "acct-1",
        "asset": "BTC",
        "amount": "0.25",
        "amount_usd": 17000.5,
        "destination": "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
        "requested_at": "2026-11-24T10:00:00Z",
        "metadata": {"label": "normal", "ip": "203.0.113.7"},
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not _DROP}


_DROP = object()


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def rejects(data: bytes, code: str, fragment: str, *, key: bytes | None = None) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_withdrawal(data, key=key)
    assert info.value.code == code
    assert fragment in info.value.reason, info.value.reason


def test_valid_event_round_trips_every_field() -> None:
    event = parse_withdrawal(raw(valid()), key=b"acct-1")
    assert event.withdrawal_id == "w-1"
    assert event.account_id == "acct-1"
    assert event.asset == "BTC"
    assert event.amount == "0.25"
    assert event.amount_usd == 17000.5
    assert event.value == 17000.5
    assert event.requested_at == 1795514400.0
    assert event.metadata == {"label": "normal", "ip": "203.0.113.7"}
    assert event.label == "normal"
    assert parse_withdrawal(raw(event.to_json())) == event


def test_optional_fields_may_be_absent() -> None:
    event = parse_withdrawal(raw(valid(amount_usd=_DROP, metadata=_DROP)))
    assert event.amount_usd is None
    assert event.metadata is None
    assert event.value == 0.25  # features fall back to the asset amount


@pytest.mark.parametrize("amount", ["1", "0.00000001", 3, 2.5, "1e3", " 7.5 "])
def test_amount_as_decimal_string_or_number(amount: Any) -> None:
    event = parse_withdrawal(raw(valid(amount=amount, amount_usd=_DROP)))
    assert event.value == float(str(amount).strip())


@pytest.mark.parametrize(
    ("data", "code", "fragment"),
    [
        (b"\xff\xfe{}", "invalid_utf8", "not UTF-8"),
        (b"{not json", "invalid_json", "not JSON"),
        (b'{"amount": NaN}', "invalid_json", "NaN is not allowed"),
        (b"[1, 2]", "not_an_object", "got an array"),
        (b'"text"', "not_an_object", "got a string"),
        (b" " * (MAX_EVENT_BYTES + 1), "too_large", "limit"),
    ],
)
def test_undecodable_values(data: bytes, code: str, fragment: str) -> None:
    rejects(data, code, fragment)


@pytest.mark.parametrize(
    "field", ["withdrawal_id", "account_id", "asset", "amount", "destination", "requested_at"]
)
def test_each_required_field(field: str) -> None:
    rejects(raw(valid(**{field: _DROP})), "missing_field", field)
    rejects(raw(valid(**{field: None})), "missing_field", field)


@pytest.mark.parametrize("field", ["withdrawal_id", "account_id"])
@pytest.mark.parametrize("value", ["", "x" * 129, 42, ["a"]])
def test_ids_are_strings_of_1_to_128(field: str, value: Any) -> None:
    rejects(raw(valid(**{field: value})), f"bad_{field}", "1..128")


def test_id_of_128_characters_is_fine() -> None:
    assert parse_withdrawal(raw(valid(withdrawal_id="x" * 128))).withdrawal_id == "x" * 128


@pytest.mark.parametrize("asset", ["", 5, "BT C", "x" * 33, "-BTC"])
def test_asset_is_a_ticker(asset: Any) -> None:
    rejects(raw(valid(asset=asset)), "bad_asset", "ticker")


@pytest.mark.parametrize(
    ("amount", "fragment"),
    [
        ("0", "> 0"),
        ("-1", "> 0"),
        (0, "> 0"),
        ("abc", "not a decimal"),
        ("", "not a decimal"),
        ("Infinity", "finite"),
        ("NaN", "finite"),
        ("1e400", "out of range"),
        (True, "got a boolean"),
        ({"v": 1}, "got an object"),
    ],
)
def test_amount_positive_finite_decimal(amount: Any, fragment: str) -> None:
    rejects(raw(valid(amount=amount)), "bad_amount", fragment)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(-0.01, ">= 0"), ("12", "must be a number"), (True, "must be a number"), (1e400, "finite")],
)
def test_amount_usd_is_a_non_negative_number(value: Any, fragment: str) -> None:
    data = (
        raw(valid(amount_usd=value))
        if value != 1e400
        else raw(valid()).replace(b"17000.5", b"1e400")
    )
    rejects(data, "bad_amount_usd", fragment)


def test_amount_usd_zero_is_allowed() -> None:
    assert parse_withdrawal(raw(valid(amount_usd=0))).amount_usd == 0.0


@pytest.mark.parametrize("destination", ["", "   ", 12, "x" * 257])
def test_destination_is_an_address(destination: Any) -> None:
    rejects(raw(valid(destination=destination)), "bad_destination", "destination")


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-24T10:00:00",
        "2026-11-24",
        "yesterday",
        "2026-11-24T10:00Z",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "1795514400",
    ],
)
def test_requested_at_is_rfc3339_with_zone(stamp: str) -> None:
    rejects(raw(valid(requested_at=stamp)), "bad_timestamp", "requested_at")


def test_requested_at_must_be_a_string() -> None:
    rejects(raw(valid(requested_at=1795514400)), "bad_timestamp", "RFC 3339 string")


@pytest.mark.parametrize(
    ("stamp", "epoch"),
    [
        ("2026-11-24T10:00:00Z", 1795514400.0),
        ("2026-11-24t10:00:00z", 1795514400.0),
        ("2026-11-24 11:00:00+01:00", 1795514400.0),
        ("2026-11-24T10:00:00.5-00:00", 1795514400.5),
        ("2026-11-24T10:00:00.123456789Z", 1795514400.123456),
    ],
)
def test_rfc3339_forms(stamp: str, epoch: float) -> None:
    assert parse_rfc3339(stamp) == pytest.approx(epoch, abs=1e-6)


def test_format_rfc3339_round_trips() -> None:
    assert format_rfc3339(1795514400.25) == "2026-11-24T10:00:00.250Z"
    assert parse_rfc3339(format_rfc3339(1795514400.25)) == 1795514400.25


@pytest.mark.parametrize("metadata", [[1], "x", 3])
def test_metadata_must_be_an_object(metadata: Any) -> None:
    rejects(raw(valid(metadata=metadata)), "bad_metadata", "metadata must be an object")


def test_metadata_is_passed_through_untouched() -> None:
    meta = {"nested": {"a": [1, 2, {"b": None}]}, "label": 5}
    event = parse_withdrawal(raw(valid(metadata=meta)))
    assert event.metadata == meta
    assert event.label is None  # non-string label is not a label


def test_kafka_key_must_be_the_account_id() -> None:
    rejects(raw(valid()), "key_mismatch", "not the account_id", key=b"other")
    rejects(raw(valid()), "key_mismatch", "not the account_id", key=b"\xff")
    assert parse_withdrawal(raw(valid()), key=b"acct-1").account_id == "acct-1"


# Hostile input: bounded, valid Unicode, keyed, on time ----------------------------------


def test_an_integer_too_long_for_python_is_a_clear_error_not_a_crash() -> None:
    data = raw(valid()).replace(b'"amount_usd": 17000.5', b'"amount_usd": ' + b"9" * 5000)
    rejects(data, "invalid_json", "5000 digits")
    data = raw(valid(metadata={"n": 1}))[:-2] + b', "big": ' + b"1" * 41 + b"}}"
    rejects(data, "invalid_json", "limit is 40")


def test_deep_nesting_is_refused_before_anything_recurses() -> None:
    deep: Any = 1
    for _ in range(MAX_NESTING):
        deep = [deep]
    rejects(raw(valid(metadata={"x": deep})), "too_deep", f"{MAX_NESTING} levels")
    rejects(b"[" * 20000 + b"]" * 20000, "too_deep", "levels")  # under the size limit


@pytest.mark.parametrize(
    "doc",
    [
        valid(destination="bc1q\ud800attacker"),
        valid(metadata={"note": "\udfff"}),
        valid(metadata={"\ud83d": "key"}),
        valid(withdrawal_id="w-\udc00"),
    ],
)
def test_lone_surrogates_are_refused_anywhere(doc: dict[str, Any]) -> None:
    rejects(raw(doc), "invalid_unicode", "surrogate")


def test_a_real_emoji_written_as_a_surrogate_pair_is_fine() -> None:
    event = parse_withdrawal(raw(valid(metadata={"note": "\U0001f600"})))  # json escapes a pair
    assert event.metadata == {"note": "\U0001f600"}


def test_a_record_without_a_key_is_refused_when_a_key_is_required() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_withdrawal(raw(valid()), key=None, require_key=True)
    assert info.value.code == "key_missing"
    assert parse_withdrawal(raw(valid()), key=None).account_id == "acct-1"  # files: no key


@pytest.mark.parametrize(
    ("offset_s", "code"), [(-8 * 86400, "stale_timestamp"), (3600, "future_timestamp")]
)
def test_event_time_must_be_near_the_wall_clock(offset_s: float, code: str) -> None:
    now = 1795514400.0 - offset_s  # the event is at 1795514400
    with pytest.raises(InvalidEvent) as info:
        parse_withdrawal(raw(valid()), now=now, max_age_s=7 * 86400, max_ahead_s=300)
    assert info.value.code == code
    # Within the bounds, or with the bounds off, it is accepted.
    parse_withdrawal(raw(valid()), now=1795514400.0 + 60, max_age_s=7 * 86400, max_ahead_s=300)
    parse_withdrawal(raw(valid()), now=now, max_age_s=0, max_ahead_s=0)


def test_year_one_and_year_9999_are_refused_by_the_worker_bounds() -> None:
    for stamp in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        with pytest.raises(InvalidEvent):
            parse_withdrawal(
                raw(valid(requested_at=stamp)), now=1795514400.0, max_age_s=86400, max_ahead_s=300
            )


def test_an_absurdly_long_amount_string_is_refused() -> None:
    rejects(raw(valid(amount="1" + "0" * 100)), "bad_amount", "characters")


# Property: whatever the bytes, parsing ends in a Withdrawal or an InvalidEvent -----------

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec=None, exclude_categories=())),
)
_json = st.recursive(
    _json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def _encodings(doc: Any) -> list[bytes]:
    out = []
    for ensure_ascii in (True, False):
        with contextlib.suppress(ValueError, TypeError):
            out.append(json.dumps(doc, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass"))
    return out


def _parses_or_refuses(data: bytes) -> None:
    try:
        event = parse_withdrawal(data, key=b"acct-1", require_key=True)
    except InvalidEvent as exc:
        assert exc.code and exc.reason
        exc.reason.encode("utf-8")  # the reason itself is valid text (a DLQ header)
        return
    json.dumps(event.to_json()).encode("utf-8")  # an accepted event always re-encodes


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_as_anything_but_invalid_event(data: bytes) -> None:
    _parses_or_refuses(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json, st.sampled_from(sorted(valid())))
def test_arbitrary_json_anywhere_in_an_event(value: Any, field: str) -> None:
    for data in _encodings(valid(**{field: value})) + _encodings(value):
        _parses_or_refuses(data)
