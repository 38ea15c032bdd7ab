"""Settings of several editor processes: storage URL, schema, message queue and heartbeat."""

from __future__ import annotations

import pytest

from codecollab.config import load_settings
from envconfig import ConfigError

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def test_defaults_use_sqlite_alone() -> None:
    settings = load_settings({}, dotenv=False)
    assert settings.uses_postgres is False
    assert settings.message_queue == ""


def test_postgres_and_queue_accepted() -> None:
    settings = load_settings(
        {
            "CODECOLLAB_DATABASE_URL": POSTGRES,
            "CODECOLLAB_DATABASE_SCHEMA": "editor_a",
            "CODECOLLAB_MESSAGE_QUEUE": "redis://127.0.0.1:6379/0",
            "CODECOLLAB_CLUSTER_HEARTBEAT": "0.5",
        },
        dotenv=False,
    )
    assert settings.uses_postgres is True
    assert settings.database_schema == "editor_a"
    assert settings.cluster_heartbeat == 0.5


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CODECOLLAB_DATABASE_URL": "mysql://db/x"}, "PostgreSQL URL"),
        ({"CODECOLLAB_DATABASE_SCHEMA": "Bad-Name"}, "CODECOLLAB_DATABASE_SCHEMA"),
        ({"CODECOLLAB_DATABASE_SCHEMA": "1abc"}, "not starting with a digit"),
        (
            {"CODECOLLAB_DATABASE_URL": POSTGRES, "CODECOLLAB_MESSAGE_QUEUE": "amqp://x"},
            "Redis URL",
        ),
        ({"CODECOLLAB_MESSAGE_QUEUE": "redis://127.0.0.1:6379/0"}, "must share storage"),
        ({"CODECOLLAB_CLUSTER_CHANNEL": "two words"}, "CODECOLLAB_CLUSTER_CHANNEL"),
        ({"CODECOLLAB_DATABASE_SYNCHRONOUS_COMMIT": "local"}, "use off"),
        ({"CODECOLLAB_CLUSTER_HEARTBEAT": "0"}, "CODECOLLAB_CLUSTER_HEARTBEAT"),
        (
            {"CODECOLLAB_DATABASE_URL": POSTGRES, "CODECOLLAB_ASYNC_MODE": "eventlet"},
            "use gevent",
        ),
    ],
)
def test_invalid_setting_rejected(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ, dotenv=False)
