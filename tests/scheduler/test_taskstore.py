"""The SQLite task store: states, idempotency keys, cancellation and the change counter."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from scheduler.taskstore import IDEMPOTENCY_TTL, IdempotencyConflict, TaskStore


@pytest.fixture
def store(tmp_path: Path) -> TaskStore:
    return TaskStore(tmp_path / "tasks.db")


def new_id() -> str:
    return str(uuid.uuid4())


def queued(store: TaskStore, kind: str = "send-emails", key: str | None = None) -> str:
    task_id = new_id()
    store.insert(task_id, kind, {}, idempotency_key=key)
    store.confirm_queued(task_id)
    return task_id


def test_submitting_task_hidden(store: TaskStore) -> None:
    task_id = new_id()
    store.insert(task_id, "send-emails", {})
    assert store.get(task_id) is None
    assert store.page(1, 10)[1] == 0


def test_confirm_makes_queued(store: TaskStore) -> None:
    assert store.get(queued(store)).state == "queued"


def test_idempotency_same_kind(store: TaskStore) -> None:
    first = queued(store, key="k")
    record, created = store.insert(new_id(), "send-emails", {}, idempotency_key="k")
    assert created is False
    assert record.id == first


def test_idempotency_other_kind(store: TaskStore) -> None:
    queued(store, key="k")
    with pytest.raises(IdempotencyConflict):
        store.insert(new_id(), "generate-report", {}, idempotency_key="k")


def test_idempotency_expires(store: TaskStore) -> None:
    old = queued(store, key="k")
    store._write(
        "UPDATE tasks SET created_at = ? WHERE id = ?", (time.time() - IDEMPOTENCY_TTL - 1, old)
    )
    record, created = store.insert(new_id(), "send-emails", {}, idempotency_key="k")
    assert created is True
    assert record.id != old


@pytest.mark.parametrize(
    ("setup", "state", "cancel_requested"),
    [("queued", "cancelled", False), ("started", "started", True)],
)
def test_request_cancel(store: TaskStore, setup: str, state: str, cancel_requested: bool) -> None:
    task_id = queued(store)
    if setup == "started":
        store.start(task_id, "w@host")
    record = store.request_cancel(task_id)
    assert record.state == state
    assert record.cancel_requested is cancel_requested


def test_start_refuses_cancelled(store: TaskStore) -> None:
    task_id = queued(store)
    store.request_cancel(task_id)
    assert store.start(task_id, "w@host") is None


def test_start_refuses_finished(store: TaskStore) -> None:
    task_id = queued(store)
    store.start(task_id, "w@host")
    store.finish(task_id, "succeeded", message="done", result={"files": []})
    assert store.start(task_id, "w@host") is None


def test_start_counts_deliveries(store: TaskStore) -> None:
    task_id = queued(store)
    store.start(task_id, "a@host")
    assert store.start(task_id, "b@host").deliveries == 2


def test_progress_reports_cancel(store: TaskStore) -> None:
    task_id = queued(store)
    store.start(task_id, "w@host")
    assert store.progress(task_id, 10, "x") is True
    store.request_cancel(task_id)
    assert store.progress(task_id, 20, "y") is False


def test_finish_keeps_first_outcome(store: TaskStore) -> None:
    task_id = queued(store)
    store.finish(task_id, "cancelled", message="cancelled")
    store.finish(task_id, "failed", message="failed", error="late")
    assert store.get(task_id).state == "cancelled"


def test_changed_since_orders_by_seq(store: TaskStore) -> None:
    first = queued(store)
    mark = store.last_seq()
    second = queued(store)
    store.progress(first, 1, "")
    store.start(first, "w@host")
    changed = [r.id for r in store.changed_since(mark)]
    assert changed == [second, first]


def test_claim_due_once(store: TaskStore) -> None:
    task_id = new_id()
    store.insert(task_id, "send-emails", {}, run_at=time.time() - 1)
    assert [r.id for r in store.claim_due(time.time())] == [task_id]
    assert store.claim_due(time.time()) == []


def test_claim_due_skips_cancelled(store: TaskStore) -> None:
    task_id = new_id()
    store.insert(task_id, "send-emails", {}, run_at=time.time() - 1)
    store.request_cancel(task_id)
    assert store.claim_due(time.time()) == []
