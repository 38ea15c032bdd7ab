"""Several editor processes serving the same sessions, through a Redis message queue.

Flask-SocketIO's message queue relays events to *clients* of every process, but never to the
server code of the other processes. Each process keeps its own pycrdt ``Doc`` of every loaded
session, so ``ClusterManager`` (the Socket.IO client manager) also hands every event that
arrives from another process to this process before it delivers it to local clients:

- a ``sync`` update is applied to the local ``Doc`` first, then delivered. A newcomer whose
  sync step 2 is computed from the ``Doc`` therefore either finds the update in it or receives
  it as a relayed message, never neither;
- an ``awareness`` update goes into the local awareness registry, so a newcomer on this process
  sees the users of the other processes at once;
- the ``presence-changed`` notification is not delivered to clients: each process reads the
  session's presence from Redis and sends it to its own clients.

An update from a local client is applied to the local ``Doc``, emitted (delivered to local
clients and published to the other processes), then committed to the shared storage, exactly
as in a single process. Another process that has the session loaded applies it at once. One
that loads the session later reads it from storage, except in the short window between the
publish and the commit: updates for sessions that are not loaded are therefore kept for
``PENDING_WINDOW`` seconds (``PendingUpdates``) and applied to a room right after it is loaded.
The load holds the room manager's lock, which the queue listener waits for before it looks the
session up, so every update is either applied by the load or to the loaded room.

Presence counts users across processes: see ``cluster_presence``.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis
import socketio
from flask_socketio import SocketIO
from socketio.packet import Packet

from codecollab.cluster_presence import ClusterPresence
from codecollab.documents import Room, RoomManager
from codecollab.presence import Participant
from codecollab.storage import StorageError
from codecollab.transport import room_name
from codecollab.yprotocol import (
    ProtocolError,
    SyncMessageType,
    decode_awareness_update,
    decode_sync_message,
    encode_sync_message,
)

logger = logging.getLogger(__name__)

# Seconds an update relayed for a session that is not loaded here is kept for a later load: the
# time another process may take between publishing an update and committing it.
# NOTE: a commit slower than this, during which this process loads the session, leaves the
# update out of this process's copy until the session is unloaded and loaded again.
PENDING_WINDOW = 30.0
# Upper bound of the bytes kept by ``PendingUpdates``; the oldest updates are dropped first.
PENDING_MAX_BYTES = 16 * 1024 * 1024
# Socket.IO rooms of sessions are named by ``transport.room_name``.
SESSION_ROOM_PREFIX = room_name("")
# Event published to every process when a session's presence changed; never sent to clients.
PRESENCE_CHANGED = "codecollab:presence-changed"

RemoteUpdateHandler = Callable[[str, bytes], None]
RemoteAwarenessHandler = Callable[[str, bytes, "str | None"], None]
PresenceChangedHandler = Callable[[str], None]


def session_of_room(room: object) -> str | None:
    """Return the session id of a Socket.IO room name, or ``None`` for other rooms."""
    if isinstance(room, str) and room.startswith(SESSION_ROOM_PREFIX):
        return room[len(SESSION_ROOM_PREFIX) :]
    return None


class ClusterManager(socketio.RedisManager):
    """Socket.IO client manager that also feeds remote events to this process's documents.

    :param url: Redis URL of the message queue (``CODECOLLAB_MESSAGE_QUEUE``).
    :param channel: Redis pub/sub channel shared by the processes of one deployment.
    """

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel=channel)
        self.on_remote_update: RemoteUpdateHandler | None = None
        self.on_remote_awareness: RemoteAwarenessHandler | None = None
        self.on_presence_changed: PresenceChangedHandler | None = None

    def _handle_emit(self, message: dict[str, Any]) -> None:
        session_id = session_of_room(message.get("room"))
        event = message.get("event")
        if session_id is not None and event == PRESENCE_CHANGED:
            if self.on_presence_changed is not None:
                self.on_presence_changed(session_id)
            return

        remote = message.get("host_id") != self.host_id
        if session_id is not None and remote and event in ("sync", "awareness"):
            try:
                self._feed_local_documents(session_id, event, message)
            except Exception:
                # Delivery to the clients goes on; the periodic resync repairs this copy.
                logger.exception(
                    "session %s: failed to apply a %s message from another process",
                    session_id,
                    event,
                )
        super()._handle_emit(message)

    def _feed_local_documents(self, session_id: str, event: str, message: dict[str, Any]) -> None:
        payload = _binary_payload(message)
        if payload is None:
            return
        if event == "sync" and self.on_remote_update is not None:
            try:
                sync = decode_sync_message(payload)
            except ProtocolError as exc:
                logger.warning("session %s: undecodable sync message relayed: %s", session_id, exc)
                return
            if sync.type is SyncMessageType.UPDATE:
                self.on_remote_update(session_id, sync.payload)
        elif event == "awareness" and self.on_remote_awareness is not None:
            self.on_remote_awareness(session_id, payload, message.get("skip_sid"))


class PendingUpdates:
    """Updates relayed for sessions that are not loaded, kept for ``PENDING_WINDOW`` seconds.

    :param clock: monotonic time source, in seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (arrival time, session id, update), oldest first.
        self._entries: deque[tuple[float, str, bytes]] = deque()
        self._bytes = 0

    def add(self, session_id: str, update: bytes) -> None:
        """Keep ``update`` of ``session_id``, dropping expired and excess entries."""
        self._entries.append((self._clock(), session_id, update))
        self._bytes += len(update)
        self._expire()

    def pop(self, session_id: str) -> list[bytes]:
        """Return and forget the unexpired updates of ``session_id``, oldest first."""
        self._expire()
        updates = [update for _at, sid, update in self._entries if sid == session_id]
        if updates:
            self._entries = deque(entry for entry in self._entries if entry[1] != session_id)
            self._bytes -= sum(len(update) for update in updates)
        return updates

    def _expire(self) -> None:
        horizon = self._clock() - PENDING_WINDOW
        while self._entries and (self._entries[0][0] < horizon or self._bytes > PENDING_MAX_BYTES):
            _at, _sid, update = self._entries.popleft()
            self._bytes -= len(update)


