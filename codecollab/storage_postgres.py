"""PostgreSQL storage of documents, shared by several editor processes.

The layout matches the SQLite store (``codecollab/storage.py``): one row per session in
``codecollab_documents`` with the last compacted snapshot, plus the Yjs updates appended since,
in ``codecollab_updates``. Both tables live in the schema named by
``CODECOLLAB_DATABASE_SCHEMA``, which is created when missing.

Several processes write at once, which changes two things compared with SQLite:

- Row ids come from a sequence, and transactions may commit in a different order than they
  took their ids. A process therefore never assumes that it has seen every row below its own
  last id.
- Compaction merges what is stored, not only what the compacting process holds in memory. It
  locks the session's document row (``FOR NO KEY UPDATE``, which still lets other processes
  append updates), reads every stored update, merges the stored snapshot, those updates and
  the caller's in-memory state into one snapshot, and deletes exactly the rows it merged. An
  update committed by another process during the compaction is neither merged nor deleted, so
  it stays for the next load or compaction. Yjs updates are idempotent, so merging an update
  that is both in memory and in a row stores it once.

Loading reads the snapshot and the updates in one ``REPEATABLE READ`` transaction, so a
compaction that commits in between cannot make a load see the new snapshot without the rows,
or the deleted rows without the old snapshot.

Durability: ``append_update`` returns after PostgreSQL has committed the row, so an
acknowledged update survives the editor process being killed. ``synchronous_commit`` decides
whether the commit also waits for PostgreSQL's write-ahead log to reach the disk. With ``off``
(the default here, like the SQLite store's ``synchronous=NORMAL``), a crash of the PostgreSQL
server itself can lose the commits of its last few hundred milliseconds (up to three times
its ``wal_writer_delay``, 200 ms by default). With ``on``, every append waits for a disk flush,
and a connection's next update waits for it.

Connections come from a ``psycopg_pool.ConnectionPool``. psycopg 3 cooperates with gevent's
monkey-patching (since 3.1.14), so a query does not block the other greenlets; it does not
support eventlet, and ``config`` rejects that combination.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout
from pycrdt import Doc

from codecollab.storage import StorageError, StoredDocument

logger = logging.getLogger(__name__)

# Any constant works; it keeps two processes from creating the tables at the same moment.
SCHEMA_LOCK_KEY = 0x636F6463  # "codc"
CONNECT_TIMEOUT_SECONDS = 5
SYNCHRONOUS_COMMIT_MODES = ("off", "on")
POOL_TIMEOUT_SECONDS = 10.0

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.codecollab_documents (
    session_id TEXT PRIMARY KEY,
    snapshot BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    compacted_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.codecollab_updates (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES {schema}.codecollab_documents (session_id),
    data BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS codecollab_updates_by_session
    ON {schema}.codecollab_updates (session_id, id);
"""


