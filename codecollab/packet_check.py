"""Rejection of Socket.IO packets that the editor cannot decode, with a reason for the client.

The editor's Socket.IO packets are MessagePack (docs/protocol.md). socket.io-client on its
default JSON parser sends text packets, which python-socketio hands to the MessagePack decoder
as they are: the decoder raises, python-engineio logs a traceback, and the client waits for
its connection forever. ``reject_undecodable_packets`` replies to a text packet with a
CONNECT_ERROR in the JSON encoding, which such a client reports as ``connect_error`` with the
reason. It closes the connection a second later, so that a long-polling client can fetch that
reply first. A binary message that is not a MessagePack Socket.IO packet closes the connection at
once. Both are logged as one warning with the Engine.IO session id.
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger(__name__)

WRONG_PARSER_MESSAGE = (
    "This server encodes Socket.IO packets with MessagePack: connect with "
    "socket.io-msgpack-parser (JavaScript) or serializer='msgpack' (python-socketio)"
)
# A Socket.IO CONNECT_ERROR packet (type 4) of the default namespace, JSON-encoded.
WRONG_PARSER_PACKET = "4" + json.dumps(
    {"message": WRONG_PARSER_MESSAGE, "data": {"code": "wrong_parser"}}
)
# Seconds between the CONNECT_ERROR and closing the connection: long-polling clients fetch the
# CONNECT_ERROR with their next request, which a closed session would fail.
CLOSE_DELAY = 1.0


def reject_undecodable_packets(sio_server: Any) -> None:
    """Close the connections of clients whose Socket.IO packets ``sio_server`` cannot decode.

    :param sio_server: the python-socketio server (``flask_socketio.SocketIO.server``), created
        with the MessagePack serializer.
    """
    handle_message = sio_server._handle_eio_message
    eio = sio_server.eio
    packet_class = sio_server.packet_class
    # Engine.IO sessions sent WRONG_PARSER_PACKET and not closed yet.
    closing: set[str] = set()

    def close_later(eio_sid: str) -> None:
        eio.sleep(CLOSE_DELAY)
        closing.discard(eio_sid)
        eio.disconnect(eio_sid)

    def handle_decodable_message(eio_sid: str, data: Any) -> Any:
        if isinstance(data, str):
            if eio_sid not in closing:
                closing.add(eio_sid)
                logger.warning(
                    "closing Engine.IO session %s: its client sent a text Socket.IO packet, so "
                    "it uses the JSON parser instead of socket.io-msgpack-parser",
                    eio_sid,
                )
                eio.send(eio_sid, WRONG_PARSER_PACKET)
                eio.start_background_task(close_later, eio_sid)
            return None
        try:
            return handle_message(eio_sid, data)
        except Exception as exc:
            # Decoding again only after a failure keeps the check off the path of every message.
            if _decodes(packet_class, data):
                raise
            logger.warning(
                "closing Engine.IO session %s: its message of %d bytes is not a MessagePack "
                "Socket.IO packet (%r)",
                eio_sid,
                len(data),
                exc,
            )
            eio.disconnect(eio_sid)
            return None

    # python-socketio registered the bound method with python-engineio when it was created.
    eio.on("message", handle_decodable_message)


def _decodes(packet_class: Any, data: bytes) -> bool:
    try:
        packet = packet_class(encoded_packet=data)
    except Exception:
        return False
    return isinstance(packet.namespace, str) and isinstance(packet.packet_type, int)
