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
import threading
from collections.abc import Sequence
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

    Each thread of each process opens its own connection on first use, as the SQLite store
    does. A child process never uses its parent's connection, and psycopg does not close a
    connection from a process other than the one that opened it, so the store is safe across
    ``fork``.
    """

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self._local = threading.local()
        # The schema gets a connection of its own, closed at once, so a Celery worker that
        # builds the store before forking keeps no idle connection in the parent.
        with psycopg.connect(url) as raw, raw.transaction():
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            for statement in filter(str.strip, _SCHEMA.split(";")):
                raw.execute(statement)
        logger.info("task store: PostgreSQL at %s", _redact(url))

    def _connect(self) -> _Connection:  # type: ignore[override]
        connection: _Connection | None = getattr(self._local, "conn", None)
        same_process = getattr(self._local, "pid", None) == os.getpid()
        if connection is not None and same_process and not connection.closed:
            return connection
        import psycopg

        raw = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory)
        connection = _Connection(raw)
        self._local.conn = connection
        self._local.pid = os.getpid()
        return connection

    def _write(self, sql: str, params: tuple[Any, ...]) -> list[Any]:  # type: ignore[override]
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            cursor = connection.execute(sql, params)
            rows = cursor.fetchall() if cursor.description is not None else []
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return rows


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
