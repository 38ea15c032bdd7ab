"""Flood an editor session with Socket.IO messages from a separate process.

Usage: ``python flooder.py PORT SESSION SECONDS``. Sends ``awareness`` and ``sync`` events as
fast as the connection takes them until the server closes it or SECONDS pass, then prints
``closed`` or ``open`` and the number of messages sent.
"""

from __future__ import annotations

import sys
import time

import websocket

from tests.codecollab.rawsocket import EVENT, RawSocketIOClient, encode_packet


def main() -> None:
    port, session, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    client = RawSocketIOClient(port, {"session": session, "clientId": "flooder", "name": "F"})
    event = encode_packet(EVENT, ["awareness", "not binary"])
    sent = 0
    deadline = time.monotonic() + seconds
    state = "open"
    while time.monotonic() < deadline:
        try:
            client.ws.send_binary(event)
        except (websocket.WebSocketException, OSError):
            state = "closed"
            break
        sent += 1
    print(state, sent, flush=True)


if __name__ == "__main__":
    main()
