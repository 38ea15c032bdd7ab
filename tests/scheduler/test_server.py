"""The producer's HTTP server as users start it, ``python app.py``, on the real RabbitMQ."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import REDIS_HOST, REDIS_PORT
from tests.scheduler.conftest import SCHEDULER_DIR

EMAIL = {"recipients": ["ann@example.com"], "subject": "Hi", "body": "Text"}
CLIENTS = 25
REQUESTS = 100
CAPACITY = 10
# One token an hour: over the few seconds of a test, refill adds nothing.
SHARED_POLICY = f"1/hour, burst {CAPACITY}"


def _post(base_url: str) -> int:
    return httpx.post(f"{base_url}/send-emails", json=EMAIL, timeout=30).status_code


def _worker_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", log)]


@pytest.fixture
def redis_env(redis_url: str, rabbit_env: dict[str, str], unique_prefix: str) -> dict[str, str]:
    """Scheduler environment with rate-limit buckets in the real Redis, under a fresh prefix."""
    return {
        **rabbit_env,
        "RATELIMIT_STORAGE_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
        "SCHEDULER_RATE_LIMIT_KEY_PREFIX": f"{unique_prefix}:ratelimit",
    }


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /tasks/" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"X-Filler: y\r\n" * 200 + b"\r\n", 431),
        (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
    ids=["long-request-line", "too-many-headers", "malformed-request-line"],
)
def test_server_rejection_json(
    rabbit_env: dict[str, str], start_producer, request_head: bytes, status: int
) -> None:
    # gunicorn rejects these before Flask receives them; the body must still be JSON.
    producer = start_producer(rabbit_env)
    host, port = producer.base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(request_head)
        response = b""
        while chunk := client.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == str(status).encode(), response
    assert b"Content-Type: application/json" in head
    assert "error" in json.loads(body)


@pytest.mark.parametrize("processes", [1, 2])
def test_server_concurrent_posts(redis_env: dict[str, str], start_producer, processes: int) -> None:
    producer = start_producer({**redis_env, "SCHEDULER_PROCESSES": str(processes)})

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        statuses = list(pool.map(_post, [producer.base_url] * REQUESTS))

    assert statuses == [202] * REQUESTS, producer.log()
    assert len(_worker_pids(producer.log())) == processes


def test_server_posts_while_streaming(rabbit_env: dict[str, str], start_producer) -> None:
    producer = start_producer({**rabbit_env, "SCHEDULER_THREADS": "4"})
    opened = threading.Event()
    stop = threading.Event()

    def stream() -> None:
        with httpx.stream("GET", f"{producer.base_url}/tasks/stream", timeout=30) as response:
            for _ in response.iter_lines():
                opened.set()
                if stop.is_set():
                    return

    # Three open streams hold three of the four threads; keep-alive connections hold none.
    readers = [threading.Thread(target=stream, daemon=True) for _ in range(3)]
    for reader in readers:
        reader.start()
    assert opened.wait(10), producer.log()

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(_post, [producer.base_url] * 20))
    stop.set()

    assert statuses == [202] * 20, producer.log()


def test_processes_share_rate_limit(redis_env: dict[str, str], start_producer) -> None:
    env = {**redis_env, "SCHEDULER_PROCESSES": "3", "SCHEDULER_POST_RATE_LIMIT": SHARED_POLICY}
    producer = start_producer(env)

    # Each request opens its own connection, which any of the three processes may accept.
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(_post, [producer.base_url] * 40))

    assert set(statuses) <= {202, 429}, producer.log()
    assert statuses.count(202) == CAPACITY


def test_processes_need_shared_storage(rabbit_env: dict[str, str]) -> None:
    env = {**os.environ, **rabbit_env, "SCHEDULER_PROCESSES": "2", "SCHEDULER_PORT": "0"}
    env["RATELIMIT_STORAGE_URL"] = "memory://"

    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=SCHEDULER_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "RATELIMIT_STORAGE_URL" in result.stderr


def test_server_replaces_killed_worker(redis_env: dict[str, str], start_producer) -> None:
    producer = start_producer({**redis_env, "SCHEDULER_PROCESSES": "2"})
    first = _worker_pids(producer.log())

    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while len(_worker_pids(producer.log())) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(_post, [producer.base_url] * 20))

    assert len(_worker_pids(producer.log())) == 3, producer.log()
    assert statuses == [202] * 20, producer.log()
