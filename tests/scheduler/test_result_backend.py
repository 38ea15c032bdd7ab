"""The SQLAlchemy result backend with a process-local engine cache, on a real SQLite file."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from pathlib import Path

import pytest
from celery import Celery
from celery.app.task import Context
from sqlalchemy import event

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


@pytest.fixture(params=["sqlite", "postgresql"])
def extended_backend(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseBackend:
    """A backend with ``result_extended`` on, on SQLite and on a new PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"db+sqlite:///{tmp_path / 'results.db'}"
    else:
        task_db_url = request.getfixturevalue("task_db_url")
        url = "db+" + task_db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    app = Celery("result-backend-test", set_as_current=False)
    app.conf.result_backend = backend_url(url)
    app.conf.result_extended = True
    return app.backend


def _request(task_id: str) -> Context:
    return Context(
        id=task_id,
        task="scheduler.send_emails",
        args=[],
        kwargs={"recipients": ["ann@example.com"]},
        hostname="w1@host",
        retries=0,
        delivery_info={"routing_key": "io"},
    )


def _statements(backend: DatabaseBackend) -> list[str]:
    """Return a list that collects the first keyword of each statement the engine runs."""
    engine = backend.session_manager.get_engine(backend.url, **backend.engine_options)
    statements: list[str] = []
    event.listen(
        engine, "before_cursor_execute", lambda *args: statements.append(args[2].split()[0])
    )
    return statements


def test_store_result_one_statement(extended_backend: DatabaseBackend) -> None:
    # The first store creates the tables.
    extended_backend.store_result(str(uuid.uuid4()), {"n": 0}, "SUCCESS")
    statements = _statements(extended_backend)
    task_id = str(uuid.uuid4())
    extended_backend.store_result(task_id, {"n": 1}, "SUCCESS", request=_request(task_id))
    assert statements == ["INSERT"]


def test_store_result_extended_fields(extended_backend: DatabaseBackend) -> None:
    task_id = str(uuid.uuid4())
    extended_backend.store_result(task_id, {"n": 1}, "SUCCESS", request=_request(task_id))
    meta = extended_backend.get_task_meta(task_id)
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == {"n": 1}
    assert meta["name"] == "scheduler.send_emails"
    assert meta["kwargs"] == {"recipients": ["ann@example.com"]}
    assert meta["worker"] == "w1@host"
    assert meta["queue"] == "io"
    assert meta["date_done"] is not None


@pytest.mark.parametrize(
    ("writes", "status", "result"),
    [
        ([("STARTED", None), ("SUCCESS", {"n": 1})], "SUCCESS", {"n": 1}),
        ([("SUCCESS", {"n": 1}), ("SUCCESS", {"n": 2})], "SUCCESS", {"n": 1}),
        ([("SUCCESS", {"n": 1}), ("FAILURE", ValueError("late"))], "SUCCESS", {"n": 1}),
        ([("FAILURE", ValueError("first")), ("SUCCESS", {"n": 2})], "SUCCESS", {"n": 2}),
    ],
)
def test_store_result_success_final(
    extended_backend: DatabaseBackend,
    writes: list[tuple[str, object]],
    status: str,
    result: object,
) -> None:
    task_id = str(uuid.uuid4())
    for state, value in writes:
        extended_backend.store_result(task_id, value, state, request=_request(task_id))
    meta = extended_backend.get_task_meta(task_id)
    assert meta["status"] == status
    assert meta["result"] == result
