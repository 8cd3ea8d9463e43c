"""The one settings object: environment parsing, validation, and the README's table."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.config import Settings, settings_table
from detector.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.model_dir == Path("models/default")


def test_every_variable_is_read_and_converted() -> None:
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "a:1, b:2",
            "DETECTOR_PARTITIONS": "12",
            "DETECTOR_BATCH_WITHIN_MS": "0.5",
            "DETECTOR_MODEL_DIR": "/srv/model",
            "DETECTOR_APP_ID": "risk",
            "DETECTOR_UNRELATED": "ignored",
        }
    )
    assert settings.partitions == 12
    assert settings.batch_within_ms == 0.5
    assert settings.model_dir == Path("/srv/model")
    assert settings.bootstrap_list == ["a:1", "b:2"]
    assert settings.broker_url == "kafka://a:1;kafka://b:2"
    assert settings.topic_by_destination == "risk-withdrawals-by-destination"
    assert settings.changelog_topic("accounts") == "risk-accounts-changelog"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"DETECTOR_PARTITIONS": "four"}, "DETECTOR_PARTITIONS='four'"),
        ({"DETECTOR_PARTITIONS": "0"}, "partitions must be >= 1"),
        ({"DETECTOR_BATCH_MAX": "0"}, "batch_max"),
        ({"DETECTOR_BATCH_WITHIN_MS": "-1"}, "batch_within_ms"),
        ({"KAFKA_BOOTSTRAP_SERVERS": " "}, "KAFKA_BOOTSTRAP_SERVERS is empty"),
        ({"DETECTOR_HEARTBEAT_INTERVAL_S": "4"}, "at most a third of session_timeout_s"),
        ({"DETECTOR_HEARTBEAT_INTERVAL_S": "0"}, "heartbeat_interval_s"),
        ({"DETECTOR_REBALANCE_TIMEOUT_S": "5"}, "rebalance_timeout_s"),
        ({"DETECTOR_SESSION_TIMEOUT_S": "95", "DETECTOR_REBALANCE_TIMEOUT_S": "95"}, "90"),
    ],
)
def test_bad_values_say_which_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env(env)


def test_readme_lists_every_setting() -> None:
    assert settings_table() in README.read_text(), "README settings table is stale"


def test_readme_quotes_the_current_evaluation_table() -> None:
    evaluation = (README.parent / "docs" / "evaluation.md").read_text()
    start = evaluation.index("| world | test withdrawals | attacks | ours recall")
    table = evaluation[start : evaluation.index("\n\n", start)]
    assert table in README.read_text(), "README quality table differs from docs/evaluation.md"


def test_to_env_round_trips_through_from_env() -> None:
    settings = Settings(partitions=7, model_dir=Path("/m"), batch_within_ms=3.5, app_id="x")
    assert Settings.from_env(settings.to_env()) == settings
