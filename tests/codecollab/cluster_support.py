"""Helpers of the scale-out tests: editor processes sharing PostgreSQL and Redis, and clients.

``EditorProcess`` runs ``python app.py`` in ``codecollab/`` on a free loopback port, as in
production. ``ClusterClient`` behaves like the browser client of ``docs/protocol.md`` with a
pycrdt document: it answers the server's sync step 1 with a step 2 (which resends every edit
the server lacks after a reconnect), sends each local transaction as an update with an ack
callback, and records which of its inserted tokens the server acknowledged.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio
from pycrdt import Doc, Text, TransactionEvent

from codecollab.yprotocol import SyncMessageType, decode_sync_message, encode_sync_message

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "codecollab"
START_TIMEOUT = 30.0
REMOTE = "remote"

# Many test clients share 127.0.0.1, so the rate limits are far above the defaults.
TEST_ENV = {
    "CODECOLLAB_HTTP_RATE_LIMIT": "100000/minute, burst 10000",
    "CODECOLLAB_CONNECT_RATE_LIMIT": "100000/minute, burst 10000",
    "CODECOLLAB_SOCKET_RATE_LIMIT": "100000/second, burst 100000",
    "CODECOLLAB_LOG_LEVEL": "INFO",
}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    """Poll ``predicate`` every 20 ms until it is true, or raise ``AssertionError``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s: {message}")


@dataclass
class EditorProcess:
    """One editor process started by a test."""

    port: int
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Base URL of the process."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EditorProcess:
        """Start the process and wait until ``/healthz`` answers."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "app.py"], cwd=APP_DIR, env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"editor exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise AssertionError(f"editor did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop the process (SIGTERM: clean shutdown; SIGKILL: crash) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def get_json(self, path: str) -> Any:
        """GET ``path`` and return the decoded JSON body."""
        import json

        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.loads(response.read())

    def get_text(self, session: str) -> str:
        """Return the plain text of ``session`` as this process holds it."""
        with urllib.request.urlopen(f"{self.url}/api/sessions/{session}/text", timeout=5) as r:
            return r.read().decode("utf-8")

    def log_tail(self, lines: int = 60) -> str:
        """Return the last lines of the process's output, for failure messages."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def editor_env(port: int, extra: dict[str, str]) -> dict[str, str]:
    """Return the environment of an editor process on ``port``."""
    return {
        **os.environ,
        **TEST_ENV,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "CODECOLLAB_HOST": "127.0.0.1",
        "CODECOLLAB_PORT": str(port),
        **extra,
    }


