"""Analysts' credentials (scrypt, never plaintext), sessions and login throttling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detector.errors import ConfigError
from detector.review.auth import (
    LoginThrottle,
    Sessions,
    Users,
    hash_password,
    tokens_equal,
    verify_password,
)

# Computed once: scrypt costs tens of milliseconds by design.
ALICE = hash_password("correct horse battery staple")


def test_a_password_verifies_against_its_scrypt_hash_only() -> None:
    assert ALICE.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse battery staple", ALICE)
    assert not verify_password("correct horse battery stapl", ALICE)
    assert not verify_password("", ALICE)
    assert not verify_password("x" * 5000, ALICE)
    assert hash_password("same", salt=b"s" * 16) == hash_password("same", salt=b"s" * 16)
    assert hash_password("same") != hash_password("same")  # fresh salt


@pytest.mark.parametrize(
    "encoded",
    [
        "correct horse battery staple",  # plaintext
        "sha256$abc",
        "scrypt$16383$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # N not a power of two
        "scrypt$1048576$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # N too costly
        "scrypt$16384$8$1$c2E$aGFzaGhhc2hoYXNoaGFzaA",  # salt too short
    ],
)
def test_anything_but_a_sane_scrypt_hash_is_refused(encoded: str) -> None:
    with pytest.raises(ValueError):
        verify_password("x", encoded)


def test_secrets_compare_in_constant_time_including_odd_input() -> None:
    assert tokens_equal("abc", "abc")
    assert not tokens_equal("abc", "abd") and not tokens_equal("abc", "abcd")
    assert not tokens_equal("\ud800", "x")  # a lone surrogate from a form does not crash


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_users_file_lists_analysts_with_comments_and_blank_lines(tmp_path: Path) -> None:
    users = Users(
        write(tmp_path / "users", "# analysts", "", f"alice:{ALICE}", f"bob@ex.com:{ALICE}")
    )
    assert users.names == ["alice", "bob@ex.com"]
    assert users.verify("alice", "correct horse battery staple")
    assert not users.verify("alice", "wrong")
    assert not users.verify("mallory", "correct horse battery staple")
    assert users.exists("bob@ex.com") and not users.exists("mallory")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("alice:hunter2hunter2", "never passwords"),
        ("alice", "expected name:scrypt"),
        (f"alice smith:{ALICE}", "expected name:scrypt"),
        (f":{ALICE}", "expected name:scrypt"),
    ],
)
def test_a_bad_users_file_line_is_a_config_error_naming_the_line(
    tmp_path: Path, line: str, fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        Users(write(tmp_path / "users", f"bob:{ALICE}", line))
    assert ":2:" in str(info.value)


def test_duplicates_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        Users(write(tmp_path / "users", f"bob:{ALICE}", f"bob:{ALICE}"))
    with pytest.raises(ConfigError, match="cannot read"):
        Users(tmp_path / "missing")


def test_the_users_file_is_reread_when_it_changes_and_a_broken_edit_is_ignored(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "users", f"alice:{ALICE}")
    users = Users(path)
    write(path, f"alice:{ALICE}", f"carol:{ALICE}")
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert users.names == ["alice", "carol"]
    write(path, "carol:plaintext-password")  # half-written or wrong: keep the last good list
    os.utime(path, ns=(2, 2))
    assert users.names == ["alice", "carol"]
    write(path, f"carol:{ALICE}")
    os.utime(path, ns=(3, 3))
    assert users.names == ["carol"] and not users.exists("alice")


def test_sessions_expire_and_are_found_only_by_their_token() -> None:
    now = [1000.0]
    sessions = Sessions(60.0, clock=lambda: now[0])
    token, session = sessions.create("alice")
    assert len(token) >= 43 and session.csrf and session.csrf != token
    assert sessions.get(token) is session
    assert sessions.get(token + "x") is None and sessions.get(None) is None
    assert sessions.get("x" * 1000) is None
    other, _ = sessions.create("bob")
    sessions.drop(other)
    assert sessions.get(other) is None
    now[0] += 61
    assert sessions.get(token) is None and len(sessions) == 0


def test_dropping_a_user_ends_all_their_sessions() -> None:
    sessions = Sessions(60.0)
    first, _ = sessions.create("alice")
    second, _ = sessions.create("alice")
    bob, _ = sessions.create("bob")
    sessions.drop_user("alice")
    assert sessions.get(first) is None and sessions.get(second) is None
    assert sessions.get(bob) is not None


def test_failed_logins_are_throttled_per_key_for_a_window() -> None:
    now = [0.0]
    throttle = LoginThrottle(failures=3, window_s=60.0, clock=lambda: now[0])
    keys = ["name:alice", "client:10.0.0.1"]
    for _ in range(3):
        assert not throttle.blocked(keys)
        throttle.failed(keys)
    assert throttle.blocked(keys)
    assert throttle.blocked(["name:bob", "client:10.0.0.1"])  # same client, other name
    assert not throttle.blocked(["name:bob", "client:10.0.0.2"])
    now[0] = 61.0
    assert not throttle.blocked(keys)
    throttle.failed(keys)
    throttle.succeeded(keys)
    assert not throttle.blocked(keys)