def _binary_payload(message: dict[str, Any]) -> bytes | None:
    """Return the single binary argument of a relayed emit, or ``None`` when it has another form."""
    data = message.get("data")
    if not message.get("binary") or not isinstance(data, list) or not data:
        return None
    attachments = [base64.b64decode(item) for item in data[1:]]
    arguments = Packet.reconstruct_binary(data[0], attachments)
    if isinstance(arguments, list) and len(arguments) == 1 and isinstance(arguments[0], bytes):
        return arguments[0]
    return None


class ClusterNode:
    """This process's part in a deployment of several editor processes.

    It wires the Socket.IO manager, the rooms and Redis presence together: it applies remote
    updates and awareness to the local rooms, publishes local updates once they are stored,
    and sends each session's cross-process presence to the local clients.

    :param socketio: the Flask-SocketIO server, created with ``manager`` as client manager.
    :param manager: the Socket.IO client manager on the Redis message queue.
    :param presence: users across processes.
    :param rooms: this process's documents.
    """

    def __init__(
        self,
        socketio: SocketIO,
        manager: ClusterManager,
        presence: ClusterPresence,
        rooms: RoomManager,
    ) -> None:
        self._socketio = socketio
        self._manager = manager
        self.presence = presence
        self._rooms = rooms
        self._stopping = False
        manager.on_remote_update = self._apply_remote_update
        manager.on_remote_awareness = self._apply_remote_awareness
        manager.on_presence_changed = self._send_presence
        rooms.on_load = self._apply_pending
        self._pending = PendingUpdates()

    @property
    def process_id(self) -> str:
        """Id of this process in the message queue and in presence keys."""
        return self._manager.host_id

    def start_listening(self) -> None:
        """Start receiving from the message queue now, not at the first Socket.IO connection.

        python-socketio starts its queue listener when the first client connects, but a room
        loaded for an HTTP request must receive the other processes' updates too.
        """
        server = self._socketio.server
        if not server.manager_initialized:
            server.manager_initialized = True
            self._manager.initialize()

    # Presence

    def joined(self, session_id: str, participant: Participant) -> None:
        """Register a local connection and notify every process."""
        try:
            self.presence.add(session_id, participant)
        except redis.RedisError as exc:
            # The next heartbeat writes the local entries again.
            logger.error("session %s: failed to update presence in Redis: %s", session_id, exc)
        self.notify_presence(session_id)

    def renamed(self, session_id: str, participant: Participant) -> None:
        """Store a local connection's new name or colour and notify every process."""
        try:
            self.presence.rename(session_id, participant)
        except redis.RedisError as exc:
            # The next heartbeat writes the local entries again.
            logger.error("session %s: failed to update presence in Redis: %s", session_id, exc)
        self.notify_presence(session_id)

    def left(self, session_id: str, sid: str) -> None:
        """Unregister a local connection and notify every process."""
        try:
            self.presence.remove(session_id, sid)
        except redis.RedisError as exc:
            # The next heartbeat writes the local entries again.
            logger.error("session %s: failed to update presence in Redis: %s", session_id, exc)
        self.notify_presence(session_id)

    def notify_presence(self, session_id: str) -> None:
        """Make every process, this one included, send the session's presence to its clients."""
        self._socketio.emit(PRESENCE_CHANGED, session_id, to=room_name(session_id))

    def _send_presence(self, session_id: str) -> None:
        if self._rooms.loaded(session_id) is None:
            return
        try:
            snapshot = self.presence.snapshot(session_id)
        except redis.RedisError as exc:
            logger.error("session %s: failed to read presence from Redis: %s", session_id, exc)
            return
        self._socketio.emit("presence", snapshot, to=room_name(session_id), ignore_queue=True)

    def beat_forever(self) -> None:
        """Refresh the heartbeat every ``presence.heartbeat`` seconds until ``stop()``."""
        while not self._stopping:
            try:
                for session_id in self.presence.beat():
                    self.notify_presence(session_id)
            except redis.RedisError as exc:
                logger.error(
                    "presence heartbeat failed: %s; retrying in %.1f s",
                    exc,
                    self.presence.heartbeat,
                )
            self._socketio.sleep(self.presence.heartbeat)

    def stop(self) -> None:
        """Remove this process's connections from presence, so the others drop them at once."""
        self._stopping = True
        try:
            for session_id in self.presence.stop():
                self.notify_presence(session_id)
        except redis.RedisError as exc:
            logger.error("failed to remove this process from presence: %s", exc)

    # Documents

    def resync_forever(self, interval: float) -> None:
        """Recover stored updates that the message queue lost, every ``interval`` seconds."""
        while not self._stopping:
            self._socketio.sleep(interval)
            for session_id in self._rooms.loaded_session_ids():
                room = self._rooms.loaded(session_id)
                if room is None:
                    continue
                try:
                    update = self._rooms.refresh_from_storage(room)
                except StorageError as exc:
                    logger.error("session %s: resync from storage failed: %s", session_id, exc)
                    continue
                if update is None:
                    continue
                logger.warning(
                    "session %s: recovered %d bytes of updates that the message queue did not "
                    "deliver",
                    session_id,
                    len(update),
                )
                self._socketio.emit(
                    "sync",
                    encode_sync_message(SyncMessageType.UPDATE, update),
                    to=room_name(session_id),
                    ignore_queue=True,
                )

    def _apply_remote_update(self, session_id: str, update: bytes) -> None:
        if not self._rooms.apply_remote_update(session_id, update):
            self._pending.add(session_id, update)

    def _apply_pending(self, room: Room) -> None:
        updates = self._pending.pop(room.session_id)
        for update in updates:
            try:
                room.doc.apply_update(update)
            except ValueError as exc:
                logger.error("session %s: skipped a pending update: %s", room.session_id, exc)
        if updates:
            room.size_bytes = len(room.doc.get_update())
            logger.debug(
                "session %s: applied %d updates relayed while it was not loaded",
                room.session_id,
                len(updates),
            )

    def _apply_remote_awareness(self, session_id: str, data: bytes, origin: str | None) -> None:
        room = self._rooms.loaded(session_id)
        if room is None:
            return
        try:
            entries = decode_awareness_update(data)
        except ProtocolError as exc:
            logger.warning("session %s: undecodable awareness relayed: %s", session_id, exc)
            return
        with room.lock:
            # NOTE: the registry keeps the awareness ids each remote connection sent until the
            # room is unloaded. The states themselves go with the removal update.
            room.awareness.apply(entries, origin or "remote")
