"""The task store: one SQLite row per accepted task, shared by the producer and the workers.

The producer inserts a row before it publishes, so ``GET /tasks/<id>`` never has to guess
whether an id exists. Workers move the row through the states and write progress, results and
errors. Every write bumps ``seq``, a store-wide counter, so the event stream can ask for
"everything changed since N" without comparing clocks across processes.

Connections are pooled per process (SQLite connections must not cross a fork). WAL mode
lets readers run while a worker writes.

WAL needs every process on one host, so producers and workers on several machines use
:class:`scheduler.pgtaskstore.PostgresTaskStore` (``SCHEDULER_TASK_DB_URL``) instead.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The producer's private state between insert and a confirmed publish; never shown by the API.
SUBMITTING = "submitting"
QUEUED = "queued"
STARTED = "started"
PROGRESS = "progress"
RETRYING = "retrying"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})
RUNNING_STATES = frozenset({STARTED, PROGRESS})
IDEMPOTENCY_TTL = 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    percent REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    run_at REAL,
    dispatched INTEGER NOT NULL DEFAULT 1,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    idempotency_key TEXT UNIQUE,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at);
CREATE INDEX IF NOT EXISTS tasks_seq ON tasks (seq);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (dispatched, run_at);
"""

_NEXT_SEQ = "(SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks)"
_INSERT = (
    "INSERT INTO tasks (id, kind, state, params, created_at, updated_at, run_at, dispatched,"
    f" idempotency_key, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {_NEXT_SEQ})"
)


