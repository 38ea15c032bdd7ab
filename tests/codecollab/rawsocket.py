"""A bare Engine.IO/Socket.IO client over one WebSocket, for tests that need to misbehave.

python-socketio always answers pings and closes politely. This client does only what a test
tells it: it can vanish without a close frame (a crashed tab) or stop answering pings while
keeping the TCP connection open (a network that silently drops).

Socket.IO packets are MessagePack, as the editor's server expects: each is one binary
WebSocket frame, which Engine.IO 4 reads as a MESSAGE, holding a map of ``type``, ``nsp``,
``data`` and ``id``. Engine.IO's own packets (open, ping, pong) stay text.
"""

from __future__ import annotations

import socket
from typing import Any

import msgpack
import websocket

CONNECT = 0
EVENT = 2
CONNECT_ERROR = 4


class RawSocketIOClient:
    """A Socket.IO client on the default namespace, driven by hand."""

    def __init__(
        self, port: int, auth: dict[str, Any], sockopt: tuple[tuple[int, int, int], ...] = ()
    ) -> None:
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket",
            timeout=10,
            sockopt=sockopt,
        )
        opening = self.ws.recv()
        if not opening.startswith("0"):
            raise AssertionError(f"expected an Engine.IO open packet, got {opening!r}")
        self.send_packet(CONNECT, auth)
        while True:
            packet = self.ws.recv()
            if not isinstance(packet, bytes):
                continue
            decoded = decode_packet(packet)
            if decoded["type"] == CONNECT:
                return
            if decoded["type"] == CONNECT_ERROR:
                raise AssertionError(f"connection rejected: {decoded}")

    def send_packet(self, packet_type: int, data: Any) -> None:
        """Send one Socket.IO packet on the default namespace."""
        self.ws.send_binary(encode_packet(packet_type, data))

    def emit(self, event: str, *args: Any) -> None:
        """Send the event ``event`` with ``args``, without an acknowledgement."""
        self.send_packet(EVENT, [event, *args])

    def vanish(self) -> None:
        """Close the TCP connection without a WebSocket close frame, like a killed tab."""
        self.ws.sock.shutdown(socket.SHUT_RDWR)
        self.ws.sock.close()

    def close(self) -> None:
        """Close the WebSocket with a close frame, like a closed tab."""
        self.ws.close()


def encode_packet(packet_type: int, data: Any) -> bytes:
    """Return the binary frame of a Socket.IO packet on the default namespace."""
    return msgpack.packb({"type": packet_type, "nsp": "/", "data": data})


def decode_packet(frame: bytes) -> dict[str, Any]:
    """Return the map of the Socket.IO packet in a binary frame from the server."""
    return msgpack.unpackb(frame)
