"""The SQLAlchemy result backend with a process-local engine cache, on a real SQLite file."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from pathlib import Path

import pytest
from celery import Celery

from scheduler.result_backend import DatabaseBackend, backend_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "db+sqlite:///var/results.db",
            "scheduler.result_backend:DatabaseBackend+sqlite:///var/results.db",
        ),
        (
            "db+postgresql://user@db/results",
            "scheduler.result_backend:DatabaseBackend+postgresql://user@db/results",
        ),
        ("redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/1"),
        ("rpc://", "rpc://"),
    ],
)
def test_backend_url(url: str, expected: str) -> None:
    assert backend_url(url) == expected


@pytest.fixture
def backend(tmp_path: Path) -> DatabaseBackend:
    app = Celery("result-backend-test", set_as_current=False)
    app.conf.result_backend = backend_url(f"db+sqlite:///{tmp_path / 'results.db'}")
    assert isinstance(app.backend, DatabaseBackend)
    return app.backend


def _store_and_report(backend: DatabaseBackend, task_id: str, queue) -> None:  # noqa: ANN001
    backend.store_result(task_id, {"from": "child"}, "SUCCESS")
    queue.put(backend.session_manager._owner_pid)


def test_engine_reused_across_calls_and_threads(backend: DatabaseBackend) -> None:
    backend.store_result(str(uuid.uuid4()), {"n": 1}, "SUCCESS")
    engines = list(backend.session_manager._engines.values())
    thread = threading.Thread(
        target=backend.store_result, args=(str(uuid.uuid4()), {"n": 2}, "SUCCESS")
    )
    thread.start()
    thread.join()
    assert len(engines) == 1
    assert list(backend.session_manager._engines.values()) == engines


def test_forked_child_uses_own_engine(backend: DatabaseBackend) -> None:
    backend.store_result(str(uuid.uuid4()), {"n": 1}, "SUCCESS")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    task_id = str(uuid.uuid4())
    child = context.Process(target=_store_and_report, args=(backend, task_id, queue))
    child.start()
    child_owner = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert child_owner == child.pid
    assert backend.get_task_meta(task_id)["result"] == {"from": "child"}