def isoformat(timestamp: float | None) -> str | None:
    """Format a Unix timestamp as ISO 8601 in UTC, or return ``None``."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class TaskRecord:
    """One task as stored."""

    id: str
    kind: str
    state: str
    percent: float
    message: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    run_at: float | None = None
    cancel_requested: bool = False
    deliveries: int = 0
    worker: str | None = None
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return the public JSON form used by every HTTP route and the event stream."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "percent": round(self.percent, 1),
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "started_at": isoformat(self.started_at),
            "finished_at": isoformat(self.finished_at),
            "run_at": isoformat(self.run_at),
        }


class IdempotencyConflict(Exception):
    """The idempotency key belongs to a task of another kind."""

    def __init__(self, key: str, existing: TaskRecord) -> None:
        super().__init__(key)
        self.key = key
        self.existing = existing


def _record(row: sqlite3.Row) -> TaskRecord:
    return TaskRecord(
        id=row["id"],
        kind=row["kind"],
        state=row["state"],
        percent=row["percent"],
        message=row["message"],
        params=json.loads(row["params"]),
        result=json.loads(row["result"]) if row["result"] else None,
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        run_at=row["run_at"],
        cancel_requested=bool(row["cancel_requested"]),
        deliveries=row["deliveries"],
        worker=row["worker"],
        seq=row["seq"],
    )


class TaskStore:
    """Access to the tasks table; safe to share between threads and across ``fork``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._pool_pid = os.getpid()
        # SQLite allows one writer at a time, and a writer that finds the database locked
        # sleeps in steps of up to 100 ms. Queueing this process's writers on a lock first
        # keeps threads of one process from ever hitting that back-off among themselves.
        self._write_lock = threading.Lock()
        with self._connection() as conn:
            conn.executescript(_SCHEMA)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """Lend a pooled connection to one thread for one operation.

        Threads of the HTTP server come and go with each request, so a connection per thread
        would be opened (and its pragmas run) on every request. A forked child gets a fresh
        pool, because SQLite connections must not cross a fork.
        """
        if self._pool_pid != os.getpid():
            self._pool = queue.LifoQueue()
            self._write_lock = threading.Lock()
            self._pool_pid = os.getpid()
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self._open()
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._pool.put(conn)

    def _write(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        with self._connection() as conn, self._write_lock:
            return conn.execute(sql, params).fetchall()

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    # Producer side.

    def insert(
        self,
        task_id: str,
        kind: str,
        params: dict[str, Any],
        *,
        run_at: float | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[TaskRecord, bool]:
        """Insert a task in the ``submitting`` state (or ``queued`` when ``run_at`` is set).

        :return: the record and ``True``, or, when ``idempotency_key`` was used for the same
            kind within the last 24 hours, the original record and ``False``.
        :raises IdempotencyConflict: when the key belongs to a task of another kind.
        """
        now = time.time()
        if idempotency_key is None:
            # No key to look up: one INSERT, which is its own transaction.
            record = self._new_record(task_id, kind, params, now, run_at)
            rows = self._write(_INSERT + " RETURNING seq", self._insert_values(record, None))
            return replace(record, seq=rows[0][0]), True
        with self._connection() as conn, self._write_lock:
            return self._insert_keyed(conn, now, task_id, kind, params, run_at, idempotency_key)

    @staticmethod
    def _new_record(
        task_id: str, kind: str, params: dict[str, Any], now: float, run_at: float | None
    ) -> TaskRecord:
        return TaskRecord(
            id=task_id,
            kind=kind,
            state=QUEUED if run_at is not None else SUBMITTING,
            percent=0.0,
            message="",
            params=params,
            result=None,
            error=None,
            created_at=now,
            updated_at=now,
            run_at=run_at,
        )

    @staticmethod
    def _insert_values(record: TaskRecord, idempotency_key: str | None) -> tuple[Any, ...]:
        return (
            record.id,
            record.kind,
            record.state,
            json.dumps(record.params, allow_nan=False),
            record.created_at,
            record.updated_at,
            record.run_at,
            0 if record.run_at is not None else 1,
            idempotency_key,
        )

    def _insert_keyed(
        self,
        conn: sqlite3.Connection,
        now: float,
        task_id: str,
        kind: str,
        params: dict[str, Any],
        run_at: float | None,
        idempotency_key: str,
    ) -> tuple[TaskRecord, bool]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT * FROM tasks WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
            if row is not None and row["created_at"] > now - IDEMPOTENCY_TTL:
                conn.execute("COMMIT")
                existing = _record(row)
                if existing.kind != kind:
                    raise IdempotencyConflict(idempotency_key, existing)
                return existing, False
            if row is not None:
                conn.execute("UPDATE tasks SET idempotency_key = NULL WHERE id = ?", (row["id"],))
            record = self._new_record(task_id, kind, params, now, run_at)
            seq = conn.execute(
                _INSERT + " RETURNING seq", self._insert_values(record, idempotency_key)
            ).fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return replace(record, seq=seq), True

    def confirm_queued(self, task_id: str) -> None:
        """Move a task from ``submitting`` to ``queued`` once the broker confirmed it."""
        self._write(
            f"UPDATE tasks SET state = ?, updated_at = ?, seq = {_NEXT_SEQ}"
            " WHERE id = ? AND state = ?",
            (QUEUED, time.time(), task_id, SUBMITTING),
        )

    def delete(self, task_id: str) -> None:
        """Forget a task whose publish failed, so nothing stays recorded as queued."""
        self._write("DELETE FROM tasks WHERE id = ?", (task_id,))

    def claim_due(self, now: float, limit: int = 100) -> list[TaskRecord]:
        """Mark scheduled tasks whose ``run_at`` has passed as dispatched and return them."""
        rows = self._write(
            "UPDATE tasks SET dispatched = 1 WHERE id IN (SELECT id FROM tasks"
            " WHERE dispatched = 0 AND state = ? AND run_at <= ? ORDER BY run_at LIMIT ?)"
            " RETURNING *",
            (QUEUED, now, limit),
        )
        return [_record(row) for row in rows]

    def release_claim(self, task_id: str) -> None:
        """Return a claimed scheduled task to the pending set after a failed publish."""
        self._write("UPDATE tasks SET dispatched = 0 WHERE id = ?", (task_id,))

    def request_cancel(self, task_id: str) -> TaskRecord | None:
        """Cancel a task: at once when it has not started, cooperatively when it runs.

        :return: the updated record, or ``None`` for an unknown id.
        """
        now = time.time()
        self._write(
            f"UPDATE tasks SET state = ?, message = 'cancelled before it started',"
            f" finished_at = ?, updated_at = ?, seq = {_NEXT_SEQ}"
            " WHERE id = ? AND state IN (?, ?, ?)",
            (CANCELLED, now, now, task_id, SUBMITTING, QUEUED, RETRYING),
        )
        self._write(
            f"UPDATE tasks SET cancel_requested = 1, message = 'cancellation requested',"
            f" updated_at = ?, seq = {_NEXT_SEQ} WHERE id = ? AND state IN (?, ?)",
            (now, task_id, STARTED, PROGRESS),
        )
        return self.get(task_id)

    # Worker side.

    def start(self, task_id: str, worker: str) -> TaskRecord | None:
        """Move a task to ``started`` and count the delivery.

        :return: the record, or ``None`` when the task must not run: unknown, cancelled or
            already finished (a redelivered message of a task that completed).
        """
        now = time.time()
        rows = self._write(
            f"UPDATE tasks SET state = ?, percent = 0, message = 'started', worker = ?,"
            f" started_at = ?, updated_at = ?, deliveries = deliveries + 1, seq = {_NEXT_SEQ}"
            " WHERE id = ? AND state NOT IN (?, ?, ?) AND cancel_requested = 0 RETURNING *",
            (STARTED, worker, now, now, task_id, SUCCEEDED, FAILED, CANCELLED),
        )
        return _record(rows[0]) if rows else None

    def progress(self, task_id: str, percent: float, message: str) -> bool:
        """Record progress of a running task.

        :return: ``False`` when the task should stop: cancellation was requested, or the task
            is no longer running.
        """
        rows = self._write(
            f"UPDATE tasks SET state = ?, percent = ?, message = ?, updated_at = ?,"
            f" seq = {_NEXT_SEQ} WHERE id = ? AND state IN (?, ?) RETURNING cancel_requested",
            (PROGRESS, percent, message, time.time(), task_id, STARTED, PROGRESS),
        )
        return bool(rows) and not rows[0]["cancel_requested"]

    def cancel_requested(self, task_id: str) -> bool:
        """Return whether a running task was asked to stop."""
        rows = self._read("SELECT cancel_requested, state FROM tasks WHERE id = ?", (task_id,))
        if not rows:
            return True
        return bool(rows[0]["cancel_requested"]) or rows[0]["state"] == CANCELLED

    def finish(
        self,
        task_id: str,
        state: str,
        *,
        message: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Record the end of a task: ``succeeded``, ``failed`` or ``cancelled``.

        A task that already ended keeps its first outcome.
        """
        now = time.time()
        percent_sql = "100" if state == SUCCEEDED else "percent"
        self._write(
            f"UPDATE tasks SET state = ?, percent = {percent_sql}, message = ?, result = ?,"
            f" error = ?, finished_at = ?, updated_at = ?, seq = {_NEXT_SEQ}"
            " WHERE id = ? AND state NOT IN (?, ?, ?)",
            (
                state,
                message,
                json.dumps(result) if result is not None else None,
                error,
                now,
                now,
                task_id,
                SUCCEEDED,
                FAILED,
                CANCELLED,
            ),
        )

    def mark_retrying(self, task_id: str, message: str, error: str) -> None:
        """Record that a task failed transiently and is queued again."""
        self._write(
            f"UPDATE tasks SET state = ?, message = ?, error = ?, updated_at = ?,"
            f" seq = {_NEXT_SEQ} WHERE id = ? AND state NOT IN (?, ?, ?)",
            (RETRYING, message, error, time.time(), task_id, SUCCEEDED, FAILED, CANCELLED),
        )

    def expire_outputs(self, task_id: str) -> None:
        """Drop the file list of a task whose outputs were deleted."""
        record = self.get(task_id)
        if record is None or record.result is None:
            return
        result = dict(record.result)
        result["files"] = []
        result["expired"] = True
        self._write(
            f"UPDATE tasks SET result = ?, updated_at = ?, seq = {_NEXT_SEQ} WHERE id = ?",
            (json.dumps(result), time.time(), task_id),
        )

    # Reads.

    def get(self, task_id: str) -> TaskRecord | None:
        """Return the task, or ``None`` when the id is unknown or still being submitted."""
        rows = self._read("SELECT * FROM tasks WHERE id = ? AND state != ?", (task_id, SUBMITTING))
        return _record(rows[0]) if rows else None

    def page(self, page: int, per_page: int) -> tuple[list[TaskRecord], int]:
        """Return one page of tasks, newest first, and the total count."""
        total = self._read("SELECT COUNT(*) FROM tasks WHERE state != ?", (SUBMITTING,))[0][0]
        rows = self._read(
            "SELECT * FROM tasks WHERE state != ? ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (SUBMITTING, per_page, (page - 1) * per_page),
        )
        return [_record(row) for row in rows], total

    def changed_since(self, seq: int, limit: int = 500) -> list[TaskRecord]:
        """Return tasks whose last change has a ``seq`` above ``seq``, oldest change first."""
        rows = self._read(
            "SELECT * FROM tasks WHERE seq > ? AND state != ? ORDER BY seq LIMIT ?",
            (seq, SUBMITTING, limit),
        )
        return [_record(row) for row in rows]

    def last_seq(self) -> int:
        """Return the ``seq`` of the latest change."""
        return self._read("SELECT COALESCE(MAX(seq), 0) FROM tasks", ())[0][0]

    def count(self, state: str) -> int:
        """Return how many tasks are in ``state``."""
        return self._read("SELECT COUNT(*) FROM tasks WHERE state = ?", (state,))[0][0]

    def between(self, since: float | None, until: float | None) -> list[TaskRecord]:
        """Return tasks created in ``[since, until)``; ``None`` leaves that end open."""
        rows = self._read(
            "SELECT * FROM tasks WHERE state != ? AND created_at >= ? AND created_at < ?"
            " ORDER BY created_at",
            (SUBMITTING, since if since is not None else 0.0, until or float("inf")),
        )
        return [_record(row) for row in rows]

    def finished_before(self, cutoff: float) -> list[TaskRecord]:
        """Return finished tasks older than ``cutoff`` whose outputs may be deleted."""
        rows = self._read(
            "SELECT * FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?", (cutoff,)
        )
        return [_record(row) for row in rows]