class ClusterClient:
    """One simulated browser tab; text positions are UTF-8 byte offsets, as in pycrdt."""

    def __init__(self, url: str, session: str, client_id: str, name: str = "tester") -> None:
        self.url = url
        self.session = session
        self.client_id = client_id
        self.name = name
        self.doc = Doc(allow_multithreading=True)
        self.text = self.doc.get("content", type=Text)
        self.lock = threading.RLock()
        self.synced = threading.Event()
        self.presence: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []
        # Tokens whose insertion the server acknowledged as stored.
        self.acked_tokens: set[str] = set()
        self.unacked = 0
        self.online = False
        self._early_step1: bytes | None = None
        self.sio = self._new_socket()
        self.doc.observe(self._on_transaction)
        self._pending_token: str | None = None

    def _new_socket(self) -> socketio.Client:
        sio = socketio.Client(reconnection=False, serializer="msgpack")
        _dispatch_in_order(sio)
        sio.on("sync", self._on_sync)
        sio.on("presence", self._on_presence)
        sio.on("error", self.errors.append)
        sio.on("disconnect", self._on_disconnect)
        return sio

    def connect(self, url: str | None = None, timeout: float = 10.0) -> ClusterClient:
        """Connect (to ``url`` when given, else the last URL) and wait for the step 2."""
        self.url = url or self.url
        self.synced.clear()
        if self.sio.connected:
            self.sio.disconnect()
        self.sio = self._new_socket()
        self.sio.connect(
            self.url,
            auth={"session": self.session, "clientId": self.client_id, "name": self.name},
            transports=["websocket"],
            wait_timeout=timeout,
        )
        with self.lock:
            step1 = encode_sync_message(SyncMessageType.STEP1, self.doc.get_state())
            early, self._early_step1 = self._early_step1, None
            self.online = True
        self.sio.emit("sync", step1)
        if early is not None:
            self._answer_step1(early)
        if not self.synced.wait(timeout):
            raise AssertionError(f"client {self.client_id} did not sync within {timeout} s")
        return self

    def close(self) -> None:
        """Disconnect, as a closing tab does."""
        with self.lock:
            self.online = False
        if self.sio.connected:
            websocket = getattr(self.sio.eio, "ws", None)
            if websocket is not None:
                # python-engineio's read thread consumes the server's close frame, so
                # websocket-client's close() would wait its whole 3 s timeout for it.
                websocket.close = functools.partial(websocket.close, timeout=0.1)
            self.sio.disconnect()

    def insert_token(self, token: str, position: float) -> None:
        """Insert ``token`` near a relative ``position`` (0 to 1), outside other tokens.

        Tokens are ``<...>`` and the seed text has no angle brackets, so a token is never split
        by another one and stays findable in the final text (unless a deletion cuts it).
        """
        with self.lock:
            current = str(self.text)
            index = _token_boundary(current, round(position * len(current)))
            self._pending_token = token
            self.text.insert(len(current[:index].encode("utf-8")), token)
            self._pending_token = None

    def delete_range(self, position: float, length: int) -> None:
        """Delete up to ``length`` characters from a relative ``position`` (0 to 1)."""
        with self.lock:
            current = str(self.text)
            start = round(position * len(current))
            end = min(start + length, len(current))
            if end <= start:
                return
            first = len(current[:start].encode("utf-8"))
            last = len(current[:end].encode("utf-8"))
            del self.text[first:last]

    def value(self) -> str:
        """Return the current text."""
        with self.lock:
            return str(self.text)

    def _on_transaction(self, event: TransactionEvent) -> None:
        if event.transaction.origin() is not None:
            return
        with self.lock:
            if not self.online:
                return
            self.unacked += 1
            token = self._pending_token
        message = encode_sync_message(SyncMessageType.UPDATE, event.update)

        def acknowledged(reply: dict[str, Any]) -> None:
            with self.lock:
                self.unacked = max(self.unacked - 1, 0)
                if token is not None and reply.get("ok"):
                    self.acked_tokens.add(token)

        try:
            self.sio.emit("sync", message, callback=acknowledged)
        except socketio.exceptions.BadNamespaceError:
            # Disconnected meanwhile: the step 2 of the next handshake carries this edit.
            with self.lock:
                self.unacked -= 1

    def _on_sync(self, data: bytes) -> None:
        message = decode_sync_message(data)
        if message.type is SyncMessageType.STEP1:
            with self.lock:
                if not self.online:
                    self._early_step1 = message.payload
                    return
            self._answer_step1(message.payload)
            return
        with self.lock, self.doc.transaction(origin=REMOTE):
            self.doc.apply_update(message.payload)
        if message.type is SyncMessageType.STEP2:
            self.synced.set()

    def _answer_step1(self, state_vector: bytes) -> None:
        with self.lock:
            update = self.doc.get_update(state_vector)
        self.sio.emit("sync", encode_sync_message(SyncMessageType.STEP2, update))

    def _on_presence(self, payload: dict[str, Any]) -> None:
        self.presence = payload

    def _on_disconnect(self, *_reason: Any) -> None:
        with self.lock:
            self.online = False
            self.unacked = 0


def _token_boundary(text: str, index: int) -> int:
    """Return the first index at or after ``index`` that is not inside a ``<...>`` token."""
    depth = text[:index].count("<") - text[:index].count(">")
    while depth > 0 and index < len(text):
        if text[index] == ">":
            depth -= 1
        index += 1
    return index


def _dispatch_in_order(client: socketio.Client) -> None:
    """Make the client handle messages one at a time, in arrival order.

    python-engineio's client starts a thread per received message, so the placeholder packet of
    a binary event and its attachment could otherwise be reassembled out of order.
    """
    trigger = client.eio._trigger_event

    def in_order(event: str, *args: Any, run_async: bool = False, **kwargs: Any) -> Any:
        return trigger(event, *args, run_async=False, **kwargs)

    client.eio._trigger_event = in_order  # type: ignore[method-assign]
