"""Tests of the direct fan-out: its reliance on python-socketio and python-engineio, and relays
on a real server to a peer that stops reading."""

from __future__ import annotations

import socket
import time

import engineio
import engineio.packet
import engineio.socket
import socketio
import socketio.msgpack_packet
import socketio.packet
from geventwebsocket.websocket import Header, WebSocket

from codecollab.fanout import DirectFanout, encode_event_frame
from codecollab.yprotocol import decode_sync_message

from .conftest import ServerFactory
from .rawsocket import EVENT, RawSocketIOClient, decode_packet
from .yclient import YClient, unique_session, wait_until


def test_fanout_pinned_engineio_socket_state() -> None:
    server = socketio.Server(async_mode="threading")
    eio_socket = engineio.socket.Socket(server.eio, "abc")
    server.eio.sockets["abc"] = eio_socket
    assert server.eio.sockets.get("abc") is eio_socket
    assert eio_socket.upgraded is False
    assert eio_socket.closing is False
    assert eio_socket.closed is False
    assert eio_socket.queue.qsize() == 0
    eio_socket.send(engineio.packet.Packet(engineio.packet.MESSAGE, data="x"))
    assert eio_socket.queue.qsize() == 1


def test_fanout_pinned_socketio_participants() -> None:
    server = socketio.Server(async_mode="threading")
    server.manager.connect("eio-1", "/")
    sid = server.manager.sid_from_eio_sid("eio-1", "/")
    server.manager.enter_room(sid, "/", "session:a")
    assert list(server.manager.get_participants("/", "session:a")) == [(sid, "eio-1")]


def test_fanout_frame_matches_socketio_encoding() -> None:
    data = b"\x02\x05hello"
    packet_class = socketio.msgpack_packet.MsgPackPacket
    packet = packet_class(socketio.packet.EVENT, data=["sync", data], namespace="/")
    encoded = packet.encode()
    expected = bytes(Header.encode_header(True, WebSocket.OPCODE_BINARY, b"", len(encoded), 0))
    assert encode_event_frame(packet_class, "sync", data) == expected + encoded


def test_fanout_frame_decodes_as_one_event() -> None:
    frame = encode_event_frame(socketio.msgpack_packet.MsgPackPacket, "sync", b"\x02\x00")
    header_length = 2
    assert decode_packet(frame[header_length:]) == {
        "type": EVENT,
        "nsp": "/",
        "data": ["sync", b"\x02\x00"],
    }


def test_fanout_without_writers_queues_everyone() -> None:
    server = socketio.Server(async_mode="threading")
    for eio_sid in ("eio-1", "eio-2"):
        server.manager.connect(eio_sid, "/")
        sid = server.manager.sid_from_eio_sid(eio_sid, "/")
        server.manager.enter_room(sid, "/", "session:a")
    first = server.manager.sid_from_eio_sid("eio-1", "/")
    second = server.manager.sid_from_eio_sid("eio-2", "/")
    fanout = DirectFanout(server)
    assert fanout.emit("sync", b"\x02\x00", "session:a", skip_sid=first) == [second]


def receive_large_updates(client: RawSocketIOClient, count: int, timeout: float) -> list[bytes]:
    """Read relayed ``sync`` events until ``count`` updates over 8,000 bytes have arrived.

    Every binary frame must hold one whole event, so interleaved writes fail the test.
    """
    updates: list[bytes] = []
    deadline = time.monotonic() + timeout
    client.ws.settimeout(timeout)
    while len(updates) < count and time.monotonic() < deadline:
        frame = client.ws.recv()
        if isinstance(frame, bytes):
            packet = decode_packet(frame)
            assert packet["type"] == EVENT, f"unexpected packet {packet!r}"
            event, payload = packet["data"][0], packet["data"][1]
            if event == "sync":
                update = decode_sync_message(payload).payload
                if len(update) > 8000:
                    updates.append(update)
        elif frame == "2":
            client.ws.send("3")
    return updates


def test_fanout_peer_that_stops_reading(start_editor: ServerFactory) -> None:
    # Pings far apart: the slow peer answers pings only once it reads again, and a loaded
    # machine can delay the other clients' answers by more than a second.
    editor = start_editor(CODECOLLAB_PING_INTERVAL="25", CODECOLLAB_PING_TIMEOUT="20")
    session = unique_session()
    writer = YClient(editor.url, session).connect()
    slow = RawSocketIOClient(
        editor.port,
        {"session": session, "clientId": "slow-reader", "name": "slow"},
        sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),),
    )
    fast = YClient(editor.url, session).connect()
    # 200 updates of 16 kB, each deleted again to stay under the document cap: more than the
    # kernel buffers of a peer that reads nothing, so its writes wait and later relays queue.
    chunk = "x" * 16000
    for i in range(200):
        writer.insert(0, f"{i:03d}{chunk}")
        writer.delete(0, len(chunk) + 3)
    writer.wait_acked(timeout=60)
    wait_until(lambda: fast.value() == writer.value(), 30, "the reading peer fell behind")

    assert len(receive_large_updates(slow, 200, timeout=30)) == 200
    writer.disconnect()
    fast.disconnect()
    slow.close()
