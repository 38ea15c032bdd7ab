"""Settings of the scheduler, read once from the environment (and ``.env``).

The producer and the workers both call :func:`load_settings` and pass the result down. Relative
paths are resolved against the repository root, so ``cd scheduler && python app.py`` and
``make run`` from the root use the same files.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from envconfig import (
    ConfigError,
    env_bool,
    env_checked,
    env_float,
    env_int,
    env_str,
    load_env,
    repo_root,
)
from ratelimiter import parse_policies

logger = logging.getLogger(__name__)

EMBEDDED_BROKER_SCHEME = "sqlite"

# Embedded-broker limits, logged at start-up and repeated in the README.
EMBEDDED_BROKER_LIMITS = (
    "embedded broker (SQLite transport, scheduler.sqlite_broker) in use: producers and workers "
    "must run on this machine and a message may hold at most 4 MiB. Tasks that fail for good "
    "go to the dead-letter queue as on RabbitMQ (list them with python -m scheduler.deadletters). "
    "Set CELERY_BROKER_URL=amqp://... to use RabbitMQ."
)


@dataclass(frozen=True)
class Settings:
    """Every setting of the producer and the workers."""

    host: str
    port: int
    # Producer processes forked by the HTTP server, and request threads in each.
    processes: int
    threads: int
    # Folder of the embedded broker, the result database, the task store and beat's schedule.
    state_dir: Path
    broker_url: str
    result_backend: str
    # Whether workers also store each task's return value in ``result_backend``.
    store_results: bool
    # Folder for uploads (``uploads/``) and task outputs (``<task_id>/``).
    media_root: Path
    # SQLite file of the task store: every accepted task, its state and its result.
    task_db: Path
    # Folder where ``send_emails`` writes ``.eml`` files when ``smtp_url`` is empty.
    outbox: Path
    smtp_url: str
    smtp_from: str
    max_upload_mb: int
    default_height: int
    default_thumbnails: int
    x264_preset: str
    x264_crf: int
    video_queue: str
    io_queue: str
    dead_letter_queue: str
    # Seconds a POST may spend reaching the broker before the POST returns 503.
    publish_timeout: float
    # Rate-limit policies in the ratelimiter syntax, e.g. "5/minute, burst 5".
    video_rate_limit: str
    post_rate_limit: str
    rate_limit_storage: str
    video_soft_time_limit: int
    video_time_limit: int
    io_soft_time_limit: int
    io_time_limit: int
    # RabbitMQ's consumer_timeout in seconds; every hard time limit must stay below it.
    consumer_timeout: int
    max_retries: int
    # Deliveries of one task (redeliveries after a lost worker included) before it fails.
    max_deliveries: int
    result_expires_days: int
    output_retention_days: int
    cleanup_interval: float
    dispatch_interval: float
    smtp_timeout: float
    # Where uploads and outputs live: "" for the MEDIA_ROOT folder, or s3://bucket/prefix.
    media_url: str = ""
    # Endpoint of an S3-compatible server (MinIO, Ceph...); "" means AWS or AWS_ENDPOINT_URL_S3.
    media_s3_endpoint_url: str = ""
    media_s3_region: str = ""
    # Empty keys leave credentials to boto3's chain (AWS_* variables, ~/.aws, instance role).
    media_s3_access_key_id: str = ""
    media_s3_secret_access_key: str = field(default="", repr=False)
    # "path" for most S3-compatible servers, "virtual" or "auto" for AWS.
    media_s3_addressing_style: str = "auto"
    # PostgreSQL URL of the task store; "" keeps it in the SQLite file ``task_db``.
    task_db_url: str = field(default="", repr=False)
    # Prefix of the rate limiter's keys, so deployments sharing one Redis keep their buckets apart.
    rate_limit_key_prefix: str = "ratelimit:scheduler"

    @property
    def embedded_broker(self) -> bool:
        """Whether the broker is the embedded SQLite database instead of a server."""
        return self.broker_url.startswith(EMBEDDED_BROKER_SCHEME)

    @property
    def uploads_dir(self) -> Path:
        """Folder that receives uploaded videos before they are processed."""
        return self.media_root / "uploads"


def _resolve(path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (repo_root() / candidate).resolve()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default: ``os.environ`` after loading ``.env``).

    :raises ConfigError: when a value is invalid or the time limits exceed the consumer timeout.
    """
    if environ is None:
        load_env()
    state_dir = _resolve(env_str("SCHEDULER_STATE_DIR", "var/scheduler", environ))
    default_broker = f"{EMBEDDED_BROKER_SCHEME}:///{state_dir / 'broker.sqlite3'}"
    default_backend = f"db+sqlite:///{state_dir / 'results.db'}"

    settings = Settings(
        host=env_str("SCHEDULER_HOST", "127.0.0.1", environ),
        state_dir=state_dir,
        port=env_int("SCHEDULER_PORT", 5000, minimum=0, maximum=65535, environ=environ),
        processes=env_int("SCHEDULER_PROCESSES", 1, minimum=1, maximum=64, environ=environ),
        threads=env_int("SCHEDULER_THREADS", 64, minimum=1, maximum=1000, environ=environ),
        broker_url=env_str("CELERY_BROKER_URL", default_broker, environ),
        result_backend=env_str("CELERY_RESULT_BACKEND", default_backend, environ),
        store_results=env_bool("CELERY_STORE_RESULTS", True, environ),
        media_root=_resolve(env_str("MEDIA_ROOT", "var/media", environ)),
        task_db=_resolve(env_str("SCHEDULER_TASK_DB", str(state_dir / "tasks.db"), environ)),
        outbox=_resolve(env_str("SCHEDULER_OUTBOX", "var/outbox", environ)),
        smtp_url=env_str("SMTP_URL", "", environ),
        smtp_from=env_str("SMTP_FROM", "scheduler@localhost", environ),
        max_upload_mb=env_int("MAX_UPLOAD_MB", 500, minimum=1, environ=environ),
        default_height=env_int("VIDEO_HEIGHT", 480, minimum=16, maximum=4320, environ=environ),
        default_thumbnails=env_int("VIDEO_THUMBNAILS", 3, minimum=0, maximum=100, environ=environ),
        x264_preset=env_str("VIDEO_X264_PRESET", "veryfast", environ),
        x264_crf=env_int("VIDEO_X264_CRF", 23, minimum=0, maximum=51, environ=environ),
        video_queue=env_str("SCHEDULER_VIDEO_QUEUE", "video", environ),
        io_queue=env_str("SCHEDULER_IO_QUEUE", "io", environ),
        dead_letter_queue=env_str("SCHEDULER_DEAD_LETTER_QUEUE", "dead_letter", environ),
        publish_timeout=env_float("SCHEDULER_PUBLISH_TIMEOUT", 3.0, minimum=0.1, environ=environ),
        video_rate_limit=env_checked(
            "SCHEDULER_VIDEO_RATE_LIMIT", "5/minute, burst 5", parse_policies, environ
        ),
        post_rate_limit=env_checked(
            "SCHEDULER_POST_RATE_LIMIT", "30/minute, burst 10", parse_policies, environ
        ),
        rate_limit_storage=env_str("RATELIMIT_STORAGE_URL", "memory://", environ),
        video_soft_time_limit=env_int("VIDEO_SOFT_TIME_LIMIT", 1500, minimum=1, environ=environ),
        video_time_limit=env_int("VIDEO_TIME_LIMIT", 1560, minimum=1, environ=environ),
        io_soft_time_limit=env_int("IO_SOFT_TIME_LIMIT", 240, minimum=1, environ=environ),
        io_time_limit=env_int("IO_TIME_LIMIT", 300, minimum=1, environ=environ),
        consumer_timeout=env_int("RABBITMQ_CONSUMER_TIMEOUT", 1800, minimum=1, environ=environ),
        max_retries=env_int("SCHEDULER_MAX_RETRIES", 5, minimum=0, environ=environ),
        max_deliveries=env_int("SCHEDULER_MAX_DELIVERIES", 5, minimum=1, environ=environ),
        result_expires_days=env_int("CELERY_RESULT_EXPIRES_DAYS", 7, minimum=1, environ=environ),
        output_retention_days=env_int("OUTPUT_RETENTION_DAYS", 7, minimum=1, environ=environ),
        cleanup_interval=env_float("SCHEDULER_CLEANUP_INTERVAL", 3600, minimum=1, environ=environ),
        dispatch_interval=env_float("SCHEDULER_DISPATCH_INTERVAL", 2, minimum=0.1, environ=environ),
        smtp_timeout=env_float("SMTP_TIMEOUT", 10, minimum=0.1, environ=environ),
        media_url=_media_url(env_str("MEDIA_URL", "", environ)),
        media_s3_endpoint_url=env_str("MEDIA_S3_ENDPOINT_URL", "", environ),
        media_s3_region=env_str("MEDIA_S3_REGION", "", environ),
        media_s3_access_key_id=env_str("MEDIA_S3_ACCESS_KEY_ID", "", environ),
        media_s3_secret_access_key=env_str("MEDIA_S3_SECRET_ACCESS_KEY", "", environ),
        media_s3_addressing_style=_addressing_style(
            env_str("MEDIA_S3_ADDRESSING_STYLE", "auto", environ)
        ),
        task_db_url=_task_db_url(env_str("SCHEDULER_TASK_DB_URL", "", environ)),
        rate_limit_key_prefix=env_str(
            "SCHEDULER_RATE_LIMIT_KEY_PREFIX", "ratelimit:scheduler", environ
        ),
    )
    _check_time_limits(settings)
    _check_s3_credentials(settings)
    _check_shared_rate_limits(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _check_time_limits(settings: Settings) -> None:
    pairs = [
        ("VIDEO", settings.video_soft_time_limit, settings.video_time_limit),
        ("IO", settings.io_soft_time_limit, settings.io_time_limit),
    ]
    for prefix, soft, hard in pairs:
        if soft >= hard:
            raise ConfigError(
                f"{prefix}_SOFT_TIME_LIMIT={soft} must be below {prefix}_TIME_LIMIT={hard}"
            )
        if hard >= settings.consumer_timeout:
            raise ConfigError(
                f"{prefix}_TIME_LIMIT={hard} must be below RABBITMQ_CONSUMER_TIMEOUT="
                f"{settings.consumer_timeout}, or RabbitMQ closes the channel of a worker "
                "still running the task; raise consumer_timeout in rabbitmq.conf and set "
                "RABBITMQ_CONSUMER_TIMEOUT to match"
            )


def _check_shared_rate_limits(settings: Settings) -> None:
    if settings.processes > 1 and settings.rate_limit_storage.startswith("memory"):
        raise ConfigError(
            f"SCHEDULER_PROCESSES={settings.processes} needs shared rate-limit storage, but"
            f" RATELIMIT_STORAGE_URL is {settings.rate_limit_storage!r}: each process would"
            " keep its own buckets and admit every client once per process. Set"
            " RATELIMIT_STORAGE_URL=redis://127.0.0.1:6379/0, or SCHEDULER_PROCESSES=1"
        )


# S3 bucket names: 3 to 63 lowercase letters, digits, dots and hyphens.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ADDRESSING_STYLES = ("auto", "path", "virtual")


def _media_url(url: str) -> str:
    """Validate ``MEDIA_URL``: empty, or ``s3://bucket`` with an optional key prefix."""
    url = url.strip()
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not _BUCKET_NAME.match(parts.netloc) or parts.query:
        raise ConfigError(
            f"MEDIA_URL={url!r} is not supported; use s3://bucket or s3://bucket/prefix "
            "(bucket: 3-63 lowercase letters, digits, dots, hyphens), or leave it empty to "
            "keep media in MEDIA_ROOT"
        )
    return url


def _addressing_style(style: str) -> str:
    if style not in _ADDRESSING_STYLES:
        raise ConfigError(
            f"MEDIA_S3_ADDRESSING_STYLE={style!r} is not supported; use one of "
            + ", ".join(_ADDRESSING_STYLES)
        )
    return style


def _check_s3_credentials(settings: Settings) -> None:
    if bool(settings.media_s3_access_key_id) != bool(settings.media_s3_secret_access_key):
        raise ConfigError(
            "MEDIA_S3_ACCESS_KEY_ID and MEDIA_S3_SECRET_ACCESS_KEY must be set together; "
            "set both, or neither to use boto3's default credentials"
        )


def _task_db_url(url: str) -> str:
    """Validate ``SCHEDULER_TASK_DB_URL``: empty, or a PostgreSQL URL."""
    url = url.strip()
    if url and urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"SCHEDULER_TASK_DB_URL has the scheme {urlsplit(url).scheme!r}; use a PostgreSQL "
            "URL such as postgresql://user@127.0.0.1:5432/scheduler, or leave it empty to use "
            "the SQLite file of SCHEDULER_TASK_DB"
        )
    return url
