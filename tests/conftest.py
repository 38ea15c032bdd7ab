"""Fixtures shared by every test: access to the real Redis, RabbitMQ, PostgreSQL and Chromium.

A test that needs one of these components skips with the reason printed when the component
is unreachable. With ``REQUIRE_SERVICES=1`` (set by ``.ci/run``) it fails instead, so CI
cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid

import pytest

REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))
RABBITMQ_HOST = os.environ.get("TEST_RABBITMQ_HOST", "127.0.0.1")
RABBITMQ_PORT = int(os.environ.get("TEST_RABBITMQ_PORT", "5672"))
CHROMIUM_PATH = os.environ.get("TEST_CHROMIUM_PATH", "/usr/bin/chromium")
POSTGRES_HOST = os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("TEST_POSTGRES_PORT", "5432"))
POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"
)


def services_required() -> bool:
    """Return whether missing services must fail tests instead of skipping them."""
    return os.environ.get("REQUIRE_SERVICES", "") == "1"


def _unavailable(reason: str) -> None:
    if services_required():
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1, so this is a failure, not a skip)")
    pytest.skip(reason)


def tcp_reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    """Return whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis server; skips or fails when it is unreachable."""
    if not tcp_reachable(REDIS_HOST, REDIS_PORT):
        _unavailable(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """AMQP URL of the real RabbitMQ server; skips or fails when it is unreachable."""
    if not tcp_reachable(RABBITMQ_HOST, RABBITMQ_PORT):
        _unavailable(f"RabbitMQ is not reachable at {RABBITMQ_HOST}:{RABBITMQ_PORT}")
    return f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}//"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the real PostgreSQL database ``test``; skips or fails when it is unreachable.

    Tests isolate themselves with a schema or table names derived from ``unique_prefix``.
    """
    if not tcp_reachable(POSTGRES_HOST, POSTGRES_PORT):
        _unavailable(f"PostgreSQL is not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of the Chromium binary; skips or fails when it is not installed."""
    if not (os.path.exists(CHROMIUM_PATH) or shutil.which(CHROMIUM_PATH)):
        _unavailable(f"Chromium is not installed at {CHROMIUM_PATH} (apt-get install chromium)")
    return CHROMIUM_PATH


@pytest.fixture
def unique_prefix() -> str:
    """A key or queue-name prefix unique to one test, so parallel runs never share state."""
    return f"test-{uuid.uuid4().hex[:12]}"
