"""Celery workers on the SQLite transport: SIGKILL recovery, ETA tasks, revoke and inspect.

Workers are real ``celery worker`` processes that import this module as their app, configured
through environment variables. Tasks record their progress in a log file per task name, and a
task waits until the test creates its release file, so a test decides when it ends.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery

from scheduler.sqlite_broker import register
from scheduler.sqlite_broker.store import MIN_QUEUE_EXPIRES, Store

REPO_ROOT = Path(__file__).resolve().parents[2]
LEASE = 1.0
TASK_NAME = "sqlite_broker_test.mark"
HOST = socket.gethostname()


def make_app(broker_url: str, workdir: Path) -> Celery:
    """Create the Celery app used by the test process and by the worker processes."""
    register()
    app = Celery("sqlite_broker_test", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": LEASE, "polling_interval": 0.02},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
    )

    @app.task(name=TASK_NAME)
    def mark(name: str) -> str:
        log = workdir / f"{name}.log"
        with log.open("a") as out:
            out.write(f"start {os.getpid()}\n")
        release = workdir / f"{name}.release"
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with log.open("a") as out:
            out.write(f"done {os.getpid()}\n")
        return name

    return app


# The app that `celery -A tests.scheduler.test_sqlite_broker_celery worker` loads.
if "SQLITE_BROKER_TEST_URL" in os.environ:
    app = make_app(os.environ["SQLITE_BROKER_TEST_URL"], Path(os.environ["SQLITE_BROKER_TEST_DIR"]))


class Cluster:
    """Starts workers on one broker file and reads what their tasks recorded."""

    def __init__(self, tmp_path: Path):
        self.workdir = tmp_path
        self.url = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
        self.app = make_app(self.url, tmp_path)
        self.queue = f"q-{uuid.uuid4().hex[:8]}"
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_worker(self, name: str, pool: str = "solo") -> subprocess.Popen[bytes]:
        env = dict(
            os.environ,
            SQLITE_BROKER_TEST_URL=self.url,
            SQLITE_BROKER_TEST_DIR=str(self.workdir),
        )
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.scheduler.test_sqlite_broker_celery",
            "worker",
            "-P",
            pool,
            "-c",
            "1",
            "-n",
            f"{name}@%h",
            "-Q",
            self.queue,
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ]
        with (self.workdir / f"{name}.worker.log").open("ab") as log:
            worker = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log, start_new_session=True
            )
        self.workers.append(worker)
        return worker

    def send(self, name: str, **options: object) -> str:
        result = self.app.send_task(TASK_NAME, args=[name], queue=self.queue, **options)
        return result.id

    def release(self, name: str) -> None:
        (self.workdir / f"{name}.release").touch()

    def events(self, name: str) -> list[str]:
        log = self.workdir / f"{name}.log"
        return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []

    def wait_ready(self, *names: str, timeout: float = 60) -> None:
        wanted = {f"{name}@{HOST}" for name in names}
        wait_for(
            lambda: wanted <= set(self.app.control.inspect(timeout=0.5).ping() or {}),
            timeout,
            f"workers {sorted(wanted)} did not answer ping; logs in {self.workdir}",
        )

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(5)
        self.app.close()


def wait_for(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    yield cluster
    cluster.stop_all()


@pytest.mark.slow
def test_sigkill_mid_task_reruns(cluster: Cluster) -> None:
    """20 trials in two chains: kill the worker running a task, the next worker completes it."""
    chains = 2
    rounds = 10
    workers = [cluster.start_worker(f"victim-{chain}-0") for chain in range(chains)]
    for round_ in range(rounds):
        names = [f"kill-{chain}-{round_}" for chain in range(chains)]
        for name in names:
            cluster.send(name)
        for name in names:
            wait_for(
                lambda name=name: "start" in cluster.events(name),
                60,
                f"{name} never started; logs in {cluster.workdir}",
            )
        for worker in workers:
            cluster.kill(worker)
        for name in names:
            cluster.release(name)
        workers = [cluster.start_worker(f"victim-{chain}-{round_ + 1}") for chain in range(chains)]
        for name in names:
            wait_for(
                lambda name=name: "done" in cluster.events(name),
                60,
                f"{name} was lost after SIGKILL; logs in {cluster.workdir}",
            )

    for chain in range(chains):
        for round_ in range(rounds):
            events = cluster.events(f"kill-{chain}-{round_}")
            assert events.count("start") == 2
            assert events.count("done") == 1


@pytest.mark.slow
def test_eta_longer_than_lease_runs_once(cluster: Cluster) -> None:
    cluster.start_worker("eta-a")
    cluster.start_worker("eta-b")
    cluster.wait_ready("eta-a", "eta-b")
    cluster.release("eta")
    cluster.send("eta", countdown=4 * LEASE)
    wait_for(lambda: "done" in cluster.events("eta"), 30, "the ETA task never ran")
    time.sleep(2 * LEASE)
    assert cluster.events("eta") == ["start", "done"]


@pytest.mark.slow
def test_revoke_and_inspect(cluster: Cluster) -> None:
    cluster.start_worker("control", pool="prefork")
    cluster.wait_ready("control")

    running_id = cluster.send("running")
    queued_id = cluster.send("queued")
    wait_for(lambda: "start" in cluster.events("running"), 30, "the first task never started")

    inspect = cluster.app.control.inspect(timeout=1)
    assert inspect.ping() == {f"control@{HOST}": {"ok": "pong"}}
    active = inspect.active() or {}
    assert [task["id"] for task in active.get(f"control@{HOST}", [])] == [running_id]

    cluster.app.control.revoke(queued_id)
    cluster.app.control.revoke(running_id, terminate=True)
    wait_for(
        lambda: (
            not (cluster.app.control.inspect(timeout=0.5).active() or {}).get(
                f"control@{HOST}", [None]
            )
        ),
        30,
        "the running task was not terminated",
    )
    cluster.release("running")
    cluster.release("queued")
    time.sleep(3 * LEASE)

    assert cluster.events("running") == ["start"]
    assert cluster.events("queued") == []
    revoked = cluster.app.control.inspect(timeout=1).revoked() or {}
    assert set(revoked.get(f"control@{HOST}", [])) == {running_id, queued_id}


@pytest.mark.slow
def test_inspect_ping_cli(cluster: Cluster) -> None:
    cluster.start_worker("cli")
    cluster.wait_ready("cli")
    env = dict(
        os.environ, SQLITE_BROKER_TEST_URL=cluster.url, SQLITE_BROKER_TEST_DIR=str(cluster.workdir)
    )
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.scheduler.test_sqlite_broker_celery",
        "inspect",
        "ping",
        "--timeout",
        "20",
        "--destination",
        f"cli@{HOST}",
    ]
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert "pong" in result.stdout
    # The command returns once the one destination has replied, well before its timeout.
    assert elapsed < 10


def reply_queue_rows(db_path: Path) -> tuple[int, int]:
    """Return the count of remote-control reply queues and of the messages in them."""
    pattern = "%.reply.celery.pidbox"
    with sqlite3.connect(db_path) as conn:
        queues = conn.execute("SELECT count(*) FROM queues WHERE name LIKE ?", (pattern,))
        messages = conn.execute("SELECT count(*) FROM messages WHERE queue LIKE ?", (pattern,))
        return queues.fetchone()[0], messages.fetchone()[0]


@pytest.mark.slow
def test_reply_queue_deleted_after_ping(cluster: Cluster) -> None:
    cluster.start_worker("replies")
    cluster.wait_ready("replies")
    # A timeout this short ends the call before the reply comes, and the reply is dropped.
    cluster.app.control.inspect(timeout=0.001).ping()
    time.sleep(1)
    assert reply_queue_rows(cluster.workdir / "broker.sqlite3") == (0, 0)


@pytest.mark.slow
def test_abandoned_reply_queue_expires(cluster: Cluster) -> None:
    cluster.start_worker("abandoned")
    cluster.wait_ready("abandoned")
    db_path = cluster.workdir / "broker.sqlite3"
    # A client that stops before it collects its replies, as a killed Flower does.
    with cluster.app.connection_for_write() as conn:
        mailbox = cluster.app.control.mailbox(conn)
        channel = conn.default_channel
        mailbox.reply_queue(channel).declare()
        mailbox._publish("ping", {}, reply_ticket=uuid.uuid4().hex, channel=channel)
        wait_for(lambda: reply_queue_rows(db_path)[1] == 1, 10, "the worker did not reply")

    store = Store(db_path)
    store.maintain(fanout_ttl=60, now=time.time() + MIN_QUEUE_EXPIRES + 5)
    store.close()

    assert reply_queue_rows(db_path) == (0, 0)
