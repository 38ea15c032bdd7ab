"""One test per kind of bad input: each gets a clear error and leaves the session working."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import msgpack
import pytest
import socketio
import websocket

from codecollab.yprotocol import (
    AwarenessEntry,
    SyncMessageType,
    encode_awareness_update,
    encode_sync_message,
)

from .conftest import REPO_ROOT, ServerFactory, ServerProcess
from .yclient import YClient, unique_session, wait_until

MIB = 1024 * 1024


def update_message(update: bytes) -> bytes:
    return encode_sync_message(SyncMessageType.UPDATE, update)


def paste_update(client: YClient, size: int) -> bytes:
    """Return the update a paste of ``size`` ASCII characters at the end of the text makes."""
    from pycrdt import Doc, Text

    scratch = Doc()
    with client.lock:
        scratch.apply_update(client.doc.get_update())
    state = scratch.get_state()
    text = scratch.get("content", type=Text)
    text += "x" * size
    return scratch.get_update(state)


def http(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"{server.url}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def client(shared_editor: ServerProcess) -> YClient:
    connected = YClient(shared_editor.url, unique_session()).connect()
    yield connected
    connected.disconnect()


def assert_session_still_works(client: YClient, shared_editor: ServerProcess) -> None:
    peer = YClient(shared_editor.url, client.session).connect()
    client.insert(0, "still works\n")
    client.wait_acked()
    wait_until(lambda: peer.value() == client.value(), 5, "the session stopped relaying")
    peer.disconnect()


def test_undecodable_update_gets_error(client: YClient, shared_editor: ServerProcess) -> None:
    before = client.value()
    ack = client.send_raw_sync(update_message(b"\x05\xff\xff\x01 not a yjs update"))
    assert ack["ok"] is False
    assert ack["error"] == "invalid_update"
    wait_until(lambda: "invalid_update" in client.error_codes(), 2, "no error event")
    assert client.sio.connected
    assert YClient(shared_editor.url, client.session).connect().value() == before
    assert_session_still_works(client, shared_editor)


@pytest.mark.parametrize(
    "payload",
    [b"\x02\x09short", b"\x09\x00", b"", "a text string", {"not": "binary"}],
    ids=["truncated", "unknown-type", "empty", "text", "json"],
)
def test_malformed_sync_message_gets_error(
    client: YClient, shared_editor: ServerProcess, payload: object
) -> None:
    ack = client.send_raw_sync(payload)
    assert ack["error"] == "invalid_message"
    wait_until(lambda: "invalid_message" in client.error_codes(), 2, "no error event")
    assert_session_still_works(client, shared_editor)


def test_typed_array_extension_gets_hint(client: YClient, shared_editor: ServerProcess) -> None:
    # What socket.io-msgpack-parser sends for a Node.js Uint8Array that is not a Buffer. The
    # tuple makes python-socketio send the ExtType, itself a tuple, as one argument.
    ack = client.send_raw_sync((msgpack.ExtType(0, update_message(b"\x00\x00")),))
    assert ack["error"] == "invalid_message"
    assert "send a Buffer or an ArrayBuffer" in ack["message"]
    assert_session_still_works(client, shared_editor)


@pytest.mark.parametrize("event", ["sync", "awareness"])
def test_extra_arguments_get_error(client: YClient, event: str) -> None:
    ack = client.sio.call(event, (b"\x00\x00", b"extra"), timeout=10)
    assert ack["error"] == "invalid_message"
    assert "takes one binary argument, got 2" in ack["message"]
    wait_until(lambda: "invalid_message" in client.error_codes(), 2, "no error event")


def test_malformed_awareness_gets_error(client: YClient) -> None:
    ack = client.send_awareness(b"\x01\x01\x01\x05{bad}")
    assert ack["error"] == "invalid_message"
    wait_until(lambda: "invalid_message" in client.error_codes(), 2, "no error event")


def test_oversized_awareness_gets_error(client: YClient) -> None:
    state = json.dumps({"user": {"name": "x" * 70_000}})
    ack = client.send_awareness(encode_awareness_update([AwarenessEntry(1, 1, state)]))
    assert ack["error"] == "message_too_large"


def test_paste_of_1_2_mib_goes_through(client: YClient, shared_editor: ServerProcess) -> None:
    peer = YClient(shared_editor.url, client.session).connect()
    client.insert(len(client.value()), "x" * int(1.2 * MIB))
    client.wait_acked(timeout=30)
    assert client.acks[-1] == {"ok": True}
    wait_until(lambda: len(peer.value()) == len(client.value()), 10, "the paste was not relayed")
    peer.disconnect()


def test_document_over_cap_gets_doc_too_large(
    client: YClient, shared_editor: ServerProcess
) -> None:
    client.insert(len(client.value()), "x" * int(1.2 * MIB))
    client.wait_acked(timeout=30)
    before = len(client.value())

    # A second 1.2 MiB paste would make the document 2.4 MiB, over the 2 MiB default cap.
    ack = client.send_raw_sync(update_message(paste_update(client, int(1.2 * MIB))), timeout=30)
    assert ack["ok"] is False
    assert ack["error"] == "doc_too_large"
    assert "limit of 2,097,152 bytes" in ack["message"]
    wait_until(lambda: "doc_too_large" in client.error_codes(), 2, "no error event")
    assert client.sio.connected
    newcomer = YClient(shared_editor.url, client.session).connect()
    assert len(newcomer.value()) == before
    newcomer.disconnect()


def test_paste_near_message_limit_gets_message(start_editor: ServerFactory) -> None:
    # 3.5 MiB is under the 4 MiB message limit but over the document cap: the client gets
    # doc_too_large instead of a silent disconnect. The shared editor's one-second ping
    # timeout can expire while a loaded machine uploads and checks 3.5 MiB, so this test
    # starts its own editor with pings far apart.
    editor = start_editor(CODECOLLAB_PING_INTERVAL="25", CODECOLLAB_PING_TIMEOUT="20")
    client = YClient(editor.url, unique_session()).connect()
    try:
        update = paste_update(client, int(3.5 * MIB))
        ack = client.send_raw_sync(update_message(update), timeout=30)
        assert ack["error"] == "doc_too_large"
        assert client.sio.connected
    finally:
        client.disconnect()


def test_display_name_kept_as_plain_data(shared_editor: ServerProcess) -> None:
    hostile = '<img src=x onerror="alert(1)">\u202e'
    client = YClient(shared_editor.url, unique_session(), name=hostile).connect()
    wait_until(lambda: client.last_presence() is not None, 2, "no presence")
    assert client.last_presence()["users"][0]["name"] == '<img src=x onerror="alert(1)">'
    status, headers, body = http(shared_editor, "GET", f"/api/sessions/{client.session}")
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["users"][0]["name"] == '<img src=x onerror="alert(1)">'
    client.disconnect()


def test_session_id_in_page_is_escaped(shared_editor: ServerProcess) -> None:
    status, _headers, body = http(
        shared_editor, "GET", "/s/%3Cscript%3Ealert(1)%3C%2Fscript%3Eaaaaaaaaaaa"
    )
    assert status == 404
    assert b"<script>alert(1)" not in body


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        (None, "invalid_auth"),
        ({"session": "bad id!", "clientId": "tab", "name": "x"}, "invalid_session"),
        ({"session": "x" * 65, "clientId": "tab", "name": "x"}, "invalid_session"),
        ({"session": "default", "clientId": "", "name": "x"}, "invalid_client_id"),
        ({"session": "default", "clientId": "a b", "name": "x"}, "invalid_client_id"),
    ],
)
def test_invalid_handshake_rejected(shared_editor: ServerProcess, auth: object, code: str) -> None:
    sio = socketio.Client(reconnection=False, serializer="msgpack")
    errors = []
    sio.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(shared_editor.url, auth=auth, transports=["polling"], wait_timeout=5)
    assert errors[0]["data"]["code"] == code


# Browsers open Socket.IO with HTTP long-polling, where a foreign origin gets a 400 before any
# WebSocket upgrade, so these tests use polling too.


def test_foreign_origin_rejected(shared_editor: ServerProcess) -> None:
    client = YClient(
        shared_editor.url,
        unique_session(),
        headers={"Origin": "http://evil.example"},
        transport="polling",
    )
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(timeout=5)


def test_same_origin_accepted(shared_editor: ServerProcess) -> None:
    client = YClient(
        shared_editor.url,
        unique_session(),
        headers={"Origin": shared_editor.url},
        transport="polling",
    )
    client.connect()
    client.disconnect()


@pytest.mark.parametrize(
    ("path", "host", "expected"),
    [
        ("/", "evil.example", 400),
        ("/socket.io/?EIO=4&transport=polling", "evil.example", 400),
        ("/api/sessions/default", "127.0.0.1:3000@evil.example", 400),
        ("/", "localhost", 200),
        ("/socket.io/?EIO=4&transport=polling", "localhost", 200),
    ],
)
def test_foreign_host_rejected(
    shared_editor: ServerProcess, path: str, host: str, expected: int
) -> None:
    # A page on a domain pointed at 127.0.0.1 (DNS rebinding) sends its own name as Host.
    request = urllib.request.Request(
        f"{shared_editor.url}{path}", headers={"Host": f"{host}:{shared_editor.port}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            status = reply.status
    except urllib.error.HTTPError as error:
        status = error.code
    assert status == expected


@pytest.mark.parametrize(("host", "expected"), [("evil.example", b"400"), ("localhost", b"101")])
def test_websocket_upgrade_host_checked(
    shared_editor: ServerProcess, host: str, expected: bytes
) -> None:
    # gevent-websocket would complete the handshake before the application saw the request.
    request = (
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        f"Host: {host}:{shared_editor.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", shared_editor.port), timeout=10) as sock:
        sock.sendall(request.encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.split()[1] == expected


def connects_from(url: str, origin: str) -> bool:
    """Return whether a long-polling client sending ``Origin: origin`` gets connected."""
    client = YClient(url, unique_session(), headers={"Origin": origin}, transport="polling")
    try:
        client.connect(timeout=5)
    except socketio.exceptions.ConnectionError:
        return False
    client.disconnect()
    return True


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://editor.example.com", True),
        # The listed origin written with its default port and in capitals.
        ("HTTPS://Editor.Example.com:443", True),
        ("https://other.example.com", False),
    ],
)
def test_allow_listed_origin(start_editor: ServerFactory, origin: str, expected: bool) -> None:
    server = start_editor(CODECOLLAB_CORS_ALLOWED_ORIGINS="https://editor.example.com")
    assert connects_from(server.url, origin) is expected


def test_flooding_client_throttled_others_unaffected(start_editor: ServerFactory) -> None:
    server = start_editor(
        CODECOLLAB_SOCKET_RATE_LIMIT="50/second, burst 50",
        CODECOLLAB_SOCKET_FLOOD_SECONDS="1",
    )
    session = unique_session()
    typist = YClient(server.url, session).connect()
    watcher = YClient(server.url, session).connect()
    # A separate process, so the flood competes with the typist on the server, not in this
    # test's interpreter.
    flooder = subprocess.Popen(
        [sys.executable, "-m", "tests.codecollab.flooder", str(server.port), session, "15"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: watcher.last_presence()["count"] == 3, 5, "the flooder did not join")

    latencies = []
    for index in range(20):
        started = time.monotonic()
        typist.insert(0, str(index % 10))
        wait_until(lambda: watcher.value() == typist.value(), 5, "the typist's edit stalled")
        latencies.append(time.monotonic() - started)
        time.sleep(0.05)
    state, _sent = flooder.communicate(timeout=30)[0].split()

    assert state == "closed"
    assert max(latencies) < 0.5
    assert "disconnecting" in server.log_text()
    assert "for flooding" in server.log_text()
    # The server dropped only the flooder: the other two are still counted.
    wait_until(lambda: watcher.last_presence()["count"] == 2, 5, "the flooder is still counted")
    assert "rate_limited" not in typist.error_codes()
    typist.disconnect()
    watcher.disconnect()


def test_connection_attempts_rate_limited(start_editor: ServerFactory) -> None:
    server = start_editor(CODECOLLAB_CONNECT_RATE_LIMIT="3/minute, burst 3")
    session = unique_session()
    for _ in range(3):
        YClient(server.url, session).connect().disconnect()
    errors = []
    sio = socketio.Client(reconnection=False, serializer="msgpack")
    sio.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(
            server.url,
            auth={"session": session, "clientId": "tab", "name": "x"},
            transports=["websocket"],
            wait_timeout=5,
        )
    assert errors[0]["data"]["code"] == "rate_limited"


def test_http_routes_rate_limited(start_editor: ServerFactory) -> None:
    # The start-up health checks take some of the five requests; the rest get 429.
    server = start_editor(CODECOLLAB_HTTP_RATE_LIMIT="5/minute, burst 5")
    replies = [http(server, "GET", "/api/sessions/default/text") for _ in range(6)]
    statuses = [status for status, _headers, _body in replies]
    assert 200 in statuses
    assert statuses[-1] == 429
    status, headers, body = replies[-1]
    assert int(headers["Retry-After"]) >= 1
    assert "error" in json.loads(body)


def test_put_text_not_utf8_rejected(shared_editor: ServerProcess) -> None:
    status, _headers, body = http(
        shared_editor, "PUT", f"/api/sessions/{unique_session()}/text", b"\xff\xfe bad"
    )
    assert status == 400
    assert "not valid UTF-8" in json.loads(body)["error"]


def test_put_text_over_cap_rejected(shared_editor: ServerProcess) -> None:
    status, _headers, body = http(
        shared_editor, "PUT", f"/api/sessions/{unique_session()}/text", b"y" * (3 * MIB)
    )
    assert status == 413
    assert "above the limit" in json.loads(body)["error"]


def test_put_body_over_message_limit_rejected(shared_editor: ServerProcess) -> None:
    status, _headers, body = http(
        shared_editor, "PUT", f"/api/sessions/{unique_session()}/text", b"y" * (5 * MIB)
    )
    assert status == 413
    assert "exceeds 4,194,304 bytes" in json.loads(body)["error"]


def open_engineio(port: int) -> websocket.WebSocket:
    """Open an Engine.IO WebSocket connection and read its open packet."""
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket", timeout=10
    )
    opening = ws.recv()
    assert opening.startswith("0"), opening
    return ws


def closed_within(ws: websocket.WebSocket, seconds: float) -> bool:
    """Return whether the server closes ``ws`` within ``seconds``, replying to its pings."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ws.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            frame = ws.recv()
        except websocket.WebSocketTimeoutException:
            return False
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return True
        if frame == "":
            return True
        if frame == "2":
            ws.send("3")
    return False


def test_json_parser_client_gets_connect_error(shared_editor: ServerProcess) -> None:
    ws = open_engineio(shared_editor.port)
    auth = {"session": unique_session(), "clientId": "json-parser", "name": "J"}
    ws.send("40" + json.dumps(auth))

    answer = ws.recv()

    assert answer.startswith("44")
    error = json.loads(answer[2:])
    assert "socket.io-msgpack-parser" in error["message"]
    assert error["data"]["code"] == "wrong_parser"
    assert closed_within(ws, 5)
    assert "uses the JSON parser" in shared_editor.log_text()


def test_undecodable_binary_packet_closes_connection(shared_editor: ServerProcess) -> None:
    ws = open_engineio(shared_editor.port)
    log_before = len(shared_editor.log_text())

    ws.send_binary(b"\xc1 not MessagePack")

    assert closed_within(ws, 5)
    log = shared_editor.log_text()[log_before:]
    assert "is not a MessagePack Socket.IO packet" in log
    assert "Traceback" not in log
