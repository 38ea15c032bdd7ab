"""SQLite storage of the broker: schema, connection settings and every SQL statement.

One database file contains all queues of a broker. Any number of processes on the same machine
open it at once, so the file must live on a local file system: SQLite's WAL mode needs shared
memory between the processes, which network file systems do not provide.

Tables:

- ``messages``: one row per message in a queue. ``visible_at`` is 0 for a ready message and
  the UNIX time at which the lease ends for a claimed one. ``owner`` is the lease holder.
- ``fanout``: messages published to fanout exchanges, read by every bound consumer through its
  own cursor and deleted after ``fanout_ttl`` seconds.
- ``exchanges``, ``bindings``, ``queues``: routing state shared by all processes.
  ``queues.arguments`` keeps the declared queue arguments as JSON, read when a message is
  dead-lettered (see :mod:`.deadletter`).
- ``meta``: key/value pairs, such as the time of the last maintenance run.

Every statement runs through :meth:`Store.run`, which retries while another process holds the
write lock, so "database is locked" reaches the caller only after ``busy_timeout`` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .deadletter import (
    EXPIRED,
    REJECTED,
    DeadLettered,
    dead_letter_message,
    match_bindings,
    target_of,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload TEXT NOT NULL,
    visible_at REAL NOT NULL DEFAULT 0,
    owner TEXT,
    previous_owner TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, priority, id);
CREATE INDEX IF NOT EXISTS messages_by_owner ON messages (owner) WHERE owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS fanout (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fanout_by_exchange ON fanout (exchange, id);
CREATE TABLE IF NOT EXISTS exchanges (
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bindings (
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    pattern TEXT,
    queue TEXT NOT NULL,
    PRIMARY KEY (exchange, routing_key, queue)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bindings_by_queue ON bindings (queue);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    expires REAL,
    message_ttl REAL,
    last_used REAL NOT NULL,
    arguments TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value REAL NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('maintenance_at', 0);
"""

# SQLite's own busy handler sleeps 1, 2, 5, 10 ms and longer between attempts, while a write
# holds the lock for well under a millisecond. So SQLite returns "locked" at once and the
# jittered retry loop of Store.run waits from 0.1 ms up to 5 ms.
SQLITE_BUSY_TIMEOUT_MS = 0
RETRY_SLEEP_MIN = 0.0001
RETRY_SLEEP_MAX = 0.005

# A queue declared with x-expires is deleted only after at least this many idle seconds, so the
# lease keeper, which marks consumed queues as used every few seconds, always keeps them alive.
MIN_QUEUE_EXPIRES = 60.0

# Expired messages dead-lettered per transaction by a maintenance run, so that one run never
# holds the write lock for long.
EXPIRY_BATCH = 500
MAX_EXPIRY_BATCHES = 20

# Free pages below this count (4 MiB at the default page size) stay in the file for reuse.
VACUUM_MIN_PAGES = 1024

T = TypeVar("T")

# Every statement below is read to the end with fetchall(): a statement left unfinished keeps its
# implicit transaction open, which pins an old snapshot and blocks WAL checkpoints.


class StoreError(Exception):
    """The broker database cannot be opened or used as configured."""


@dataclass(frozen=True)
class Claim:
    """A message row leased to one consumer."""

    row_id: int  # messages.id, the handle for ack, reject and renewal
    payload: str  # the kombu message as JSON
    deliveries: int  # 1 on the first delivery, more after a requeue or an expired lease
    previous_owner: str | None  # the holder whose lease expired, None after a release


