"""Fixtures for the scheduler: isolated settings, real Celery workers and a sample clip.

Every test gets its own queue names (from ``unique_prefix``), task store, media folder and
result database, so runs of other helpers on the same RabbitMQ never share a message.
Workers are started with the literal command ``celery -A tasks.celery_app worker`` from
inside ``scheduler/``, as users run them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kombu import Connection

from envconfig import repo_root
from scheduler import media
from scheduler.config import Settings, load_settings
from scheduler.producer import create_app
from scheduler.sqlite_broker import register as register_sqlite_broker
from tests.conftest import _unavailable, tcp_reachable
from tests.scheduler.producer_process import ProducerProcess
from tests.scheduler.s3_server import MotoServer

SCHEDULER_DIR = repo_root() / "scheduler"
WORKER_READY_TIMEOUT = 60.0
# Generous limits so only the rate-limit tests ever see a 429.
NO_RATE_LIMIT = "100000/second, burst 100000"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def scheduler_environ(tmp: Path, broker_url: str, prefix: str) -> dict[str, str]:
    """Return environment variables that give one test its own queues and files."""
    return {
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": f"db+sqlite:///{tmp / 'results.db'}",
        "SCHEDULER_STATE_DIR": str(tmp / "state"),
        "MEDIA_ROOT": str(tmp / "media"),
        "SCHEDULER_OUTBOX": str(tmp / "outbox"),
        "SCHEDULER_VIDEO_QUEUE": f"{prefix}-video",
        "SCHEDULER_IO_QUEUE": f"{prefix}-io",
        "SCHEDULER_DEAD_LETTER_QUEUE": f"{prefix}-dlq",
        "SCHEDULER_VIDEO_RATE_LIMIT": NO_RATE_LIMIT,
        "SCHEDULER_POST_RATE_LIMIT": NO_RATE_LIMIT,
        "SCHEDULER_DISPATCH_INTERVAL": "0.5",
        "SCHEDULER_PUBLISH_TIMEOUT": "2",
        "SMTP_URL": "",
    }


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-second 640x360 H.264/AAC clip generated with PyAV."""
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    media.generate_clip(path, seconds=3.0, width=640, height=360)
    return path


@pytest.fixture
def task_db_url(unique_prefix: str) -> Iterator[str]:
    """URL of a new PostgreSQL schema for one test's task store, dropped afterwards."""
    import psycopg

    parts = urlsplit(POSTGRES_URL)
    if not tcp_reachable(parts.hostname or "127.0.0.1", parts.port or 5432):
        _unavailable(f"PostgreSQL is not reachable at {parts.hostname}:{parts.port or 5432}")
    schema = unique_prefix.replace("-", "_")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """moto's S3 server on a free loopback port, shared by the session's tests."""
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def s3_media_env(s3_server: MotoServer, unique_prefix: str) -> dict[str, str]:
    """Variables that put the scheduler's media in a new bucket of the moto server."""
    bucket = unique_prefix.lower()
    s3_server.client().create_bucket(Bucket=bucket)
    return s3_server.environ(bucket)


@pytest.fixture
def rabbit_env(tmp_path: Path, rabbitmq_url: str, unique_prefix: str) -> Iterator[dict[str, str]]:
    """Scheduler environment on the real RabbitMQ; deletes the test's queues afterwards."""
    env = scheduler_environ(tmp_path, rabbitmq_url, unique_prefix)
    yield env
    delete_rabbit_entities(rabbitmq_url, unique_prefix)


@pytest.fixture
def embedded_env(tmp_path: Path, unique_prefix: str) -> dict[str, str]:
    """Scheduler environment on the embedded SQLite broker."""
    broker = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
    return scheduler_environ(tmp_path, broker, unique_prefix)


@pytest.fixture(params=["rabbitmq", "sqlite"])
def broker(request: pytest.FixtureRequest) -> str:
    """The broker of an end-to-end test: the real RabbitMQ, then the embedded SQLite broker."""
    return request.param


