"""Socket.IO transport: connection handshake, the ``sync`` and ``awareness`` events, presence.

The wire protocol is described in ``docs/protocol.md``. In short: a client connects with
``auth = {session, clientId, name}``, the server sends its sync step 1, every stored awareness
state and the room's presence, and from then on ``sync`` and ``awareness`` carry binary
y-protocols messages both ways. Each client ``sync`` message is acknowledged with
``{"ok": true}`` only after the server applied and stored it. A failure is acknowledged with
``{"ok": false, "error": code, "message": text}`` and also arrives as an ``error`` event.

Messages are rate-limited per connection. Over the limit, a message waits for a token, so no
edit is dropped.
A connection that keeps hitting its limit for ``CODECOLLAB_SOCKET_FLOOD_SECONDS`` (with no
second-long pause) is disconnected. On reconnecting, the sync handshake sends everything the
server lacks.

Handlers of one connection run one at a time, in arrival order, so a waiting message also
holds back that connection's later messages, and only that connection's.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
from flask import request
from flask_socketio import ConnectionRefusedError, SocketIO, emit, join_room
from redis import RedisError

from codecollab.config import Settings
from codecollab.documents import Room, RoomManager
from codecollab.errors import EditorError, InvalidMessage, MessageTooLarge, RateLimited
from codecollab.fanout import DirectFanout
from codecollab.presence import Participant, clean_color, clean_display_name, color_for
from codecollab.session_ids import is_valid_client_id, session_id_problem
from codecollab.throttling import Limits
from codecollab.yprotocol import (
    ProtocolError,
    SyncMessageType,
    decode_awareness_update,
    decode_sync_message,
    encode_awareness_update,
    encode_sync_message,
)

if TYPE_CHECKING:
    from codecollab.cluster import ClusterNode

logger = logging.getLogger(__name__)

# Joins, leaves and renames within this many seconds share one presence event per session.
PRESENCE_DELAY = 0.1
# A run of rate-limited messages ends after this many seconds without one.
FLOOD_PAUSE = 1.0
# Seconds between two rate_limited error events to the same connection.
RATE_LIMIT_NOTICE_INTERVAL = 1.0
# Errors of one connection logged at WARNING before the rest go to DEBUG.
LOGGED_ERRORS_PER_CONNECTION = 5


@dataclass
class Connection:
    """One live Socket.IO connection and the room it joined."""

    sid: str
    session_id: str
    client_id: str
    ip: str
    room: Room
    # Start of the current run of rate-limited messages (monotonic seconds), and the last one.
    limited_since: float | None = None
    last_limited: float = 0.0
    last_limit_notice: float = 0.0
    errors: int = 0
    closed: bool = False


def room_name(session_id: str) -> str:
    """Return the Socket.IO room of a session."""
    return f"session:{session_id}"


class EditorTransport:
    """The Socket.IO event handlers of the editor.

    :param socketio: the server the handlers are registered on (default namespace).
    :param rooms: the documents the handlers read and change.
    :param limits: the connection and message rate limiters.
    :param settings: size caps and throttling settings.
    :param cluster: set when several editor processes share a message queue; presence then
        counts the users of every process.
    """

    def __init__(
        self,
        socketio: SocketIO,
        rooms: RoomManager,
        limits: Limits,
        settings: Settings,
        cluster: ClusterNode | None = None,
    ) -> None:
        self._socketio = socketio
        self._rooms = rooms
        self._limits = limits
        self._settings = settings
        self._cluster = cluster
        self._connections: dict[str, Connection] = {}
        # Direct writes need the gevent server's WebSocket connections. With a message queue,
        # every broadcast must go through Flask-SocketIO's emit, which publishes it to the
        # other processes.
        direct = settings.async_mode == "gevent" and cluster is None
        self._fanout = DirectFanout(socketio.server) if direct else None
        # Sessions with a presence event scheduled, guarded by the lock.
        self._presence_pending: set[str] = set()
        self._presence_lock = threading.Lock()

        rooms.on_update = self._relay_update
        socketio.on_event("connect", self.on_connect)
        socketio.on_event("disconnect", self.on_disconnect)
        # These two events carry every edit and cursor move, and their handlers need no Flask
        # request context. Flask-SocketIO pushes one per event, which took about 0.2 ms of the
        # 0.4 ms between an edit's arrival and its relay, so python-socketio calls them directly.
        socketio.server.on("sync", self.on_sync)
        socketio.server.on("awareness", self.on_awareness)

    def connection_count(self) -> int:
        """Return the number of live connections."""
        return len(self._connections)

    def presence_of(self, room: Room) -> dict[str, Any]:
        """Return the ``presence`` payload of a room: users of every process when clustered."""
        if self._cluster is not None:
            try:
                return self._cluster.presence.snapshot(room.session_id)
            except RedisError as exc:
                logger.error(
                    "session %s: failed to read presence from Redis, counting this process's "
                    "users only: %s",
                    room.session_id,
                    exc,
                )
        with room.lock:
            return room.presence.snapshot()

    # Connection lifecycle

    def on_connect(self, auth: Any = None) -> None:
        """Validate the handshake, join the session's room and send the initial state."""
        sid = request.sid  # type: ignore[attr-defined]
        ip = self._limits.client_ip.from_environ(request.environ)

        decision = self._limits.connect.check(ip)
        if not decision.allowed:
            logger.warning("rejected connection from %s: connection rate limit exceeded", ip)
            raise ConnectionRefusedError(
                f"Too many connection attempts from {ip}; retry in "
                f"{max(decision.retry_after, 1):.0f} s",
                {"code": "rate_limited", "retry_after": decision.retry_after},
            )

        session_id, client_id, name = self._parse_auth(auth, ip)
        participant = Participant(sid, client_id, name, color_for(client_id))
        try:
            room = self._rooms.join(session_id, participant)
        except EditorError as exc:
            raise ConnectionRefusedError(str(exc), {"code": exc.code}) from None

        self._connections[sid] = Connection(sid, session_id, client_id, ip, room)
        join_room(room_name(session_id))
        if self._fanout is not None:
            self._fanout.register(sid, request.environ.get("wsgi.websocket"))
        emit("sync", encode_sync_message(SyncMessageType.STEP1, room.state_vector()))
        with room.lock:
            awareness = room.awareness.snapshot()
            presence = room.presence.snapshot()
        if awareness is not None:
            emit("awareness", awareness)
        if self._cluster is not None:
            self._cluster.joined(session_id, participant)
        else:
            emit("presence", presence)
            self._schedule_presence(room)
        logger.info(
            "client connected: session=%s sid=%s client=%s ip=%s users=%d",
            session_id,
            sid,
            client_id,
            ip,
            presence["count"],
        )

    def on_disconnect(self, reason: Any = None) -> None:
        """Remove the connection's awareness states and update the room's presence."""
        sid = request.sid  # type: ignore[attr-defined]
        connection = self._connections.pop(sid, None)
        if connection is None:
            return
        connection.closed = True
        if self._fanout is not None:
            self._fanout.unregister(sid)
        room = connection.room
        _participant, removal = self._rooms.leave(room, sid)
        with room.lock:
            presence = room.presence.snapshot()
        target = room_name(connection.session_id)
        if removal is not None:
            self._socketio.emit("awareness", removal, to=target, skip_sid=sid)
        if self._cluster is not None:
            self._cluster.left(connection.session_id, sid)
        else:
            self._schedule_presence(room)
        logger.info(
            "client disconnected: session=%s sid=%s client=%s reason=%s users=%d",
            connection.session_id,
            sid,
            connection.client_id,
            reason,
            presence["count"],
        )

    def _parse_auth(self, auth: Any, ip: str) -> tuple[str, str, str]:
        if not isinstance(auth, dict):
            self._refuse(ip, "invalid_auth", "Connect with auth {session, clientId, name}")
        session_id = auth.get("session")
        problem = session_id_problem(session_id)
        if problem is not None:
            self._refuse(ip, "invalid_session", f"Invalid session id {session_id!r}: {problem}")
        client_id = auth.get("clientId")
        if not is_valid_client_id(client_id):
            self._refuse(
                ip,
                "invalid_client_id",
                f"Invalid clientId {client_id!r}: use 1 to 64 letters, digits, '-' or '_'",
            )
        return session_id, client_id, clean_display_name(auth.get("name"))

    def _refuse(self, ip: str, code: str, message: str) -> None:
        logger.warning("rejected connection from %s: %s", ip, message)
        raise ConnectionRefusedError(message, {"code": code})

    # Events

    def on_sync(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        """Handle a sync step 1 (reply with step 2), step 2 or update (apply and store)."""
        connection = self._connections.get(sid)
        if connection is None:
            return _failure(EditorError("Not connected to a session"))
        try:
            self._admit(connection)
            _expect_one_argument("sync", extra)
            message = self._decode(data, decode_sync_message)
            if message.type is SyncMessageType.STEP1:
                missing = connection.room.update_since(message.payload)
                self._emit_to(sid, "sync", encode_sync_message(SyncMessageType.STEP2, missing))
            else:
                self._rooms.apply_update(connection.room, message.payload, origin=connection.sid)
        except EditorError as exc:
            self._report(connection, exc)
            return _failure(exc)
        except Exception:
            logger.exception(
                "session %s: sid=%s sync failed", connection.session_id, connection.sid
            )
            failure = EditorError("The server failed to process this message")
            self._emit_to(sid, "error", failure.payload())
            return _failure(failure)
        return {"ok": True}

    def on_awareness(self, sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
        """Store the sender's awareness states and relay them to the rest of the room."""
        connection = self._connections.get(sid)
        if connection is None:
            return _failure(EditorError("Not connected to a session"))
        try:
            self._admit(connection)
            _expect_one_argument("awareness", extra)
            if isinstance(data, bytes) and len(data) > self._settings.awareness_max_bytes:
                raise MessageTooLarge(
                    f"The awareness update has {len(data):,} bytes; the limit is "
                    f"{self._settings.awareness_max_bytes:,} bytes"
                )
            entries = self._decode(data, decode_awareness_update)
        except EditorError as exc:
            self._report(connection, exc)
            return _failure(exc)

        room = connection.room
        with room.lock:
            change = room.awareness.apply(entries, connection.sid)
            presence = None
            renamed = None
            if self._update_user(room, connection.sid, change.latest_state):
                presence = room.presence.snapshot()
                renamed = room.presence.get(connection.sid)
        target = room_name(connection.session_id)
        if change.accepted:
            relay = data if len(change.accepted) == len(entries) else None
            relay = relay or encode_awareness_update(change.accepted)
            self._broadcast("awareness", relay, target, skip_sid=connection.sid)
        if self._cluster is not None and renamed is not None:
            self._cluster.renamed(connection.session_id, renamed)
        elif presence is not None:
            self._schedule_presence(room)
        return {"ok": True}

    def _schedule_presence(self, room: Room) -> None:
        """Send the room's presence to all its connections ``PRESENCE_DELAY`` seconds from now.

        Changes within the delay share one event, so a crowd joining at once costs a few
        room-wide events instead of one per join, each listing every user.
        """
        with self._presence_lock:
            if room.session_id in self._presence_pending:
                return
            self._presence_pending.add(room.session_id)
        self._socketio.start_background_task(self._emit_presence_later, room)

    def _emit_presence_later(self, room: Room) -> None:
        self._socketio.sleep(PRESENCE_DELAY)
        with self._presence_lock:
            self._presence_pending.discard(room.session_id)
        with room.lock:
            presence = room.presence.snapshot()
        self._socketio.emit("presence", presence, to=room_name(room.session_id))

    def _update_user(self, room: Room, sid: str, state: object) -> bool:
        # y-codemirror.next reads the user's name and colour from awareness `user`; the
        # presence list follows it, so renaming in the page renames everywhere.
        if not isinstance(state, dict) or not isinstance(state.get("user"), dict):
            return False
        user = state["user"]
        name = clean_display_name(user["name"]) if "name" in user else None
        return room.presence.update_user(sid, name, clean_color(user.get("color")))

    def _relay_update(self, room: Room, update: bytes, origin: str | None) -> None:
        message = encode_sync_message(SyncMessageType.UPDATE, update)
        self._broadcast("sync", message, room_name(room.session_id), skip_sid=origin)

    def _broadcast(self, event: str, data: bytes, target: str, skip_sid: str | None) -> None:
        """Send a binary event to every connection of the room ``target`` but ``skip_sid``."""
        if self._fanout is None:
            self._socketio.emit(event, data, to=target, skip_sid=skip_sid)
            return
        queued = self._fanout.emit(event, data, target, skip_sid)
        if queued:
            # Every connection is also a room of its own sid.
            self._socketio.emit(event, data, to=queued)

    # Rate limiting

    def _admit(self, connection: Connection) -> None:
        """Return once the connection may send one more message.

        Over the limit, the handler sleeps until a token is free. Handlers of one connection
        run one at a time, so this also stops reading that connection's socket: a flooder
        fills its own TCP buffer instead of the server's CPU. A connection whose messages keep
        being limited for ``socket_flood_seconds``, with no pause of ``FLOOD_PAUSE`` seconds,
        is disconnected.

        :raises RateLimited: when the connection was disconnected.
        """
        decision = self._limits.messages.check(connection.sid)
        while not decision.allowed:
            self._note_limited(connection)
            self._notify_limited(connection, decision.retry_after)
            self._socketio.sleep(max(decision.retry_after, 0.001))
            if connection.closed:
                raise RateLimited("Disconnected for sending too many messages")
            decision = self._limits.messages.check(connection.sid)

    def _note_limited(self, connection: Connection) -> None:
        now = time.monotonic()
        if connection.limited_since is None or now - connection.last_limited > FLOOD_PAUSE:
            connection.limited_since = now
        connection.last_limited = now
        if now - connection.limited_since > self._settings.socket_flood_seconds:
            self._disconnect_flooder(connection)

    def _notify_limited(self, connection: Connection, retry_after: float) -> None:
        now = time.monotonic()
        if now - connection.last_limit_notice < RATE_LIMIT_NOTICE_INTERVAL:
            return
        connection.last_limit_notice = now
        logger.warning(
            "session %s: sid=%s ip=%s exceeds the message rate limit %s",
            connection.session_id,
            connection.sid,
            connection.ip,
            self._settings.socket_rate_limit,
        )
        self._emit_to(
            connection.sid,
            "error",
            {
                "code": RateLimited.code,
                "message": (
                    f"Too many messages (limit {self._settings.socket_rate_limit}); "
                    f"your edits are delayed, retry in {retry_after:.1f} s"
                ),
            },
        )

    def _disconnect_flooder(self, connection: Connection) -> None:
        if not connection.closed:
            logger.warning(
                "session %s: disconnecting sid=%s ip=%s for flooding",
                connection.session_id,
                connection.sid,
                connection.ip,
            )
            self._emit_to(
                connection.sid,
                "error",
                {
                    "code": RateLimited.code,
                    "message": (
                        "Disconnected for sending too many messages. Reconnect to continue: "
                        "edits not yet acknowledged are sent again after reconnecting."
                    ),
                },
            )
            connection.closed = True
            # Closing the Socket.IO session leaves the Engine.IO connection open, and a flooder
            # that ignores the DISCONNECT packet would keep the server reading its messages.
            eio_sid = self._socketio.server.manager.eio_sid_from_sid(connection.sid, "/")
            self._socketio.server.disconnect(connection.sid, namespace="/")
            if eio_sid is not None:
                self._socketio.server.eio.disconnect(eio_sid)
        raise RateLimited("Disconnected for sending too many messages")

    # Errors

    def _decode(self, data: Any, decoder: Any) -> Any:
        if not isinstance(data, bytes):
            hint = ""
            if isinstance(data, msgpack.ExtType):
                # socket.io-msgpack-parser sends a Node.js Uint8Array that is not a Buffer
                # as an extension type, with the whole underlying ArrayBuffer in it.
                hint = "; send a Buffer or an ArrayBuffer, which MessagePack encodes as bin"
            raise InvalidMessage(
                f"Expected a binary y-protocols message, got {type(data).__name__}{hint}"
            )
        try:
            return decoder(data)
        except ProtocolError as exc:
            raise InvalidMessage(f"The message could not be decoded: {exc}") from None

    def _report(self, connection: Connection, exc: EditorError) -> None:
        connection.errors += 1
        level = (
            logging.WARNING if connection.errors <= LOGGED_ERRORS_PER_CONNECTION else logging.DEBUG
        )
        logger.log(
            level,
            "session %s: sid=%s %s: %s",
            connection.session_id,
            connection.sid,
            exc.code,
            exc,
        )
        if not isinstance(exc, RateLimited):
            self._emit_to(connection.sid, "error", exc.payload())

    def _emit_to(self, sid: str, event: str, data: Any) -> None:
        """Send ``event`` to the connection ``sid`` alone."""
        self._socketio.emit(event, data, to=sid)


def _expect_one_argument(event: str, extra: tuple[Any, ...]) -> None:
    """Raise ``InvalidMessage`` when an event arrived with arguments after its payload."""
    if extra:
        raise InvalidMessage(
            f"The {event} event takes one binary argument, got {len(extra) + 1}; send the "
            "y-protocols message alone"
        )


def _failure(exc: EditorError) -> dict[str, Any]:
    return {"ok": False, "error": exc.code, "message": str(exc)}
