"""The task store on PostgreSQL, for producers and workers on several machines.

:class:`PostgresTaskStore` runs the SQL of :class:`scheduler.taskstore.TaskStore` unchanged
through psycopg 3. Two differences from SQLite need care:

- SQLite lets one writer in at a time, and the store relies on it: ``seq`` is computed as
  ``MAX(seq) + 1`` inside each write, so the event stream reads changes in commit order.
  Here every write takes one transaction-scoped advisory lock first, which gives the same
  one-writer order. Reads never take it.
- Timestamps are ``DOUBLE PRECISION``. PostgreSQL's ``REAL`` has 24 bits of mantissa, which
  would round a Unix time to about two minutes.

Select it with ``SCHEDULER_TASK_DB_URL=postgresql://user@host:5432/db``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from scheduler.config import Settings
from scheduler.taskstore import TaskStore

logger = logging.getLogger(__name__)

# Key of the advisory lock that serialises writers; any constant unique within the database.
WRITE_LOCK_KEY = 0x5C4ED_7A5C

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    percent DOUBLE PRECISION NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    run_at DOUBLE PRECISION,
    dispatched INTEGER NOT NULL DEFAULT 1,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    idempotency_key TEXT UNIQUE,
    seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at);
CREATE INDEX IF NOT EXISTS tasks_seq ON tasks (seq);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (dispatched, run_at);
"""


class _Row(tuple):
    """A result row readable by column name and by position, like ``sqlite3.Row``."""

    _columns: dict[str, int]

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._columns[key])
        return tuple.__getitem__(self, key)


def _row_factory(cursor: Any) -> Any:
    names = [column.name for column in cursor.description or []]
    row_type = type("Row", (_Row,), {"_columns": {name: i for i, name in enumerate(names)}})

    def make(values: Sequence[Any]) -> _Row:
        return row_type(values)

    return make


class _Connection:
    """A psycopg connection that accepts the SQLite dialect the task store writes.

    ``?`` placeholders become ``%s`` (the store's SQL has no other ``?`` and no ``%``), and
    ``BEGIN IMMEDIATE`` becomes ``BEGIN`` plus the writers' advisory lock.
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    @property
    def closed(self) -> bool:
        """Whether the server or the client closed the connection."""
        return bool(self._connection.closed)

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection."""
        from psycopg.pq import TransactionStatus

        return self._connection.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement and return its cursor."""
        if sql.strip().upper() == "BEGIN IMMEDIATE":
            self._connection.execute("BEGIN")
            return self._connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        return self._connection.execute(sql.replace("?", "%s"), tuple(params))


class PostgresTaskStore(TaskStore):
    """The task store in a PostgreSQL database shared by every producer and worker.

    Connections are pooled per process, as in the SQLite store. A forked child starts with an
    empty pool and never uses its parent's connections, and psycopg does not close a
    connection from a process other than the one that opened it, so the store is safe across
    ``fork``. A connection found closed (after a server restart, say) is dropped, not reused.
    """

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self._pool: queue.LifoQueue[_Connection] = queue.LifoQueue()
        self._pool_pid = os.getpid()
        # Threads of one process queue here before they wait on the advisory lock.
        self._write_lock = threading.Lock()
        # The schema gets a connection of its own, closed at once, so a Celery worker that
        # builds the store before forking keeps no idle connection in the parent.
        with psycopg.connect(url) as raw, raw.transaction():
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            for statement in filter(str.strip, _SCHEMA.split(";")):
                raw.execute(statement)
        logger.info("task store: PostgreSQL at %s", _redact(url))

    def _open(self) -> _Connection:  # type: ignore[override]
        import psycopg

        return _Connection(psycopg.connect(self.url, autocommit=True, row_factory=_row_factory))

    @contextmanager
    def _connection(self) -> Iterator[_Connection]:  # type: ignore[override]
        if self._pool_pid != os.getpid():
            self._pool = queue.LifoQueue()
            self._write_lock = threading.Lock()
            self._pool_pid = os.getpid()
        connection = None
        while connection is None:
            try:
                candidate = self._pool.get_nowait()
            except queue.Empty:
                candidate = self._open()
            if not candidate.closed:
                connection = candidate
        try:
            yield connection
        finally:
            if not connection.closed and connection.in_transaction:
                connection.execute("ROLLBACK")
            if not connection.closed:
                self._pool.put(connection)

    def _write(self, sql: str, params: tuple[Any, ...]) -> list[Any]:  # type: ignore[override]
        with self._connection() as connection, self._write_lock:
            connection.execute("BEGIN IMMEDIATE")
            cursor = connection.execute(sql, params)
            rows = cursor.fetchall() if cursor.description is not None else []
            connection.execute("COMMIT")
            return rows

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:  # type: ignore[override]
        with self._connection() as connection:
            return connection.execute(sql, params).fetchall()


def _redact(url: str) -> str:
    """Return ``url`` without its password, for logs."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def open_task_store(settings: Settings) -> TaskStore:
    """Return the task store ``settings`` select: PostgreSQL by URL, else the SQLite file."""
    if settings.task_db_url:
        return PostgresTaskStore(settings.task_db_url)
    return TaskStore(settings.task_db)