@dataclass(frozen=True)
class MaintenanceReport:
    """Counts of what one maintenance run removed and reclaimed."""

    expired_messages: int
    dead_lettered: list[DeadLettered]
    expired_fanout: int
    expired_queues: list[str]
    freed_pages: int


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Return whether ``exc`` means another connection holds a lock, so a retry can succeed."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def resolve_path(url: str) -> Path:
    """Return the database path of a ``sqlite://`` broker URL.

    ``sqlite:///var/broker.sqlite3`` names a path relative to the working directory and
    ``sqlite:////srv/broker.sqlite3`` an absolute one, as in SQLAlchemy URLs.

    :raises StoreError: when the URL has another scheme, no path, a query string, or names an
        in-memory database, which other processes could not reach.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise StoreError(f"invalid broker URL {url!r}: expected sqlite:///path/to/broker.sqlite3")
    if "?" in rest:
        raise StoreError(
            f"invalid broker URL {url!r}: query parameters are not read; "
            "set options through Celery's broker_transport_options instead"
        )
    if not rest.startswith("/") or len(rest) < 2:
        raise StoreError(
            f"invalid broker URL {url!r}: no file path; use sqlite:///relative/path.sqlite3 "
            "or sqlite:////absolute/path.sqlite3"
        )
    path = rest[1:]
    if path == ":memory:" or path.startswith("file::memory:"):
        raise StoreError(
            f"invalid broker URL {url!r}: an in-memory database is private to one "
            "connection, so producers and workers could not share it; name a file"
        )
    return Path(path)


class Store:
    """One SQLite connection to the broker database, safe to share between threads.

    :param path: the database file. Its folder is created when missing.
    :param busy_timeout: seconds to keep retrying a statement while other processes hold the
        write lock before the ``sqlite3.OperationalError`` reaches the caller.
    :param synchronous: SQLite's ``synchronous`` setting. ``FULL`` syncs the write-ahead log to
        disk at every commit, so a published message survives a power loss. ``NORMAL`` syncs
        only at checkpoints: a process crash loses nothing, a power loss may lose the last
        commits.
    """

    def __init__(self, path: Path, *, busy_timeout: float = 60.0, synchronous: str = "NORMAL"):
        if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA", "OFF"}:
            raise StoreError(
                f"invalid synchronous setting {synchronous!r}: use FULL, NORMAL, EXTRA or OFF"
            )
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous.upper()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._connections = 0  # connections opened so far, part of change_token()

    # Connection management

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        # Keeps the write-ahead log from staying large after a burst once checkpointed.
        conn.execute("PRAGMA journal_size_limit = 8388608")
        return conn

    def connection(self) -> sqlite3.Connection:
        """Return the open connection, reopening it in a forked child process."""
        pid = os.getpid()
        if self._conn is None or self._pid != pid:
            # A connection inherited through fork() must not be used or closed by the child.
            self._conn = self._connect()
            self._pid = pid
            self._connections += 1
        return self._conn

    def close(self) -> None:
        """Close the connection; a later call reopens it."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Call ``work(connection)`` and retry it while the database is locked.

        ``work`` must be safe to repeat: a single statement, or a transaction that
        :meth:`transaction` rolls back when it fails.
        """
        deadline = time.monotonic() + self.busy_timeout
        attempt = 0
        while True:
            try:
                with self._lock:
                    return work(self.connection())
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
                attempt += 1
                if attempt % 500 == 0:
                    logger.warning(
                        "sqlite broker %s: still locked by another process after %d retries: %s",
                        self.path,
                        attempt,
                        exc,
                    )
            sleep = min(RETRY_SLEEP_MIN * 2 ** min(attempt, 8), RETRY_SLEEP_MAX)
            time.sleep(sleep * random.uniform(0.5, 1.5))

    def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` with retries, all or nothing."""

        def attempt(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return self.run(attempt)

    # Schema

    def initialize(self) -> int:
        """Create the schema when missing and return the number of expired leases found.

        :raises StoreError: when the file was created by a newer schema version.
        """

        def setup(conn: sqlite3.Connection) -> None:
            # auto_vacuum only takes effect before the first table exists.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
            if mode.lower() != "wal":
                raise StoreError(f"sqlite broker {self.path}: cannot enable WAL mode (got {mode})")

        def create(conn: sqlite3.Connection) -> None:
            version = conn.execute("PRAGMA user_version").fetchall()[0][0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"sqlite broker {self.path} has schema version {version}, newer than "
                    f"{SCHEMA_VERSION}: upgrade this program or point it at another file"
                )
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if version == 1:
                # Queues declared under version 1 have unknown arguments (NULL) until their
                # next declaration records them.
                conn.execute("ALTER TABLE queues ADD COLUMN arguments TEXT")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        self.run(setup)
        self.transaction(create)
        return self.count_expired_leases(time.time())

    def count_expired_leases(self, now: float) -> int:
        """Return how many claimed messages have a lease that ended without an ack."""
        return self.run(
            lambda conn: conn.execute(
                "SELECT count(*) FROM messages WHERE owner IS NOT NULL AND visible_at <= ?",
                (now,),
            ).fetchall()[0][0]
        )

    def change_token(self) -> tuple[int, int, int]:
        """Return a value that changes whenever any connection commits a change to the database.

        SQLite's ``data_version`` changes when another connection commits, and the connection's
        ``total_changes`` when it writes itself. Reading both takes no write lock.
        """

        def read(conn: sqlite3.Connection) -> tuple[int, int, int]:
            version = conn.execute("PRAGMA data_version").fetchall()[0][0]
            return self._connections, version, conn.total_changes

        return self.run(read)

    # Messages

    def publish(
        self,
        queue: str,
        priority: int,
        payload: str,
        expires_at: float | None,
        now: float,
        bound_from: str | None = None,
    ) -> bool:
        """Insert one ready message; the queue's x-message-ttl applies without ``expires_at``.

        With ``bound_from``, the message was routed through that exchange, and it is inserted
        only while the queue is still bound to it. Another process may delete the queue between
        the routing and the insert, and a message stored then would stay in no queue forever.
        Return whether the message was stored.
        """
        insert = "INSERT INTO messages (queue, priority, payload, expires_at)"
        values = "?, ?, ?, coalesce(?, (SELECT ? + message_ttl FROM queues WHERE name = ?))"
        params: tuple[Any, ...] = (queue, priority, payload, expires_at, now, queue)
        if bound_from is None:
            sql = f"{insert} VALUES ({values})"
        else:
            sql = (
                f"{insert} SELECT {values} "
                "WHERE EXISTS (SELECT 1 FROM bindings WHERE queue = ? AND exchange = ?)"
            )
            params += (queue, bound_from)
        return self.run(lambda conn: conn.execute(sql, params).rowcount) == 1

    def claim(
        self, queue: str, owner: str, lease_until: float, now: float, limit: int = 1
    ) -> list[Claim]:
        """Lease up to ``limit`` ready messages of ``queue`` to ``owner``, by priority then age.

        A message whose lease has ended counts as ready, which is how messages held by a killed
        consumer come back.
        """
        rows = self.run(
            lambda conn: conn.execute(
                "UPDATE messages SET visible_at = ?, previous_owner = owner, owner = ?, "
                "deliveries = deliveries + 1 "
                "WHERE id IN (SELECT id FROM messages WHERE queue = ? AND visible_at <= ? "
                "AND (expires_at IS NULL OR expires_at > ?) ORDER BY priority, id LIMIT ?) "
                "RETURNING id, payload, deliveries, previous_owner, priority",
                (lease_until, owner, queue, now, now, limit),
            ).fetchall()
        )
        # RETURNING yields rows in no defined order.
        rows.sort(key=lambda row: (row[4], row[0]))
        return [Claim(*row[:4]) for row in rows]

    def next_lease_end(self, queue: str, now: float) -> float | None:
        """Return when the earliest lease in ``queue`` ends, None when it has no lease."""
        return self.run(
            lambda conn: conn.execute(
                "SELECT min(visible_at) FROM messages WHERE queue = ? AND visible_at > ?",
                (queue, now),
            ).fetchall()[0][0]
        )

    def release_many(self, row_ids: list[int], owner: str) -> None:
        """Make several claimed messages ready again at once."""
        params = [(row_id, owner) for row_id in row_ids]
        if params:
            self.run(
                lambda conn: conn.executemany(
                    "UPDATE messages SET visible_at = 0, owner = NULL WHERE id = ? AND owner = ?",
                    params,
                )
            )

    def take(self, queue: str, now: float) -> str | None:
        """Remove and return the first ready message of ``queue`` (for consumers without acks)."""
        row = self.run(
            lambda conn: conn.execute(
                "DELETE FROM messages WHERE id = (SELECT id FROM messages WHERE queue = ? "
                "AND visible_at <= ? AND (expires_at IS NULL OR expires_at > ?) "
                "ORDER BY priority, id LIMIT 1) RETURNING payload",
                (queue, now, now),
            ).fetchall()
        )
        return row[0][0] if row else None

    def ack(self, row_id: int, owner: str) -> bool:
        """Delete a claimed message; return False when ``owner`` no longer holds its lease."""
        cursor = self.run(
            lambda conn: conn.execute(
                "DELETE FROM messages WHERE id = ? AND owner = ?", (row_id, owner)
            )
        )
        return cursor.rowcount == 1

    def reject(self, row_id: int, owner: str, now: float) -> DeadLettered | None:
        """Delete a claimed message and dead-letter it, both in one transaction.

        The message goes to the dead-letter exchange of its queue with the reason
        ``rejected``; a queue without one loses the message, as on RabbitMQ.

        :returns: None when ``owner`` no longer holds the lease, so nothing changed.
        """

        def work(conn: sqlite3.Connection) -> DeadLettered | None:
            rows = conn.execute(
                "DELETE FROM messages WHERE id = ? AND owner = ? "
                "RETURNING queue, priority, payload",
                (row_id, owner),
            ).fetchall()
            if not rows:
                return None
            queue, priority, payload = rows[0]
            return self._dead_letter(conn, queue, priority, payload, REJECTED, now)

        return self.transaction(work)

    def _dead_letter(
        self,
        conn: sqlite3.Connection,
        queue: str,
        priority: int,
        payload: str,
        reason: str,
        now: float,
    ) -> DeadLettered:
        # Runs inside the caller's transaction, after the original row was deleted.
        rows = conn.execute("SELECT arguments FROM queues WHERE name = ?", (queue,)).fetchall()
        arguments = json.loads(rows[0][0]) if rows and rows[0][0] else {}
        target = target_of(arguments)
        if target is None:
            return DeadLettered(queue, None, "", [])

        message, routing_key = dead_letter_message(json.loads(payload), queue, reason, target, now)
        if target.exchange == "":
            # The default exchange routes to the queue named by the routing key, if it exists.
            known = conn.execute("SELECT 1 FROM queues WHERE name = ?", (routing_key,)).fetchall()
            destinations = [routing_key] if known else []
        else:
            type_rows = conn.execute(
                "SELECT type FROM exchanges WHERE name = ?", (target.exchange,)
            ).fetchall()
            bindings = conn.execute(
                "SELECT routing_key, pattern, queue FROM bindings WHERE exchange = ?",
                (target.exchange,),
            ).fetchall()
            exchange_type = type_rows[0][0] if type_rows else "direct"
            destinations = match_bindings(exchange_type, bindings, routing_key)

        encoded = json.dumps(message)
        for destination in destinations:
            conn.execute(
                "INSERT INTO messages (queue, priority, payload, expires_at) VALUES "
                "(?, ?, ?, (SELECT ? + message_ttl FROM queues WHERE name = ?))",
                (destination, priority, encoded, now, destination),
            )
        return DeadLettered(queue, target, routing_key, destinations)

    def release(self, row_id: int, owner: str) -> bool:
        """Make a claimed message ready again at once, in its original position."""
        cursor = self.run(
            lambda conn: conn.execute(
                "UPDATE messages SET visible_at = 0, owner = NULL WHERE id = ? AND owner = ?",
                (row_id, owner),
            )
        )
        return cursor.rowcount == 1

    def renew(self, owner: str, lease_until: float) -> int:
        """Extend every lease that ``owner`` holds; return how many were extended."""
        cursor = self.run(
            lambda conn: conn.execute(
                "UPDATE messages SET visible_at = ? WHERE owner = ?", (lease_until, owner)
            )
        )
        return cursor.rowcount

    def lease_holders(self, now: float) -> list[str]:
        """Return the owners that hold at least one unexpired lease."""
        rows = self.run(
            lambda conn: conn.execute(
                "SELECT DISTINCT owner FROM messages WHERE owner IS NOT NULL AND visible_at > ?",
                (now,),
            ).fetchall()
        )
        return [owner for (owner,) in rows]

    def end_leases(self, owner: str) -> int:
        """End every lease of ``owner`` now, so its messages are delivered again."""
        cursor = self.run(
            lambda conn: conn.execute(
                "UPDATE messages SET visible_at = 0 WHERE owner = ? AND visible_at > 0", (owner,)
            )
        )
        return cursor.rowcount

    def size(self, queue: str, now: float) -> int:
        """Return the number of ready messages in ``queue``."""
        return self.run(
            lambda conn: conn.execute(
                "SELECT count(*) FROM messages WHERE queue = ? AND visible_at <= ?", (queue, now)
            ).fetchall()[0][0]
        )

    def purge(self, queue: str, now: float) -> int:
        """Delete the ready messages of ``queue``; claimed ones stay until acked or released."""
        cursor = self.run(
            lambda conn: conn.execute(
                "DELETE FROM messages WHERE queue = ? AND visible_at <= ?", (queue, now)
            )
        )
        return cursor.rowcount

    # Fanout

    def publish_fanout(self, exchange: str, payload: str, now: float) -> None:
        """Insert a message that every consumer bound to ``exchange`` reads once."""
        self.run(
            lambda conn: conn.execute(
                "INSERT INTO fanout (exchange, payload, created_at) VALUES (?, ?, ?)",
                (exchange, payload, now),
            )
        )

    def fanout_cursor(self, exchange: str) -> int:
        """Return the id of the newest fanout message of ``exchange``, or 0 when there is none."""
        return self.run(
            lambda conn: conn.execute(
                "SELECT coalesce(max(id), 0) FROM fanout WHERE exchange = ?", (exchange,)
            ).fetchall()[0][0]
        )

    def read_fanout(self, exchange: str, after_id: int) -> tuple[int, str] | None:
        """Return the first fanout message of ``exchange`` newer than ``after_id``."""
        rows = self.run(
            lambda conn: conn.execute(
                "SELECT id, payload FROM fanout WHERE exchange = ? AND id > ? ORDER BY id LIMIT 1",
                (exchange, after_id),
            ).fetchall()
        )
        return rows[0] if rows else None

    # Routing state

    def declare_exchange(self, name: str, type_: str) -> None:
        """Record the type of ``name`` so that other processes route to it correctly."""
        self.run(
            lambda conn: conn.execute(
                "INSERT OR IGNORE INTO exchanges (name, type) VALUES (?, ?)", (name, type_)
            )
        )

    def exchange_type(self, name: str) -> str | None:
        """Return the declared type of exchange ``name``, or None when no process declared it."""
        row = self.run(
            lambda conn: conn.execute(
                "SELECT type FROM exchanges WHERE name = ?", (name,)
            ).fetchall()
        )
        return row[0][0] if row else None

    def declare_queue(
        self,
        name: str,
        expires: float | None,
        message_ttl: float | None,
        arguments: Mapping[str, Any],
        now: float,
    ) -> dict[str, Any]:
        """Record queue ``name``, its x-expires and x-message-ttl in seconds, as used now.

        The arguments of the first declaration stay, as RabbitMQ keeps them, and later
        declarations only mark the queue used. A queue recorded by schema version 1, whose
        arguments are unknown, takes them from its next declaration.

        :returns: the arguments in force, which differ from ``arguments`` when an earlier
            declaration set others.
        """
        encoded = json.dumps(dict(arguments), sort_keys=True, default=str)
        rows = self.run(
            lambda conn: conn.execute(
                "INSERT INTO queues (name, expires, message_ttl, last_used, arguments) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "last_used = excluded.last_used, "
                "arguments = coalesce(queues.arguments, excluded.arguments) "
                "RETURNING arguments",
                (name, expires, message_ttl, now, encoded),
            ).fetchall()
        )
        return json.loads(rows[0][0])

    def has_queue(self, name: str) -> bool:
        """Return whether any process declared queue ``name`` and it has not expired."""
        return self.run(
            lambda conn: bool(
                conn.execute("SELECT 1 FROM queues WHERE name = ?", (name,)).fetchall()
            )
        )

    def touch_queues(self, names: Iterable[str], now: float) -> None:
        """Mark queues as used, which keeps x-expires from deleting them."""
        rows = [(now, name) for name in names]
        if rows:
            self.run(
                lambda conn: conn.executemany(
                    "UPDATE queues SET last_used = ? WHERE name = ?", rows
                )
            )

    def bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        """Record a binding, shared with every process that publishes to ``exchange``."""
        self.run(
            lambda conn: conn.execute(
                "INSERT OR IGNORE INTO bindings (exchange, routing_key, pattern, queue) "
                "VALUES (?, ?, ?, ?)",
                (exchange, routing_key, pattern, queue),
            )
        )

    def unbind(self, exchange: str, routing_key: str, queue: str) -> None:
        """Remove one binding."""
        self.run(
            lambda conn: conn.execute(
                "DELETE FROM bindings WHERE exchange = ? AND routing_key = ? AND queue = ?",
                (exchange, routing_key, queue),
            )
        )

    def bindings(self, exchange: str) -> list[tuple[str, str | None, str]]:
        """Return ``(routing_key, pattern, queue)`` for every binding of ``exchange``."""
        return self.run(
            lambda conn: conn.execute(
                "SELECT routing_key, pattern, queue FROM bindings WHERE exchange = ?", (exchange,)
            ).fetchall()
        )

    def delete_queue(self, name: str) -> int:
        """Delete a queue with its bindings and all its messages; return the message count."""

        def work(conn: sqlite3.Connection) -> int:
            deleted = conn.execute("DELETE FROM messages WHERE queue = ?", (name,)).rowcount
            conn.execute("DELETE FROM bindings WHERE queue = ?", (name,))
            conn.execute("DELETE FROM queues WHERE name = ?", (name,))
            return deleted

        return self.transaction(work)

    # Maintenance

    def claim_maintenance(self, interval: float, now: float) -> bool:
        """Return True for one caller per ``interval`` seconds across all processes."""
        cursor = self.run(
            lambda conn: conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'maintenance_at' AND value <= ?",
                (now, now - interval),
            )
        )
        return cursor.rowcount == 1

    def dead_letter_expired(self, now: float) -> list[DeadLettered]:
        """Move the expired messages of queues that have a dead-letter exchange to it.

        Each batch of messages is deleted and dead-lettered with the reason ``expired`` in one
        transaction. Expired messages of other queues stay for :meth:`maintain` to delete.
        """

        def batch(conn: sqlite3.Connection) -> list[DeadLettered]:
            rows = conn.execute(
                "SELECT m.id, q.arguments FROM messages m JOIN queues q ON q.name = m.queue "
                "WHERE m.expires_at IS NOT NULL AND m.expires_at <= ? AND m.visible_at <= ? "
                "AND q.arguments IS NOT NULL ORDER BY m.id",
                (now, now),
            ).fetchall()
            ids = [row_id for row_id, args in rows if target_of(json.loads(args)) is not None]
            moved = []
            for row_id in ids[:EXPIRY_BATCH]:
                deleted = conn.execute(
                    "DELETE FROM messages WHERE id = ? RETURNING queue, priority, payload",
                    (row_id,),
                ).fetchall()
                queue, priority, payload = deleted[0]
                moved.append(self._dead_letter(conn, queue, priority, payload, EXPIRED, now))
            return moved

        moved: list[DeadLettered] = []
        # Bounded, because a cycle of queues with x-message-ttl 0 would expire copies forever;
        # the next run continues where this one stopped.
        for _ in range(MAX_EXPIRY_BATCHES):
            done = self.transaction(batch)
            moved.extend(done)
            if len(done) < EXPIRY_BATCH:
                break
        return moved

    def maintain(self, fanout_ttl: float, now: float) -> MaintenanceReport:
        """Delete expired rows, return free pages to the file system and checkpoint the WAL.

        Expired messages of queues with a dead-letter exchange are dead-lettered first.
        """
        dead_lettered = self.dead_letter_expired(now)
        expired_messages = self.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ? "
                    "AND visible_at <= ?",
                    (now, now),
                ).rowcount
            )
        )
        expired_fanout = self.run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM fanout WHERE created_at < ?", (now - fanout_ttl,)
                ).rowcount
            )
        )
        idle_queues = self.run(
            lambda conn: conn.execute(
                "SELECT name FROM queues WHERE expires IS NOT NULL "
                "AND last_used + max(expires, ?) < ?",
                (MIN_QUEUE_EXPIRES, now),
            ).fetchall()
        )
        for (name,) in idle_queues:
            self.delete_queue(name)

        # A busy broker reuses its free pages at once, and moving pages to shrink the file costs
        # writes, so the file shrinks when the queues are empty or a quarter of it is free.
        idle = not self.run(lambda conn: conn.execute("SELECT 1 FROM messages LIMIT 1").fetchall())
        free_pages, page_count = self.run(
            lambda conn: (
                conn.execute("PRAGMA freelist_count").fetchall()[0][0],
                conn.execute("PRAGMA page_count").fetchall()[0][0],
            )
        )
        vacuum = free_pages > 0 and (idle or free_pages >= max(VACUUM_MIN_PAGES, page_count / 4))
        if vacuum:
            # Each step of incremental_vacuum frees one page, and execute() would step only once.
            self.run(lambda conn: conn.executescript("PRAGMA incremental_vacuum;"))
        # Truncating the WAL makes the next writes grow it again, so only an idle broker shrinks it.
        self.checkpoint(truncate=idle)
        return MaintenanceReport(
            expired_messages=expired_messages,
            dead_lettered=dead_lettered,
            expired_fanout=expired_fanout,
            expired_queues=[name for (name,) in idle_queues],
            freed_pages=free_pages if vacuum else 0,
        )

    def checkpoint(self, truncate: bool = False) -> bool:
        """Copy the WAL into the database; return False if readers kept it from completing.

        :param truncate: also cut the WAL file to zero bytes, waiting up to the busy timeout of
            SQLite's handler for readers. Otherwise the WAL is reused from its start and never
            exceeds the 8 MiB ``journal_size_limit`` for long.
        """
        mode = "TRUNCATE" if truncate else "PASSIVE"
        busy, _, _ = self.run(
            lambda conn: conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()[0]
        )
        return busy == 0
