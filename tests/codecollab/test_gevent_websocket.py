"""Tests of the gevent WebSocket writer: frame encoding and direct writes."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import gevent.socket
import pytest
from geventwebsocket.websocket import Header, Stream, WebSocket

from codecollab.gevent_websocket import DirectWebSocket, encode_frame


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536])
@pytest.mark.parametrize("binary", [False, True])
def test_encode_frame_matches_gevent_websocket(length: int, binary: bool) -> None:
    message: str | bytes = b"b" * length if binary else "t" * length
    opcode = WebSocket.OPCODE_BINARY if binary else WebSocket.OPCODE_TEXT
    expected = bytes(Header.encode_header(True, opcode, b"", length, 0)) + (
        message if isinstance(message, bytes) else message.encode()
    )
    assert encode_frame(message, binary) == expected


@pytest.fixture
def socket_pair() -> Iterator[tuple[DirectWebSocket, gevent.socket.socket]]:
    server_side, client_side = gevent.socket.socketpair()
    application = SimpleNamespace(current_app=SimpleNamespace(on_close=lambda _reason: None))
    handler = SimpleNamespace(
        socket=server_side, rfile=server_side.makefile("rb"), server=SimpleNamespace()
    )
    handler.server.application = application
    websocket = DirectWebSocket(WebSocket({}, Stream(handler), handler))
    client_side.setblocking(False)
    yield websocket, client_side
    server_side.close()
    client_side.close()


def pending_bytes(sock: gevent.socket.socket) -> bytes:
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


def test_send_writes_binary_frame(socket_pair: tuple) -> None:
    websocket, client = socket_pair
    websocket.send(b"\x02\x01x")
    gevent.sleep(0.01)
    assert pending_bytes(client) == encode_frame(b"\x02\x01x", True)


def test_send_writes_text_frame(socket_pair: tuple) -> None:
    websocket, client = socket_pair
    websocket.send("2")
    gevent.sleep(0.01)
    assert pending_bytes(client) == encode_frame("2", False)


def test_try_write_rest_written_in_order(socket_pair: tuple) -> None:
    websocket, client = socket_pair
    big = encode_frame(b"x" * (4 << 20), True)
    assert websocket.try_write(big) is True
    assert websocket.try_write(encode_frame("2", False)) is False
    later = gevent.spawn(websocket.send, "3")
    received = bytearray()
    expected = big + encode_frame("3", False)
    client.setblocking(True)
    while len(received) < len(expected):
        received += client.recv(1 << 20)
    later.join(timeout=5)
    assert bytes(received) == expected
