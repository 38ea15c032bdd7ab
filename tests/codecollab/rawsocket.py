"""A bare Engine.IO/Socket.IO client over one WebSocket, for tests that need to misbehave.

python-socketio always answers pings and closes politely. This client does only what a test
tells it: it can vanish without a close frame (a crashed tab) or stop answering pings while
keeping the TCP connection open (a network that silently drops).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import websocket


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
        self.ws.send("40" + json.dumps(auth))
        while True:
            packet = self.ws.recv()
            if isinstance(packet, str) and packet.startswith("40"):
                return
            if isinstance(packet, str) and packet.startswith("44"):
                raise AssertionError(f"connection rejected: {packet}")

    def vanish(self) -> None:
        """Close the TCP connection without a WebSocket close frame, like a killed tab."""
        self.ws.sock.shutdown(socket.SHUT_RDWR)
        self.ws.sock.close()

    def close(self) -> None:
        """Close the WebSocket with a close frame, like a closed tab."""
        self.ws.close()
