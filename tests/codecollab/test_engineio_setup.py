"""Tests of the Engine.IO adjustments for long-polling clients, with peers on both transports.

The end-to-end tests run ``mixed_transports.cjs``: socket.io-client 4, the client the browser
bundle contains, forced to HTTP long-polling in some clients and to WebSocket in others.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from typing import Any

import engineio.packet
import msgpack
import pytest

from codecollab.engineio_setup import MAX_PACKETS_PER_REQUEST, unshare_binary_packets
from codecollab.yprotocol import SyncMessageType, decode_sync_message, encode_sync_message
from tests.codecollab.conftest import REPO_ROOT, ServerFactory, ServerProcess
from tests.codecollab.yclient import unique_session

NODE_MODULES = REPO_ROOT / "codecollab" / "frontend" / "node_modules"
SCRIPT = REPO_ROOT / "tests" / "codecollab" / "mixed_transports.cjs"
SCRIPT_TIMEOUT_S = 90.0


class RecordingEngineIO:
    """An Engine.IO server stand-in that records the packets given to ``send_packet``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, engineio.packet.Packet]] = []

    def send_packet(self, sid: str, pkt: engineio.packet.Packet) -> None:
        self.sent.append((sid, pkt))


@pytest.fixture
def recording_eio() -> RecordingEngineIO:
    eio = RecordingEngineIO()
    unshare_binary_packets(eio)
    return eio


def test_unshare_binary_packet_encodes_per_transport(recording_eio: RecordingEngineIO) -> None:
    shared = engineio.packet.Packet(engineio.packet.MESSAGE, data=b"\x00\x01\xff")

    recording_eio.send_packet("websocket-peer", shared)
    recording_eio.send_packet("polling-peer", shared)
    (_, websocket_packet), (_, polling_packet) = recording_eio.sent

    assert websocket_packet.encode() == b"\x00\x01\xff"
    assert polling_packet.encode(b64=True) == "bAAH/"


def test_unshare_text_packet_stays_shared(recording_eio: RecordingEngineIO) -> None:
    shared = engineio.packet.Packet(engineio.packet.MESSAGE, data='2["presence",{}]')

    recording_eio.send_packet("first", shared)
    recording_eio.send_packet("second", shared)

    assert [pkt for _, pkt in recording_eio.sent] == [shared, shared]


class RawPollingClient:
    """A Socket.IO client on Engine.IO long-polling, driven with plain HTTP requests."""

    def __init__(self, server: ServerProcess) -> None:
        self.base = f"{server.url}/socket.io/?EIO=4&transport=polling"
        opening = self._request("GET", self.base)
        self.sid = json.loads(opening[1:])["sid"]
        self.base += f"&sid={self.sid}"
        auth = {"session": unique_session(), "clientId": "raw-polling", "name": "raw"}
        self.post([binary_packet({"type": 0, "nsp": "/", "data": auth})])

    def _request(self, method: str, url: str, body: str | None = None) -> str:
        data = body.encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()

    def post(self, packets: list[str]) -> str:
        """Send ``packets`` in one request body and return the response text."""
        return self._request("POST", self.base, "\x1e".join(packets))

    def poll(self) -> list[str]:
        """Return the packets of one long-polling response."""
        return self._request("GET", self.base).split("\x1e")


def binary_packet(packet: dict[str, Any]) -> str:
    """Return the polling form of a MessagePack Socket.IO packet: ``b`` and base64."""
    return "b" + base64.b64encode(msgpack.packb(packet)).decode()


def binary_event(event: str, data: bytes) -> str:
    """Return the Engine.IO packet of a Socket.IO event with one binary argument."""
    return binary_packet({"type": 2, "nsp": "/", "data": [event, data]})


def sync_payloads(packets: list[str]) -> list[bytes]:
    """Return the payloads of the ``sync`` events among polling ``packets``."""
    events = [msgpack.unpackb(base64.b64decode(pkt[1:])) for pkt in packets if pkt[:1] == "b"]
    return [e["data"][1] for e in events if e["type"] == 2 and e["data"][0] == "sync"]


def test_polling_batch_above_sixteen_packets(start_editor: ServerFactory) -> None:
    client = RawPollingClient(start_editor())
    step1 = encode_sync_message(SyncMessageType.STEP1, b"\x00")
    events = 20

    answer = client.post([binary_event("sync", step1) for _ in range(events)])
    replies = []
    deadline = time.monotonic() + 10
    while len(replies) < events and time.monotonic() < deadline:
        payloads = sync_payloads(client.poll())
        replies += [p for p in payloads if decode_sync_message(p).type is SyncMessageType.STEP2]

    assert answer == "OK"
    assert len(replies) == events
    assert 16 < events <= MAX_PACKETS_PER_REQUEST


def run_mixed_clients(url: str, polling: int, websocket: int, edits: int) -> list[dict[str, Any]]:
    """Run the Node.js clients against ``url`` and return their reports."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: install Node.js to run the socket.io-client tests")
    if not (NODE_MODULES / "socket.io-client").is_dir():
        pytest.fail(f"{NODE_MODULES} is missing: install the frontend with `make assets`")
    options = {
        "url": url,
        "session": unique_session(),
        "polling": polling,
        "websocket": websocket,
        "edits": edits,
        "intervalMs": 5,
    }
    result = subprocess.run(
        [node, str(SCRIPT), json.dumps(options)],
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["clients"]


@pytest.mark.parametrize("async_mode", ["gevent", "threading"])
def test_broadcast_mixed_transports_lose_nothing(
    start_editor: ServerFactory, async_mode: str
) -> None:
    server = start_editor(CODECOLLAB_ASYNC_MODE=async_mode)
    edits = 40

    clients = run_mixed_clients(server.url, polling=3, websocket=3, edits=edits)
    texts = {client["text"] for client in clients}
    tokens = [f"<{client['index']}.{n}>" for client in clients for n in range(edits)]
    final_text = next(iter(texts))

    assert not [client["errors"] for client in clients if client["errors"]], server.log_tail()
    assert len(texts) == 1, server.log_tail()
    assert [token for token in tokens if final_text.count(token) != 1] == []
    assert [client["outOfOrder"] for client in clients if client["outOfOrder"]] == []
    assert [client["duplicates"] for client in clients if client["duplicates"]] == []
    assert [c["awarenessOutOfOrder"] for c in clients if c["awarenessOutOfOrder"]] == []
    for client in clients:
        for peer in clients:
            if peer is not client:
                seen = client["lastAwareness"].get(str(peer["clientId"]))
                assert seen == peer["awarenessClock"], (client["index"], peer["index"])
    assert "Traceback" not in server.log_text()
