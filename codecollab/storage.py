"""SQLite storage of documents as a snapshot plus appended Yjs updates.

Each session has one row in ``documents`` (created with the seed content, so its presence means
the session exists) holding the last compacted snapshot, and zero or more rows in ``updates``
appended since that snapshot. Loading applies the snapshot, then the updates in insertion order.
Compaction replaces the snapshot and deletes the updates it covers, in one transaction.

Durability: the database runs in WAL mode. ``append_update`` returns only after its transaction
has committed, so with ``synchronous=NORMAL`` (the default) an acknowledged update survives the
server process being killed (``kill -9``). Surviving power loss or an OS crash as well needs
``synchronous=FULL``, which costs an fsync per update.

One connection is shared by all greenlets or threads of the process and guarded by a lock.
Under gevent and eventlet, SQLite calls block the event loop for their duration (typically well
under a millisecond for an append).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    session_id TEXT PRIMARY KEY,
    snapshot BLOB NOT NULL,
    created_at REAL NOT NULL,
    compacted_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES documents (session_id),
    data BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_by_session ON updates (session_id, id);
"""


class StorageError(Exception):
    """A storage operation failed; the message names the session."""


@dataclass(frozen=True)
class StoredDocument:
    """The stored state of one session."""

    snapshot: bytes
    # Updates appended since the snapshot, as (row id, Yjs v1 update), in insertion order.
    updates: list[tuple[int, bytes]]


class DocumentStore:
    """Snapshot-and-append storage of Yjs documents in one SQLite file.

    :param path: database file; its folder is created when missing.
    :param synchronous: SQLite ``synchronous`` pragma: ``NORMAL`` survives a killed process,
        ``FULL`` also survives power loss.
    """

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=5.0
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(f"PRAGMA synchronous={synchronous}")
        self._connection.execute("PRAGMA foreign_keys=ON")
        self._connection.executescript(SCHEMA)
        logger.info("opened document store %s (synchronous=%s)", path, synchronous)

    def load(self, session_id: str) -> StoredDocument | None:
        """Return the stored document of ``session_id``, or ``None`` when it was never created."""
        with self._lock, self._errors("load", session_id):
            row = self._connection.execute(
                "SELECT snapshot FROM documents WHERE session_id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return None
            updates = self._connection.execute(
                "SELECT id, data FROM updates WHERE session_id = ? ORDER BY id", (session_id,)
            ).fetchall()
        return StoredDocument(snapshot=bytes(row[0]), updates=[(i, bytes(d)) for i, d in updates])

    def exists(self, session_id: str) -> bool:
        """Return whether ``session_id`` has been created."""
        with self._lock, self._errors("look up", session_id):
            row = self._connection.execute(
                "SELECT 1 FROM documents WHERE session_id = ?", (session_id,)
            ).fetchone()
        return row is not None

    def create(self, session_id: str, snapshot: bytes) -> bool:
        """Create ``session_id`` with its seed ``snapshot``.

        :return: ``False`` when the session already existed, in which case nothing is written
            and the caller must load the stored document instead of its own seed.
        """
        now = time.time()
        with self._lock, self._errors("create", session_id):
            cursor = self._connection.execute(
                "INSERT OR IGNORE INTO documents (session_id, snapshot, created_at, compacted_at)"
                " VALUES (?, ?, ?, ?)",
                (session_id, snapshot, now, now),
            )
        return cursor.rowcount == 1

    def append_update(self, session_id: str, update: bytes) -> int:
        """Append one update and return its row id once the transaction has committed."""
        with self._lock, self._errors("append an update to", session_id):
            cursor = self._connection.execute(
                "INSERT INTO updates (session_id, data, created_at) VALUES (?, ?, ?)",
                (session_id, update, time.time()),
            )
        return int(cursor.lastrowid or 0)

    def compact(self, session_id: str, snapshot: bytes, last_update_id: int) -> None:
        """Store ``snapshot`` and delete the updates it covers (row ids up to ``last_update_id``).

        The caller takes ``snapshot`` from the in-memory document while no update can be applied
        concurrently, so every update with a row id up to ``last_update_id`` is part of it.
        """
        with self._lock, self._errors("compact", session_id):
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                self._connection.execute(
                    "UPDATE documents SET snapshot = ?, compacted_at = ? WHERE session_id = ?",
                    (snapshot, time.time(), session_id),
                )
                self._connection.execute(
                    "DELETE FROM updates WHERE session_id = ? AND id <= ?",
                    (session_id, last_update_id),
                )
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def close(self) -> None:
        """Close the connection; later calls raise ``StorageError``."""
        with self._lock:
            self._connection.close()

    @contextmanager
    def _errors(self, action: str, session_id: str) -> Iterator[None]:
        """Turn ``sqlite3.Error`` into ``StorageError`` naming the action, session and file."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(
                f"failed to {action} session {session_id!r} in {self.path}: {exc}"
            ) from exc
