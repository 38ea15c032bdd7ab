"""Tests of the gevent WebSocket writer: frame encoding, binary-event coalescing, direct writes."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import gevent.socket
import pytest
from geventwebsocket.websocket import Header, Stream, WebSocket

from codecollab.gevent_websocket import CoalescingWebSocket, attachment_count, encode_frame


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('451-["sync",{"_placeholder":true,"num":0}]', 1),
        ('4612-[{"_placeholder":true,"num":0}]', 12),
        ('42["presence",{"count":2}]', 0),
        ("2", 0),
        ("45", 0),
        ("45x-[]", 0),
        ('43["ok"]', 0),
    ],
)
def test_attachment_count(message: str, expected: int) -> None:
    assert attachment_count(message) == expected


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
def socket_pair() -> Iterator[tuple[CoalescingWebSocket, gevent.socket.socket]]:
    server_side, client_side = gevent.socket.socketpair()
    application = SimpleNamespace(current_app=SimpleNamespace(on_close=lambda _reason: None))
    handler = SimpleNamespace(
        socket=server_side, rfile=server_side.makefile("rb"), server=SimpleNamespace()
    )
    handler.server.application = application
    websocket = CoalescingWebSocket(WebSocket({}, Stream(handler), handler))
    client_side.setblocking(False)
    yield websocket, client_side
    server_side.close()
    client_side.close()


def pending_bytes(sock: gevent.socket.socket) -> bytes:
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


def test_coalescing_holds_placeholder(socket_pair: tuple) -> None:
    websocket, client = socket_pair
    websocket.send('451-["sync",{"_placeholder":true,"num":0}]')
    assert pending_bytes(client) == b""


def test_coalescing_writes_event_at_once(socket_pair: tuple) -> None:
    websocket, client = socket_pair
    placeholder = '451-["sync",{"_placeholder":true,"num":0}]'
    websocket.send(placeholder)
    websocket.send(b"\x02\x01x")
    gevent.sleep(0.01)
    expected = encode_frame(placeholder, False) + encode_frame(b"\x02\x01x", True)
    assert pending_bytes(client) == expected


def test_coalescing_sends_text_at_once(socket_pair: tuple) -> None:
    websocket, client = socket_pair
    websocket.send("2")
    gevent.sleep(0.01)
    assert pending_bytes(client) == encode_frame("2", False)


def test_try_write_refused_while_event_held(socket_pair: tuple) -> None:
    websocket, _client = socket_pair
    websocket.send('451-["sync",{"_placeholder":true,"num":0}]')
    assert websocket.try_write(b"frames") is False


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
