"""WebSocket handling of the gevent server: TCP_NODELAY and writes without gevent's timers.

gevent-websocket 0.10.1 writes each frame with ``sendall()``, and gevent's ``sendall()`` also
makes a ``getsockopt()`` call and starts a timer per call. A relayed edit cost that for every
peer, a large share of the server's CPU when it fans an edit out to a room.
``DirectWebSocket`` writes each frame with ``send()`` calls instead, and ``try_write`` lets
``codecollab.fanout`` write a relayed event without the Engine.IO queue. The server imports
this module only in the gevent async mode.
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


class DirectWebSocket:
    """A gevent-websocket connection that writes with ``send()`` and can skip the Engine.IO queue.

    It wraps the handler's ``WebSocket``: sending goes through ``send`` below, and everything
    else (receiving, closing, attributes) goes to the wrapped connection.

    :param websocket: the connection gevent-websocket created for the request.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        # Held while a write waits for the socket, so that writes never interleave.
        self._write_lock = Semaphore()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._websocket, name)

    def send(self, message: Any, binary: bool | None = None) -> None:
        """Send ``message`` as one frame."""
        websocket = self._websocket
        if websocket.closed:
            websocket.current_app.on_close(MSG_ALREADY_CLOSED)
            raise WebSocketError(MSG_ALREADY_CLOSED)
        if binary is None:
            binary = not isinstance(message, str)
        with self._write_lock:
            self._send_all(memoryview(encode_frame(message, binary)))

    def try_write(self, frames: bytes) -> bool:
        """Write ``frames``, whole encoded messages, without waiting, unless writes are pending.

        Used to relay one message to many connections from one greenlet. Whatever the socket
        does not take at once is written by a new greenlet, and later writes wait for it.

        :return: ``False``, with nothing written, when the connection is closed or another
            write waits for the socket: the caller must then send the message the usual way,
            after the pending ones.
        """
        if self._websocket.closed or self._write_lock.locked():
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
    """gevent-websocket's handler with TCP_NODELAY, handing ``DirectWebSocket`` to the app.

    Without TCP_NODELAY, Nagle's algorithm holds back a small write until the client's delayed
    ACK arrives, adding up to 40 ms to a relayed edit.
    """

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server, rfile)

    def upgrade_connection(self) -> Any:
        """Upgrade like gevent-websocket, then give the application the direct-write wrapper."""
        response = super().upgrade_connection()
        websocket = self.environ.get("wsgi.websocket")
        if response is None and isinstance(websocket, WebSocket):
            self.environ["wsgi.websocket"] = DirectWebSocket(websocket)
        return response
