"""``detector review``: the users-file helper and the start-up checks, without a broker."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from detector.cli import build_parser, main
from detector.review.auth import Users


def test_hash_user_prints_a_users_file_line_that_verifies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert main(["review", "--hash-user", "alice"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("alice:scrypt$") and "a long enough password" not in line
    users_file = tmp_path / "users"
    users_file.write_text(line + "\n")
    assert Users(users_file).verify("alice", "a long enough password")


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("alice", "short\n", "at least 12 characters"),
        ("alice smith", "a long enough password\n", "not a valid analyst name"),
    ],
)
def test_hash_user_refuses_weak_passwords_and_bad_names(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    password: str,
    message: str,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(password))
    assert main(["review", "--hash-user", name]) == 2
    assert message in capsys.readouterr().err


def test_the_service_refuses_to_start_without_analysts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DETECTOR_REVIEW_USERS_FILE", "")
    assert main(["review"]) == 2
    assert "DETECTOR_REVIEW_USERS_FILE is not set" in capsys.readouterr().err
    empty = tmp_path / "users"
    empty.write_text("# nobody yet\n")
    monkeypatch.setenv("DETECTOR_REVIEW_USERS_FILE", str(empty))
    assert main(["review"]) == 2
    assert "lists no analyst" in capsys.readouterr().err
    monkeypatch.setenv("DETECTOR_REVIEW_USERS_FILE", str(tmp_path / "missing"))
    assert main(["review"]) == 2
    assert "cannot read the review users file" in capsys.readouterr().err


def test_review_is_a_command_of_the_cli() -> None:
    args = build_parser().parse_args(["review", "--bootstrap-servers", "k:9092"])
    assert args.command == "review" and args.hash_user is None
