import pytest

from codecollab.config import load_settings, read_async_mode
from envconfig import ConfigError


def test_defaults() -> None:
    settings = load_settings({})
    assert (settings.port, settings.async_mode, settings.doc_max_bytes) == (3000, "gevent", 2097152)


def test_default_message_size_exceeds_document_cap() -> None:
    settings = load_settings({})
    assert settings.max_message_bytes > settings.doc_max_bytes


def test_default_presence_drop_timeout_at_most_15_seconds() -> None:
    assert load_settings({}).presence_drop_timeout <= 15


@pytest.mark.parametrize("mode", ["gevent", "eventlet", "threading"])
def test_async_mode_selectable(mode: str) -> None:
    assert read_async_mode({"CODECOLLAB_ASYNC_MODE": mode}) == mode


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CODECOLLAB_ASYNC_MODE": "asyncio"}, "CODECOLLAB_ASYNC_MODE='asyncio'"),
        ({"CODECOLLAB_CORS_ALLOWED_ORIGINS": "*"}, "'\\*' is not allowed"),
        ({"CODECOLLAB_CORS_ALLOWED_ORIGINS": "example.com"}, "list origins such as"),
        ({"CODECOLLAB_CORS_ALLOWED_ORIGINS": "https://example.com/"}, "no path or trailing"),
        ({"CODECOLLAB_ALLOWED_HOSTS": "localhost:3000"}, "without scheme or port"),
        ({"CODECOLLAB_ALLOWED_HOSTS": "https://example.com"}, "without scheme or port"),
        ({"CODECOLLAB_ALLOWED_HOSTS": "..example.com"}, "without scheme or port"),
        (
            {"CODECOLLAB_DOC_MAX_BYTES": "4096", "CODECOLLAB_MAX_MESSAGE_BYTES": "4096"},
            "must be larger than",
        ),
        ({"CODECOLLAB_SQLITE_SYNCHRONOUS": "sometimes"}, "CODECOLLAB_SQLITE_SYNCHRONOUS"),
        ({"CODECOLLAB_PORT": "http"}, "CODECOLLAB_PORT='http'"),
        ({"CODECOLLAB_HTTP_RATE_LIMIT": "lots"}, "CODECOLLAB_HTTP_RATE_LIMIT='lots'"),
        ({"CODECOLLAB_CONNECT_RATE_LIMIT": "1/fortnight"}, "CODECOLLAB_CONNECT_RATE_LIMIT="),
        ({"CODECOLLAB_SOCKET_RATE_LIMIT": "0/second"}, "CODECOLLAB_SOCKET_RATE_LIMIT='0/second'"),
    ],
)
def test_invalid_setting_rejected(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ("localhost", "127.0.0.1", "::1")),
        ({"CODECOLLAB_HOST": "0.0.0.0"}, ("*",)),
        ({"CODECOLLAB_ALLOWED_HOSTS": "::1, [0:0::1]"}, ("::1", "::1")),
        (
            {"CODECOLLAB_ALLOWED_HOSTS": "Editor.Example.com., .example.org, [::1]"},
            ("editor.example.com", ".example.org", "::1"),
        ),
    ],
)
def test_allowed_hosts(environ: dict[str, str], expected: tuple[str, ...]) -> None:
    assert load_settings(environ).allowed_hosts == expected


def test_relative_database_path_from_repository_root() -> None:
    settings = load_settings({"CODECOLLAB_DATABASE_PATH": "var/x.db"})
    assert settings.database_path.is_absolute()
    assert settings.database_path.parts[-2:] == ("var", "x.db")


def test_rate_limit_storage_falls_back_to_shared_setting() -> None:
    settings = load_settings({"RATELIMIT_STORAGE_URL": "redis://127.0.0.1:6379/3"})
    assert settings.rate_limit_storage == "redis://127.0.0.1:6379/3"
