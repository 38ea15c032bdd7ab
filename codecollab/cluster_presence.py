"""Users of each session counted across every editor process, kept in Redis.

Every connection is a field of its session's Redis hash, tagged with the id of its process,
and every process refreshes a heartbeat key that expires after ``EXPIRY_HEARTBEATS`` missed
beats. Entries of a process whose key has expired (it crashed or hung) are ignored when
counting, and deleted by the first surviving process with users in that session that notices.
Users are de-duplicated by ``clientId`` exactly as ``presence.Presence`` does, so a tab that
reconnects to another process after a crash still counts once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import redis

from codecollab.presence import Participant

logger = logging.getLogger(__name__)

# A process is presumed dead when its heartbeat key was not refreshed for this many beats.
EXPIRY_HEARTBEATS = 3


@dataclass(frozen=True)
class PresenceEntry:
    """One live connection as stored in Redis."""

    process_id: str
    sid: str
    client_id: str
    name: str
    color: str
    # Wall-clock time of the connection, to order users by first arrival.
    since: float


class ClusterPresence:
    """Users of each session across every process, kept in Redis.

    Keys (``prefix`` is ``CODECOLLAB_CLUSTER_CHANNEL``):

    - ``<prefix>:presence:<session>``: hash, field ``<process id>/<sid>``, value JSON with the
      connection's ``clientId``, ``name``, ``color`` and ``since``;
    - ``<prefix>:process:<process id>``: heartbeat, expires after ``EXPIRY_HEARTBEATS`` beats.

    :param client: Redis client (``decode_responses=True``).
    :param prefix: key prefix of the deployment.
    :param process_id: this process's id, the Socket.IO manager's ``host_id``.
    :param heartbeat: seconds between two heartbeats.
    """

    def __init__(self, client: redis.Redis, prefix: str, process_id: str, heartbeat: float) -> None:
        self._redis = client
        self._prefix = prefix
        self.process_id = process_id
        self.heartbeat = heartbeat
        self._ttl_ms = int(heartbeat * EXPIRY_HEARTBEATS * 1000)
        # Local connections by session, re-registered if this process was presumed dead.
        self._local: dict[str, dict[str, PresenceEntry]] = {}
        self._beats = 0

    def add(self, session_id: str, participant: Participant) -> None:
        """Register a local connection."""
        entry = PresenceEntry(
            self.process_id,
            participant.sid,
            participant.client_id,
            participant.name,
            participant.color,
            time.time(),
        )
        self._local.setdefault(session_id, {})[participant.sid] = entry
        self._store(session_id, entry)

    def rename(self, session_id: str, participant: Participant) -> None:
        """Store the new name and colour of a local connection."""
        current = self._local.get(session_id, {}).get(participant.sid)
        if current is None:
            return
        entry = PresenceEntry(
            self.process_id,
            participant.sid,
            participant.client_id,
            participant.name,
            participant.color,
            current.since,
        )
        self._local[session_id][participant.sid] = entry
        self._store(session_id, entry)

    def remove(self, session_id: str, sid: str) -> None:
        """Unregister a local connection."""
        local = self._local.get(session_id, {})
        local.pop(sid, None)
        if not local:
            self._local.pop(session_id, None)
        self._redis.hdel(self._hash(session_id), f"{self.process_id}/{sid}")

    def snapshot(self, session_id: str) -> dict[str, object]:
        """Return the ``presence`` payload of a session, counting every live process."""
        entries, _dead = self._read(session_id)
        return _presence_payload(entries)

    def beat(self) -> list[str]:
        """Refresh the heartbeat, re-store local entries and delete those of dead processes.

        Local entries are written again on every beat, so presence recovers by itself after a
        Redis restart or a failed write.

        :return: the sessions whose presence changed, to notify.
        """
        key = self._process_key(self.process_id)
        previous = self._redis.set(key, "1", px=self._ttl_ms, get=True)
        if previous is None and self._beats > 0:
            logger.warning(
                "presence: the heartbeat of this process had expired (a Redis restart, or the "
                "process was paused); re-registering its connections in %d sessions",
                len(self._local),
            )
        self._beats += 1
        changed: set[str] = set(self._local) if previous is None else set()
        if self._local:
            pipeline = self._redis.pipeline(transaction=False)
            for session_id, entries in self._local.items():
                for entry in entries.values():
                    self._store(session_id, entry, pipeline)
            pipeline.execute()

        for session_id in self._sessions_with_entries():
            _entries, dead = self._read(session_id)
            if dead:
                self._redis.hdel(self._hash(session_id), *dead)
                logger.info(
                    "session %s: removed %d connections of processes that stopped beating",
                    session_id,
                    len(dead),
                )
                changed.add(session_id)
        return sorted(changed)

    def stop(self) -> list[str]:
        """Delete this process's entries and heartbeat; return the sessions to notify."""
        sessions = sorted(self._local)
        for session_id, entries in self._local.items():
            fields = [f"{self.process_id}/{sid}" for sid in entries]
            if fields:
                self._redis.hdel(self._hash(session_id), *fields)
        self._local.clear()
        self._redis.delete(self._process_key(self.process_id))
        return sessions

    def _sessions_with_entries(self) -> list[str]:
        """Return the sessions this process watches: those with local connections."""
        return list(self._local)

    def _store(
        self, session_id: str, entry: PresenceEntry, client: redis.Redis | None = None
    ) -> None:
        value = json.dumps(
            {
                "clientId": entry.client_id,
                "name": entry.name,
                "color": entry.color,
                "since": entry.since,
            }
        )
        target = self._redis.pipeline(transaction=False) if client is None else client
        target.hset(self._hash(session_id), f"{entry.process_id}/{entry.sid}", value)
        # Live processes renew the hash on every beat. A hash left only by dead processes
        # expires by itself, so sessions that nobody reopens leave no keys behind.
        target.pexpire(self._hash(session_id), 2 * self._ttl_ms)
        if client is None:
            target.execute()

    def _read(self, session_id: str) -> tuple[list[PresenceEntry], list[str]]:
        """Return the entries of live processes and the fields of dead ones."""
        raw = self._redis.hgetall(self._hash(session_id))
        if not raw:
            return [], []
        process_ids = sorted({field.split("/", 1)[0] for field in raw})
        beats = self._redis.mget([self._process_key(p) for p in process_ids])
        alive = {p for p, beat in zip(process_ids, beats, strict=True) if beat is not None}
        # This process counts as alive even between a missed beat and the next one.
        alive.add(self.process_id)

        entries, dead = [], []
        for field, value in raw.items():
            process_id, _, sid = field.partition("/")
            if process_id not in alive:
                dead.append(field)
                continue
            if process_id == self.process_id and sid not in self._local.get(session_id, {}):
                # A heartbeat rewrote an entry while its connection was closing.
                dead.append(field)
                continue
            try:
                data = json.loads(value)
                entries.append(
                    PresenceEntry(
                        process_id,
                        sid,
                        str(data["clientId"]),
                        str(data["name"]),
                        str(data["color"]),
                        float(data["since"]),
                    )
                )
            except (ValueError, KeyError, TypeError):
                logger.warning("session %s: ignored malformed presence entry %s", session_id, field)
        return entries, dead

    def _hash(self, session_id: str) -> str:
        return f"{self._prefix}:presence:{session_id}"

    def _process_key(self, process_id: str) -> str:
        return f"{self._prefix}:process:{process_id}"


def _presence_payload(entries: list[PresenceEntry]) -> dict[str, object]:
    """Return ``{"count", "users"}`` with one user per ``clientId``, as ``Presence`` does.

    Users are ordered by their first connection; the newest connection's name and colour win.
    """
    first_seen: dict[str, float] = {}
    newest: dict[str, PresenceEntry] = {}
    for entry in entries:
        first_seen[entry.client_id] = min(first_seen.get(entry.client_id, entry.since), entry.since)
        if entry.client_id not in newest or entry.since >= newest[entry.client_id].since:
            newest[entry.client_id] = entry
    ordered = sorted(first_seen, key=lambda client_id: (first_seen[client_id], client_id))
    users = [
        {"clientId": client_id, "name": newest[client_id].name, "color": newest[client_id].color}
        for client_id in ordered
    ]
    return {"count": len(users), "users": users}
