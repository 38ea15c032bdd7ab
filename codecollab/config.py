"""Settings of the CodeCollab editor, read once from the environment (and ``.env``).

Every setting is an environment variable with the prefix ``CODECOLLAB_``, except the storage
of rate-limit buckets, which falls back to ``RATELIMIT_STORAGE_URL`` shared by all services.
``load_settings()`` validates every value at start-up and raises ``envconfig.ConfigError``
naming the variable and the fix. The variables and their defaults are listed in
``.env.example`` at the repository root.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from codecollab.origins import LOOPBACK_HOSTS, default_allowed_hosts, host_name, origin_key
from envconfig import (
    ConfigError,
    env_checked,
    env_float,
    env_int,
    env_list,
    env_str,
    load_env,
    repo_root,
)

ASYNC_MODES = ("gevent", "eventlet", "threading")
SQLITE_SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
POSTGRES_SCHEMES = ("postgresql", "postgres")
MESSAGE_QUEUE_SCHEMES = ("redis", "rediss")
# A PostgreSQL identifier without quoting: lower-case letters, digits and '_', at most 63 bytes.
SCHEMA_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Validated settings of one editor process. Sizes are bytes, durations seconds."""

    host: str = "127.0.0.1"
    port: int = 3000
    async_mode: str = "gevent"
    log_level: str = "INFO"

    # Storage
    database_path: Path = field(default_factory=lambda: repo_root() / "var" / "codecollab.db")
    sqlite_synchronous: str = "NORMAL"
    compact_after_updates: int = 500
    compact_interval: float = 30.0
    idle_unload_after: float = 60.0
    sweep_interval: float = 5.0

    # Documents and messages
    doc_max_bytes: int = 2 * MIB
    max_message_bytes: int = 4 * MIB
    awareness_max_bytes: int = 64 * 1024
    seed_language: str = "python"

    # Socket.IO transport
    ping_interval: float = 5.0
    ping_timeout: float = 4.0
    cors_allowed_origins: tuple[str, ...] = ()
    # Host header names served; the default depends on `host` (default_allowed_hosts).
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS

    # Rate limits (ratelimiter policy strings)
    http_rate_limit: str = "300/minute, burst 100"
    static_rate_limit: str = "3000/minute, burst 600"
    connect_rate_limit: str = "120/minute, burst 60"
    socket_rate_limit: str = "100/second, burst 300"
    socket_flood_seconds: float = 2.0
    rate_limit_storage: str = "memory://"
    proxy_count: int = 0

    # Scale-out: shared storage and the message queue between editor processes
    database_url: str = ""
    database_schema: str = "public"
    database_pool_size: int = 4
    database_synchronous_commit: str = "off"
    message_queue: str = ""
    cluster_channel: str = "codecollab"
    cluster_heartbeat: float = 2.0
    cluster_resync_interval: float = 30.0

    @property
    def uses_postgres(self) -> bool:
        """Whether documents are stored in PostgreSQL (``database_url``) instead of SQLite."""
        return bool(self.database_url)

    @property
    def presence_drop_timeout(self) -> float:
        """Worst-case seconds until a silently dropped client is removed from presence.

        The server pings every ``ping_interval`` and its service task checks each socket once
        per ``ping_timeout``, so an unanswered ping is noticed at most ``2 * ping_timeout``
        after it was sent.
        """
        return self.ping_interval + 2 * self.ping_timeout


def read_async_mode(environ: Mapping[str, str] | None = None) -> str:
    """Read ``CODECOLLAB_ASYNC_MODE`` alone, so ``app.py`` can monkey-patch before importing."""
    mode = env_str("CODECOLLAB_ASYNC_MODE", "gevent", environ).lower()
    if mode not in ASYNC_MODES:
        raise ConfigError(
            f"CODECOLLAB_ASYNC_MODE={mode!r} is not supported; use one of {', '.join(ASYNC_MODES)}"
        )
    return mode