class PostgresDocumentStore:
    """Snapshot-and-append storage of Yjs documents in PostgreSQL, safe for many processes.

    It has the methods of ``DocumentStore`` (``load``, ``exists``, ``create``,
    ``append_update``, ``compact``, ``close``) with the same contracts, except where
    ``compact`` says otherwise.

    :param url: libpq connection URL, such as ``postgresql://user@127.0.0.1:5432/codecollab``.
    :param schema: schema of the two tables; created when missing.
    :param pool_size: maximum number of connections this process opens.
    :param timeout: seconds to wait for the first connection at start-up, and for a free
        connection of the pool later.
    :param synchronous_commit: PostgreSQL's ``synchronous_commit`` for this store's sessions:
        ``off`` or ``on`` (see the module docstring).
    :raises StorageError: when the database cannot be reached or the tables cannot be created.
    """

    def __init__(
        self,
        url: str,
        schema: str = "public",
        pool_size: int = 4,
        timeout: float = POOL_TIMEOUT_SECONDS,
        synchronous_commit: str = "off",
    ) -> None:
        if synchronous_commit not in SYNCHRONOUS_COMMIT_MODES:
            raise ValueError(
                f"synchronous_commit={synchronous_commit!r}; use one of "
                f"{', '.join(SYNCHRONOUS_COMMIT_MODES)}"
            )
        self.schema = schema
        self._display = _without_password(url)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
            timeout=timeout,
            configure=lambda conn: conn.execute(
                sql.SQL("SET synchronous_commit = {}").format(sql.Literal(synchronous_commit))
            ),
            name="codecollab",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout as exc:
            self._pool.close()
            raise StorageError(
                f"could not connect to PostgreSQL at {self._display} within {timeout:g} s; "
                "check CODECOLLAB_DATABASE_URL and that the server is running"
            ) from exc

        name = sql.Identifier(schema)
        self._documents = sql.SQL("{}.codecollab_documents").format(name)
        self._updates = sql.SQL("{}.codecollab_updates").format(name)
        with self._transaction("create the tables for", "*") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            conn.execute(sql.SQL(SCHEMA).format(schema=name))
        logger.info("opened document store %s (schema %s)", self._display, schema)

    def load(self, session_id: str) -> StoredDocument | None:
        """Return the stored document of ``session_id``, or ``None`` when it was never created."""
        with self._transaction("load", session_id) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = conn.execute(
                sql.SQL("SELECT snapshot FROM {} WHERE session_id = %s").format(self._documents),
                (session_id,),
            ).fetchone()
            if row is None:
                return None
            updates = conn.execute(
                sql.SQL("SELECT id, data FROM {} WHERE session_id = %s ORDER BY id").format(
                    self._updates
                ),
                (session_id,),
            ).fetchall()
        return StoredDocument(snapshot=bytes(row[0]), updates=[(i, bytes(d)) for i, d in updates])

    def exists(self, session_id: str) -> bool:
        """Return whether ``session_id`` has been created."""
        with self._errors("look up", session_id), self._pool.connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT 1 FROM {} WHERE session_id = %s").format(self._documents),
                (session_id,),
            ).fetchone()
        return row is not None

    def create(self, session_id: str, snapshot: bytes) -> bool:
        """Create ``session_id`` with its seed ``snapshot``.

        :return: ``False`` when the session already existed (another process may have created
            it a moment ago), in which case nothing is written and the caller must load the
            stored document instead of its own seed.
        """
        now = time.time()
        with self._errors("create", session_id), self._pool.connection() as conn:
            cursor = conn.execute(
                sql.SQL(
                    "INSERT INTO {} (session_id, snapshot, created_at, compacted_at)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (session_id) DO NOTHING"
                ).format(self._documents),
                (session_id, snapshot, now, now),
            )
        return cursor.rowcount == 1

    def append_update(self, session_id: str, update: bytes) -> int:
        """Append one update and return its row id once the transaction has committed."""
        with self._errors("append an update to", session_id), self._pool.connection() as conn:
            row = conn.execute(
                sql.SQL(
                    "INSERT INTO {} (session_id, data, created_at) VALUES (%s, %s, %s) RETURNING id"
                ).format(self._updates),
                (session_id, update, time.time()),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def compact(self, session_id: str, snapshot: bytes, last_update_id: int = 0) -> None:
        """Merge the stored snapshot, every stored update and ``snapshot`` into a new snapshot.

        Unlike the SQLite store, this deletes exactly the update rows it merged and ignores
        ``last_update_id``, because other processes append rows that the caller's in-memory
        ``snapshot`` may not contain yet. A stored update that does not decode is logged and
        kept.
        """
        with self._transaction("compact", session_id) as conn:
            row = conn.execute(
                sql.SQL("SELECT snapshot FROM {} WHERE session_id = %s FOR NO KEY UPDATE").format(
                    self._documents
                ),
                (session_id,),
            ).fetchone()
            if row is None:
                raise StorageError(f"cannot compact session {session_id!r}: it does not exist")
            stored = conn.execute(
                sql.SQL("SELECT id, data FROM {} WHERE session_id = %s ORDER BY id").format(
                    self._updates
                ),
                (session_id,),
            ).fetchall()

            merged, merged_ids = _merge(session_id, bytes(row[0]), stored, snapshot)
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET snapshot = %s, compacted_at = %s WHERE session_id = %s"
                ).format(self._documents),
                (merged, time.time(), session_id),
            )
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE session_id = %s AND id = ANY(%s)").format(
                    self._updates
                ),
                (session_id, merged_ids),
            )

    def close(self) -> None:
        """Close every connection; later calls raise ``StorageError``."""
        self._pool.close()

    @contextmanager
    def _transaction(self, action: str, session_id: str) -> Iterator[psycopg.Connection]:
        """Yield a pooled connection inside a transaction that commits on success."""
        with self._errors(action, session_id), self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _errors(self, action: str, session_id: str) -> Iterator[None]:
        """Turn psycopg and pool errors into ``StorageError`` naming the action and session."""
        try:
            yield
        except (psycopg.Error, PoolTimeout) as exc:
            raise StorageError(
                f"failed to {action} session {session_id!r} in {self._display}: {exc}"
            ) from exc


def _merge(
    session_id: str, stored_snapshot: bytes, updates: list[tuple[int, bytes]], in_memory: bytes
) -> tuple[bytes, list[int]]:
    """Return one snapshot holding every input, and the ids of the updates it holds."""
    doc = Doc()
    doc.apply_update(stored_snapshot)
    merged_ids = []
    for update_id, data in updates:
        try:
            doc.apply_update(bytes(data))
        except ValueError as exc:
            logger.error(
                "session %s: kept stored update %d that does not decode: %s",
                session_id,
                update_id,
                exc,
            )
            continue
        merged_ids.append(update_id)
    doc.apply_update(in_memory)
    return doc.get_update(), merged_ids


def _without_password(url: str) -> str:
    """Return ``url`` with its password masked, for logs and error messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured database"
    host = info.get("host", "localhost")
    port = info.get("port", "5432")
    return f"postgresql://{info.get('user', '')}@{host}:{port}/{info.get('dbname', '')}"
