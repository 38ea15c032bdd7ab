"""The task store on PostgreSQL: the SQLite store's behaviour, with concurrent writers."""

from __future__ import annotations

import gc
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from envconfig import ConfigError
from scheduler.config import load_settings
from scheduler.pgtaskstore import PostgresTaskStore, open_task_store
from scheduler.taskstore import (
    CANCELLED,
    QUEUED,
    SUCCEEDED,
    IdempotencyConflict,
    TaskStore,
)

WRITERS = 8
TASKS_PER_WRITER = 25


@pytest.fixture
def store(task_db_url: str) -> PostgresTaskStore:
    return PostgresTaskStore(task_db_url)


def _id(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


@pytest.mark.parametrize(("postgres", "kind"), [(False, TaskStore), (True, PostgresTaskStore)])
def test_settings_select_store(
    tmp_path: Path, task_db_url: str, postgres: bool, kind: type
) -> None:
    variables = {"SCHEDULER_TASK_DB_URL": task_db_url} if postgres else {}
    settings = load_settings(environ={"SCHEDULER_STATE_DIR": str(tmp_path), **variables})
    assert type(open_task_store(settings)) is kind


def test_settings_reject_sqlite_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(
            environ={"SCHEDULER_STATE_DIR": str(tmp_path), "SCHEDULER_TASK_DB_URL": "sqlite:///x"}
        )


def test_url_password_hidden(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "SCHEDULER_STATE_DIR": str(tmp_path),
            "SCHEDULER_TASK_DB_URL": "postgresql://u:hunter2@h/db",
        }
    )
    assert "hunter2" not in repr(settings)


def test_insert_and_get(store: PostgresTaskStore) -> None:
    record, created = store.insert(_id(1), "send-emails", {"recipients": ["a@example.com"]})
    assert created is True
    assert store.get(_id(1)) is None  # still submitting
    store.confirm_queued(_id(1))
    fetched = store.get(_id(1))
    assert fetched.state == QUEUED
    assert fetched.params == {"recipients": ["a@example.com"]}
    assert abs(fetched.created_at - time.time()) < 5


def test_idempotency_key(store: PostgresTaskStore) -> None:
    first, _ = store.insert(_id(2), "generate-report", {}, idempotency_key="k1")
    again, created = store.insert(_id(3), "generate-report", {}, idempotency_key="k1")
    assert created is False
    assert again.id == first.id
    with pytest.raises(IdempotencyConflict):
        store.insert(_id(4), "send-emails", {}, idempotency_key="k1")


def test_lifecycle(store: PostgresTaskStore) -> None:
    store.insert(_id(5), "process-video", {})
    store.confirm_queued(_id(5))
    started = store.start(_id(5), "w1@host")
    assert started.deliveries == 1
    assert store.progress(_id(5), 50.0, "half") is True
    store.finish(_id(5), SUCCEEDED, message="done", result={"files": []})
    finished = store.get(_id(5))
    assert finished.state == SUCCEEDED
    assert finished.percent == 100
    assert finished.result == {"files": []}
    assert store.start(_id(5), "w2@host") is None


def test_cancel_running(store: PostgresTaskStore) -> None:
    store.insert(_id(6), "process-video", {})
    store.confirm_queued(_id(6))
    store.start(_id(6), "w1@host")
    store.request_cancel(_id(6))
    assert store.progress(_id(6), 10.0, "x") is False
    assert store.cancel_requested(_id(6)) is True


def test_cancel_queued(store: PostgresTaskStore) -> None:
    store.insert(_id(7), "process-video", {})
    store.confirm_queued(_id(7))
    assert store.request_cancel(_id(7)).state == CANCELLED


def test_claim_due_once(store: PostgresTaskStore) -> None:
    store.insert(_id(8), "send-emails", {}, run_at=time.time() - 1)
    assert [r.id for r in store.claim_due(time.time())] == [_id(8)]
    assert store.claim_due(time.time()) == []


def test_page_and_between(store: PostgresTaskStore) -> None:
    for number in range(10, 13):
        store.insert(_id(number), "send-emails", {})
        store.confirm_queued(_id(number))
    records, total = store.page(1, 2)
    assert total == 3
    assert len(records) == 2
    assert len(store.between(None, None)) == 3


def test_concurrent_writers_unique_seq(task_db_url: str) -> None:
    store = PostgresTaskStore(task_db_url)

    def write(writer: int) -> None:
        for index in range(TASKS_PER_WRITER):
            task_id = _id(1000 * (writer + 1) + index)
            store.insert(task_id, "send-emails", {})
            store.confirm_queued(task_id)

    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        list(pool.map(write, range(WRITERS)))

    changes = store.changed_since(0, limit=10_000)
    seqs = [record.seq for record in changes]
    assert len(changes) == WRITERS * TASKS_PER_WRITER
    assert len(set(seqs)) == len(seqs)
    assert store.last_seq() == max(seqs)


def test_two_stores_share_rows(task_db_url: str) -> None:
    producer, worker = PostgresTaskStore(task_db_url), PostgresTaskStore(task_db_url)
    producer.insert(_id(20), "send-emails", {})
    producer.confirm_queued(_id(20))
    worker.start(_id(20), "w1@host")
    assert producer.get(_id(20)).worker == "w1@host"


def test_fork_keeps_parent_session(store: PostgresTaskStore) -> None:
    store.insert(_id(30), "send-emails", {})
    store.confirm_queued(_id(30))
    pid = os.fork()
    if pid == 0:
        # The child writes through its own connection, then drops everything it inherited.
        code = 0 if store.start(_id(30), "child@host") is not None else 1
        gc.collect()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get(_id(30)).worker == "child@host"