def load_settings(environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Read and validate every setting.

    :param environ: variables to read instead of ``os.environ`` (tests pass a dict).
    :param dotenv: load ``.env`` at the repository root first; only used with ``os.environ``.
    :raises ConfigError: on the first invalid value.
    """
    if environ is None and dotenv:
        load_env()
    # Imported here: app.py imports this module before gevent or eventlet patches the stdlib.
    from ratelimiter import parse_policies

    def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = env_str(name, default, environ).upper()
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not valid; use one of {', '.join(allowed)}")
        return value

    doc_max_bytes = env_int("CODECOLLAB_DOC_MAX_BYTES", 2 * MIB, minimum=1024, environ=environ)
    max_message_bytes = env_int(
        "CODECOLLAB_MAX_MESSAGE_BYTES", 2 * doc_max_bytes, minimum=1024, environ=environ
    )
    if max_message_bytes <= doc_max_bytes:
        raise ConfigError(
            f"CODECOLLAB_MAX_MESSAGE_BYTES={max_message_bytes} must be larger than "
            f"CODECOLLAB_DOC_MAX_BYTES={doc_max_bytes}, so that an oversized edit reaches the "
            "server and gets a doc_too_large error instead of a silent disconnect"
        )

    origins = tuple(env_list("CODECOLLAB_CORS_ALLOWED_ORIGINS", [], environ))
    for origin in origins:
        if origin_key(origin) is None:
            raise ConfigError(
                f"CODECOLLAB_CORS_ALLOWED_ORIGINS contains {origin!r}; list origins such as "
                "https://editor.example.com, with no path or trailing slash ('*' is not allowed)"
            )

    host = env_str("CODECOLLAB_HOST", "127.0.0.1", environ)
    allowed_hosts = tuple(
        _allowed_host(entry) for entry in env_list("CODECOLLAB_ALLOWED_HOSTS", [], environ)
    ) or default_allowed_hosts(host)

    database_path = Path(
        env_str("CODECOLLAB_DATABASE_PATH", str(repo_root() / "var" / "codecollab.db"), environ)
    )
    if not database_path.is_absolute():
        # Relative paths are taken from the repository root, so `cd codecollab && python app.py`
        # and `make run` from the root use the same file.
        database_path = repo_root() / database_path

    ping_interval = env_float(
        "CODECOLLAB_PING_INTERVAL", 5.0, minimum=0.1, maximum=60.0, environ=environ
    )
    ping_timeout = env_float(
        "CODECOLLAB_PING_TIMEOUT", 4.0, minimum=0.1, maximum=60.0, environ=environ
    )

    scale_out = _read_scale_out(environ)
    if scale_out["database_url"] and read_async_mode(environ) == "eventlet":
        raise ConfigError(
            "CODECOLLAB_DATABASE_URL (PostgreSQL) does not work with CODECOLLAB_ASYNC_MODE="
            "eventlet, because psycopg 3 would block eventlet's loop; use gevent"
        )

    return Settings(
        host=host,
        port=env_int("CODECOLLAB_PORT", 3000, minimum=0, maximum=65535, environ=environ),
        async_mode=read_async_mode(environ),
        log_level=choice("CODECOLLAB_LOG_LEVEL", "INFO", LOG_LEVELS),
        database_path=database_path,
        sqlite_synchronous=choice(
            "CODECOLLAB_SQLITE_SYNCHRONOUS", "NORMAL", SQLITE_SYNCHRONOUS_MODES
        ),
        compact_after_updates=env_int(
            "CODECOLLAB_COMPACT_AFTER_UPDATES", 500, minimum=1, environ=environ
        ),
        compact_interval=env_float(
            "CODECOLLAB_COMPACT_INTERVAL", 30.0, minimum=0.1, environ=environ
        ),
        idle_unload_after=env_float(
            "CODECOLLAB_IDLE_UNLOAD_AFTER", 60.0, minimum=0.1, environ=environ
        ),
        sweep_interval=env_float("CODECOLLAB_SWEEP_INTERVAL", 5.0, minimum=0.05, environ=environ),
        doc_max_bytes=doc_max_bytes,
        max_message_bytes=max_message_bytes,
        awareness_max_bytes=env_int(
            "CODECOLLAB_AWARENESS_MAX_BYTES", 64 * 1024, minimum=256, environ=environ
        ),
        seed_language=env_str("CODECOLLAB_SEED_LANGUAGE", "python", environ),
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        cors_allowed_origins=origins,
        allowed_hosts=allowed_hosts,
        http_rate_limit=env_checked(
            "CODECOLLAB_HTTP_RATE_LIMIT", "300/minute, burst 100", parse_policies, environ
        ),
        static_rate_limit=env_checked(
            "CODECOLLAB_STATIC_RATE_LIMIT", "3000/minute, burst 600", parse_policies, environ
        ),
        connect_rate_limit=env_checked(
            "CODECOLLAB_CONNECT_RATE_LIMIT", "120/minute, burst 60", parse_policies, environ
        ),
        socket_rate_limit=env_checked(
            "CODECOLLAB_SOCKET_RATE_LIMIT", "100/second, burst 300", parse_policies, environ
        ),
        socket_flood_seconds=env_float(
            "CODECOLLAB_SOCKET_FLOOD_SECONDS", 2.0, minimum=0.1, maximum=60.0, environ=environ
        ),
        rate_limit_storage=env_str(
            "CODECOLLAB_RATE_LIMIT_STORAGE",
            env_str("RATELIMIT_STORAGE_URL", "memory://", environ),
            environ,
        ),
        proxy_count=env_int("CODECOLLAB_PROXY_COUNT", 0, minimum=0, maximum=10, environ=environ),
        **scale_out,
    )


def _read_synchronous_commit(environ: Mapping[str, str] | None) -> str:
    value = env_str("CODECOLLAB_DATABASE_SYNCHRONOUS_COMMIT", "off", environ).lower()
    if value not in ("off", "on"):
        raise ConfigError(
            f"CODECOLLAB_DATABASE_SYNCHRONOUS_COMMIT={value!r} is not valid; use off (an "
            "acknowledged edit survives a killed editor) or on (it also survives a PostgreSQL "
            "crash, at the cost of a disk flush per edit)"
        )
    return value


def _read_scale_out(environ: Mapping[str, str] | None) -> dict[str, object]:
    """Read the settings of several editor processes sharing PostgreSQL and Redis."""
    database_url = env_str("CODECOLLAB_DATABASE_URL", "", environ)
    if database_url and urlsplit(database_url).scheme not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"CODECOLLAB_DATABASE_URL has the scheme {urlsplit(database_url).scheme!r}; use a "
            "PostgreSQL URL such as postgresql://user@127.0.0.1:5432/codecollab, or leave it "
            "empty to use the SQLite file of CODECOLLAB_DATABASE_PATH"
        )

    schema = env_str("CODECOLLAB_DATABASE_SCHEMA", "public", environ)
    if not SCHEMA_NAME_PATTERN.match(schema):
        raise ConfigError(
            f"CODECOLLAB_DATABASE_SCHEMA={schema!r} is not valid; use 1 to 63 lower-case "
            "letters, digits or '_', not starting with a digit"
        )

    message_queue = env_str("CODECOLLAB_MESSAGE_QUEUE", "", environ)
    if message_queue:
        if urlsplit(message_queue).scheme not in MESSAGE_QUEUE_SCHEMES:
            raise ConfigError(
                f"CODECOLLAB_MESSAGE_QUEUE has the scheme {urlsplit(message_queue).scheme!r}; "
                "use a Redis URL such as redis://127.0.0.1:6379/0"
            )
        if not database_url:
            raise ConfigError(
                "CODECOLLAB_MESSAGE_QUEUE is set but documents are in a local SQLite file; "
                "editor processes that share a message queue must share storage too: set "
                "CODECOLLAB_DATABASE_URL=postgresql://..."
            )

    channel = env_str("CODECOLLAB_CLUSTER_CHANNEL", "codecollab", environ)
    if not channel or any(char.isspace() for char in channel):
        raise ConfigError(
            f"CODECOLLAB_CLUSTER_CHANNEL={channel!r} is not valid; use a non-empty name "
            "without spaces"
        )

    return {
        "database_url": database_url,
        "database_schema": schema,
        "database_synchronous_commit": _read_synchronous_commit(environ),
        "database_pool_size": env_int(
            "CODECOLLAB_DATABASE_POOL_SIZE", 4, minimum=1, maximum=100, environ=environ
        ),
        "message_queue": message_queue,
        "cluster_channel": channel,
        "cluster_heartbeat": env_float(
            "CODECOLLAB_CLUSTER_HEARTBEAT", 2.0, minimum=0.1, maximum=60.0, environ=environ
        ),
        "cluster_resync_interval": env_float(
            "CODECOLLAB_CLUSTER_RESYNC_INTERVAL", 30.0, minimum=0.1, environ=environ
        ),
    }


def _allowed_host(entry: str) -> str:
    """Return an entry of CODECOLLAB_ALLOWED_HOSTS in the form the host check compares."""
    if entry == "*":
        return entry
    domain = entry.startswith(".")
    name = entry[1:] if domain else entry
    try:
        # An IPv6 address, bracketed or not, in the compressed form Host names are compared in.
        return str(ipaddress.IPv6Address(name.strip("[]")))
    except ValueError:
        pass
    bare = name.lower().rstrip(".")
    if host_name(name) != bare or not bare or bare.startswith(".") or ".." in bare:
        raise ConfigError(
            f"CODECOLLAB_ALLOWED_HOSTS contains {entry!r}; list host names without scheme or "
            "port, such as editor.example.com, .example.com for a whole domain, ::1, or *"
        )
    return f".{bare}" if domain else bare