@pytest.fixture
def broker_env(broker: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Scheduler environment on ``broker``, so each end-to-end flow runs on both brokers."""
    return request.getfixturevalue("rabbit_env" if broker == "rabbitmq" else "embedded_env")


def delete_rabbit_entities(url: str, prefix: str) -> None:
    """Delete the queues and exchanges that one test declared."""
    with Connection(url, connect_timeout=5) as connection:
        for suffix in ("video", "io", "dlq"):
            name = f"{prefix}-{suffix}"
            for delete in (
                lambda ch, n=name: ch.queue_delete(n),
                lambda ch, n=name: ch.exchange_delete(n),
                lambda ch, n=name: ch.exchange_delete(f"{n}.exchange"),
            ):
                # A failed delete closes the channel, so each one gets a fresh channel.
                channel = connection.channel()
                try:
                    delete(channel)
                except Exception:  # noqa: BLE001 - the entity may not exist
                    pass
                finally:
                    channel.close()


def queue_depth(url: str, queue: str) -> int:
    """Return the number of ready messages in ``queue``."""
    register_sqlite_broker()  # for sqlite:// URLs; a no-op once registered
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        _, count, _ = channel.queue_declare(queue, passive=True)
        channel.close()
        return count


class WorkerProcess:
    """A Celery worker started with the documented command, in its own process group."""

    def __init__(self, env: dict[str, str], queues: list[str], name: str, pool: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self._ready = threading.Event()
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks.celery_app",
            "worker",
            "--loglevel=info",
            "-Q",
            ",".join(queues),
            "-P",
            pool,
            "-c",
            "1",
            "--hostname",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=SCHEDULER_DIR,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if " ready." in line:
                self._ready.set()

    def wait_ready(self, timeout: float = WORKER_READY_TIMEOUT) -> None:
        """Block until the worker logs that it is ready; fail with its log otherwise."""
        if not self._ready.wait(timeout):
            self.stop()
            raise AssertionError(f"worker {self.name} not ready:\n{self.log()}")

    def log(self) -> str:
        """Return everything the worker printed so far."""
        return "".join(self.lines)

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Stop the worker at the end of a test.

        Its task store and queues are thrown away, so a graceful shutdown would only cost
        seconds per test.
        """
        self.kill()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    """Return a function that starts a worker; every worker is stopped after the test."""
    workers: list[WorkerProcess] = []

    def start(
        env: dict[str, str],
        queues: list[str] | None = None,
        name: str = "worker",
        pool: str = "prefork",
        wait: bool = True,
    ) -> WorkerProcess:
        names = queues or [env["SCHEDULER_VIDEO_QUEUE"], env["SCHEDULER_IO_QUEUE"]]
        # Node names are global on the broker (each worker declares an exclusive
        # "<name>.celery.pidbox" queue), so they must be unique across concurrent test runs.
        unique = f"{name}-{len(workers)}-{uuid.uuid4().hex[:8]}"
        worker = WorkerProcess(env, names, unique, pool)
        workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def start_producer() -> Iterator[Callable[..., ProducerProcess]]:
    """Return a function that starts ``python app.py`` on a free port; all stop after the test."""
    producers: list[ProducerProcess] = []

    def start(env: dict[str, str], name: str = "producer", wait: bool = True) -> ProducerProcess:
        producer = ProducerProcess(env, f"{name}-{len(producers)}")
        producers.append(producer)
        if wait:
            producer.wait_ready()
        return producer

    yield start
    for producer in producers:
        producer.stop()


def make_client(env: dict[str, str]):  # noqa: ANN201 - FlaskClient
    """Return ``(settings, app, test client)`` for a producer configured by ``env``."""
    settings: Settings = load_settings(environ=env)
    app = create_app(settings)
    return settings, app, app.test_client()


def wait_for_state(client, task_id: str, states: set[str], timeout: float = 60.0) -> dict:  # noqa: ANN001
    """Poll ``GET /tasks/<id>`` until the state is one of ``states``; return the task JSON."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = client.get(f"/tasks/{task_id}").get_json()
        if body.get("state") in states:
            return body
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not reach {states} in {timeout} s: {body}")


def upload(client, path: Path, **fields: str):  # noqa: ANN001, ANN201
    """POST ``path`` to ``/process-video`` with optional form fields."""
    with path.open("rb") as handle:
        data = {"file": (handle, path.name), **fields}
        return client.post("/process-video", data=data, content_type="multipart/form-data")
