"""WebSocket handling of the gevent server: TCP_NODELAY and one write per Socket.IO event.

Socket.IO sends an event with binary data as several Engine.IO packets, so several WebSocket
frames: a text placeholder such as ``451-["sync",{"_placeholder":true,"num":0}]`` and then one
binary frame per attachment. gevent-websocket 0.10.1 writes each frame with its own
``sendall()``, and gevent's ``sendall()`` also makes a ``getsockopt()`` call and starts a timer
per call. A relayed edit thus cost two writes and two timers per peer, the largest share of the
server's CPU when it fans an edit out to a room.

``CoalescingWebSocket`` keeps a binary event's placeholder back until its attachments have been
queued, then writes all of its frames with one ``send()`` call. Other frames go out at once, as
before. ``try_write`` lets ``codecollab.fanout`` write a relayed event without the Engine.IO
queue. The server imports this module only in the gevent async mode.
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import Any

import gevent
from gevent.lock import Semaphore
from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import MSG_ALREADY_CLOSED, MSG_SOCKET_DEAD, WebSocket

logger = logging.getLogger(__name__)

FIN = 0x80
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2

# Engine.IO MESSAGE packet ("4") carrying a Socket.IO BINARY_EVENT ("5") or BINARY_ACK ("6").
BINARY_PACKET_PREFIXES = ("45", "46")


def encode_frame(message: str | bytes, binary: bool) -> bytes:
    """Return one unmasked, final WebSocket frame (server to client) carrying ``message``."""
    if binary:
        payload = bytes(message) if not isinstance(message, bytes) else message
        first = FIN | OPCODE_BINARY
    else:
        payload = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        first = FIN | OPCODE_TEXT
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def attachment_count(message: str) -> int:
    """Return how many binary frames follow ``message``, a text frame of Engine.IO.

    A Socket.IO binary packet is encoded as its type digit, the number of attachments and a
    hyphen, then the JSON with placeholders (Socket.IO protocol 5). Other messages return 0.
    """
    if not message.startswith(BINARY_PACKET_PREFIXES):
        return 0
    hyphen = message.find("-", 2)
    digits = message[2:hyphen]
    if hyphen < 0 or not digits.isdigit():
        return 0
    return int(digits)


class CoalescingWebSocket:
    """A gevent-websocket connection that writes a binary event's frames with one call.

    It wraps the handler's ``WebSocket``: sending goes through ``send`` below, and everything
    else (receiving, closing, attributes) goes to the wrapped connection.

    :param websocket: the connection gevent-websocket created for the request.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        # Frames of a binary event whose attachments have not all been sent yet.
        self._held: list[bytes] | None = None
        self._attachments_due = 0
        # Held while a write waits for the socket, so that writes never interleave.
        self._write_lock = Semaphore()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._websocket, name)

    def send(self, message: Any, binary: bool | None = None) -> None:
        """Send ``message`` as one frame, or hold it until its binary event is complete."""
        websocket = self._websocket
        if websocket.closed:
            websocket.current_app.on_close(MSG_ALREADY_CLOSED)
            raise WebSocketError(MSG_ALREADY_CLOSED)
        if binary is None:
            binary = not isinstance(message, str)
        frame = encode_frame(message, binary)

        if self._held is not None:
            self._held.append(frame)
            self._attachments_due -= 1
            if self._attachments_due > 0:
                return
            frame = b"".join(self._held)
            self._held = None
        elif not binary:
            due = attachment_count(message)
            if due > 0:
                self._held = [frame]
                self._attachments_due = due
                return
        self._write(frame)

    def try_write(self, frames: bytes) -> bool:
        """Write ``frames``, whole encoded messages, without waiting, unless writes are pending.

        Used to relay one message to many connections from one greenlet. Whatever the socket
        does not take at once is written by a new greenlet, and later writes wait for it.

        :return: ``False``, with nothing written, when the connection is closed, a binary event
            is held or another write waits for the socket: the caller must then send the
            message the usual way, after the pending ones.
        """
        if self._websocket.closed or self._held is not None or self._write_lock.locked():
            return False
        sock = self._websocket.handler.socket
        try:
            sent = sock.send(frames, 0, 0.0)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        if sent < len(frames):
            self._write_lock.acquire()
            gevent.spawn(self._write_rest, memoryview(frames)[sent:])
        return True

    def _write_rest(self, rest: memoryview) -> None:
        try:
            self._send_all(rest)
        except WebSocketError:
            logger.debug("failed to write a relayed message: the connection is gone")
        finally:
            self._write_lock.release()

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            self._send_all(memoryview(data))

    def _send_all(self, view: memoryview) -> None:
        # gevent's socket.send() waits for writability with the socket's timeout, like
        # sendall(), without the sendall()'s getsockopt() call and timer per call.
        sock = self._websocket.handler.socket
        try:
            sent = sock.send(view)
            while sent < len(view):
                sent += sock.send(view[sent:])
        except OSError:
            self._websocket.current_app.on_close(MSG_SOCKET_DEAD)
            raise WebSocketError(MSG_SOCKET_DEAD) from None


class NoDelayHandler(WebSocketHandler):
    """gevent-websocket's handler with TCP_NODELAY, handing ``CoalescingWebSocket`` to the app.

    Without TCP_NODELAY, Nagle's algorithm holds back a small write until the client's delayed
    ACK arrives, adding up to 40 ms to a relayed edit.
    """

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server, rfile)

    def upgrade_connection(self) -> Any:
        """Upgrade like gevent-websocket, then give the application the coalescing wrapper."""
        response = super().upgrade_connection()
        websocket = self.environ.get("wsgi.websocket")
        if response is None and isinstance(websocket, WebSocket):
            self.environ["wsgi.websocket"] = CoalescingWebSocket(websocket)
        return response
