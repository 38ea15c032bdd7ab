"""Relay of one binary Socket.IO event to a room, written straight to each peer's socket.

python-socketio 5.18 encodes a room broadcast once, then for every peer queues its Engine.IO
packet on the peer's Engine.IO socket, whose own writer greenlet wakes up, drains the queue and
writes. With 100 peers that queueing and waking cost more server CPU than the writes.
``DirectFanout`` instead encodes the event's WebSocket frame once and writes it to each peer in
the relaying greenlet.

A peer gets the direct write only when that keeps its messages in order: its connection
started on the WebSocket transport (so its socket is a ``DirectWebSocket``), its Engine.IO
queue is empty and no earlier write is in progress. Otherwise, and in every async mode other
than gevent, the caller emits to that peer the usual way.

NOTE: this reads python-engineio's per-connection state (``Server.sockets`` and each socket's
``queue``, ``upgraded``, ``closing`` and ``closed``), which is not public API.
``tests/codecollab/test_fanout.py`` fails if the pinned versions change it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import engineio.packet
import socketio.packet

logger = logging.getLogger(__name__)

NAMESPACE = "/"


class DirectWriter(Protocol):
    """A connection that can take a whole encoded message without queueing it."""

    def try_write(self, frames: bytes) -> bool:
        """Write ``frames`` now, or return ``False`` when the caller must queue them."""
        ...


def encode_event_frame(
    packet_class: type[socketio.packet.Packet], event: str, data: bytes
) -> bytes:
    """Return the WebSocket frame of the Socket.IO event ``event`` with binary ``data``.

    These are the bytes python-socketio and gevent-websocket would write for
    ``emit(event, data)`` on the default namespace with the MessagePack serializer
    ``packet_class``: one Engine.IO MESSAGE packet, so one binary frame.
    """
    # Imported here: that module imports gevent, which only the gevent async mode may load.
    from codecollab.gevent_websocket import encode_frame

    packet = packet_class(socketio.packet.EVENT, data=[event, data], namespace=NAMESPACE)
    message = engineio.packet.Packet(engineio.packet.MESSAGE, data=packet.encode()).encode()
    return encode_frame(message, binary=True)


class DirectFanout:
    """Writes room broadcasts of binary events straight to the peers' WebSocket connections.

    :param server: the python-socketio server whose rooms and Engine.IO sockets are used.
    """

    def __init__(self, server: Any) -> None:
        self._server = server
        self._writers: dict[str, DirectWriter] = {}

    def register(self, sid: str, websocket: Any) -> None:
        """Use direct writes for ``sid`` when its WebSocket connection supports them."""
        if callable(getattr(websocket, "try_write", None)):
            self._writers[sid] = websocket

    def unregister(self, sid: str) -> None:
        """Forget ``sid``'s connection."""
        self._writers.pop(sid, None)

    def emit(self, event: str, data: bytes, room: str, skip_sid: str | None) -> list[str]:
        """Send ``event`` with ``data`` to every member of ``room`` except ``skip_sid``.

        :return: the members that were not written to, for the caller to emit to the usual way.
        """
        sockets = self._server.eio.sockets
        frame: bytes | None = None
        queued: list[str] = []
        for sid, eio_sid in self._server.manager.get_participants(NAMESPACE, room):
            if sid == skip_sid:
                continue
            writer = self._writers.get(sid)
            eio_socket = sockets.get(eio_sid)
            if writer is None or eio_socket is None or not _idle(eio_socket):
                queued.append(sid)
                continue
            if frame is None:
                frame = encode_event_frame(self._server.packet_class, event, data)
            if not writer.try_write(frame):
                queued.append(sid)
        return queued


def _idle(eio_socket: Any) -> bool:
    """Return whether ``eio_socket`` is an open WebSocket connection with nothing queued."""
    return (
        eio_socket.upgraded
        and not eio_socket.closing
        and not eio_socket.closed
        and eio_socket.queue.qsize() == 0
    )
