"""A protocol-level editor client for tests: python-socketio plus a pycrdt document.

It behaves like the browser client of ``docs/protocol.md``: it sends its sync step 1 on
connect, answers the server's step 1 with a step 2, applies step 2 and updates, sends each
local transaction as an update with an ack callback, and tracks presence, awareness and
error events. Local edits made while disconnected stay in the document and reach the server
through the step 2 of the next handshake, as offline edits do in the browser.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import socketio
from pycrdt import Doc, Map, Text, TransactionEvent

from codecollab.text_offsets import Unit, convert_offset
from codecollab.yprotocol import (
    SyncMessageType,
    decode_sync_message,
    encode_sync_message,
)

REMOTE = "remote"


class YClient:
    """One simulated browser tab."""

    def __init__(
        self,
        url: str,
        session: str,
        *,
        client_id: str | None = None,
        name: str = "tester",
        headers: dict[str, str] | None = None,
        transport: str = "websocket",
    ) -> None:
        self.url = url
        self.session = session
        self.client_id = client_id or secrets.token_hex(8)
        self.name = name
        self.headers = headers or {}
        self.transport = transport
        self.doc = Doc(allow_multithreading=True)
        self.text = self.doc.get("content", type=Text)
        self.meta = self.doc.get("meta", type=Map)
        self.lock = threading.RLock()

        self.synced = threading.Event()
        self.presence: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.awareness: list[bytes] = []
        self.acks: list[dict[str, Any]] = []
        self.unacked = 0
        self.updates_received = 0
        self.update_listener: Callable[[bytes], None] | None = None
        self.connect_error: Any = None
        # The server's step 1 can arrive before python-socketio reports the connection open,
        # when the client cannot emit yet; it is answered right after connecting.
        self._early_step1: bytes | None = None
        # True between a completed connect and the next disconnect; python-socketio's own
        # flag lags behind, and an emit while closing is dropped without its ack.
        self.online = False

        self.sio = self._new_socket()
        self.doc.observe(self._on_transaction)

    def _new_socket(self) -> socketio.Client:
        # A fresh client per connection, as the browser's decoder is reset on reconnect: a
        # binary event cut in half by a disconnect must not leak into the next connection.
        # websocket-client sends its own Origin unless suppressed, and a second Origin header
        # would be merged with the one a test sets.
        extra = {"suppress_origin": True} if "Origin" in self.headers else {}
        sio = socketio.Client(
            reconnection=False, serializer="msgpack", websocket_extra_options=extra
        )
        _dispatch_in_order(sio)
        sio.on("sync", self._on_sync)
        sio.on("presence", self._on_presence)
        sio.on("error", self._on_error)
        sio.on("awareness", self._on_awareness)
        sio.on("connect_error", self._on_connect_error)
        sio.on("disconnect", self._on_disconnect)
        return sio

    # Connection

    def connect(self, *, wait_synced: bool = True, timeout: float = 10.0) -> YClient:
        """Connect, send step 1 and (by default) wait for the server's step 2."""
        self.synced.clear()
        if self.sio.eio.state != "disconnected" or self.sio.connected:
            self.sio.disconnect()
        self.sio = self._new_socket()
        self.sio.connect(
            self.url,
            auth={"session": self.session, "clientId": self.client_id, "name": self.name},
            headers=self.headers,
            transports=[self.transport],
            wait_timeout=timeout,
        )
        with self.lock:
            step1 = encode_sync_message(SyncMessageType.STEP1, self.doc.get_state())
            early_step1 = self._early_step1
            self._early_step1 = None
            self.online = True
        self.sio.emit("sync", step1)
        if early_step1 is not None:
            self._answer_step1(early_step1)
        if wait_synced and not self.synced.wait(timeout):
            raise TimeoutError(f"client {self.client_id} did not sync within {timeout} s")
        return self

    def disconnect(self) -> None:
        """Close the connection as a closing tab does."""
        with self.lock:
            self.online = False
        if self.sio.connected:
            websocket = getattr(self.sio.eio, "ws", None)
            if websocket is not None:
                # python-engineio's read thread consumes the server's close frame, so
                # websocket-client's close() would wait its full 3 s timeout for it.
                websocket.close = functools.partial(websocket.close, timeout=0.1)
            self.sio.disconnect()
        with self.lock:
            self.unacked = 0

    @property
    def connected(self) -> bool:
        """Whether the Socket.IO connection is open."""
        return self.sio.connected

    # Editing, with code point indexes

    def insert(self, index: int, value: str) -> None:
        """Insert ``value`` at code point ``index``."""
        with self.lock:
            current = str(self.text)
            offset = convert_offset(current, index, Unit.CODE_POINT, Unit.UTF8)
            self.text.insert(offset, value)

    def delete(self, index: int, length: int) -> None:
        """Delete ``length`` code points from ``index``."""
        with self.lock:
            current = str(self.text)
            start = convert_offset(current, index, Unit.CODE_POINT, Unit.UTF8)
            end = convert_offset(current, index + length, Unit.CODE_POINT, Unit.UTF8)
            del self.text[start:end]

    def set_language(self, language: str) -> None:
        """Set ``meta.language``."""
        with self.lock:
            self.meta["language"] = language

    def value(self) -> str:
        """Return the current text."""
        with self.lock:
            return str(self.text)

    def send_raw_sync(self, payload: Any, timeout: float = 10.0) -> Any:
        """Send ``payload`` as a ``sync`` event and return the ack."""
        return self.sio.call("sync", payload, timeout=timeout)

    def send_awareness(self, payload: Any, timeout: float = 10.0) -> Any:
        """Send ``payload`` as an ``awareness`` event and return the ack."""
        return self.sio.call("awareness", payload, timeout=timeout)

    def wait_acked(self, timeout: float = 10.0) -> None:
        """Wait until every update sent so far is acknowledged."""
        wait_until(lambda: self.unacked == 0, timeout, f"{self.client_id} has unacked updates")

    # Event handlers

    def _on_transaction(self, event: TransactionEvent) -> None:
        if event.transaction.origin() is not None:
            return
        with self.lock:
            if not self.online:
                return
            self.unacked += 1
        message = encode_sync_message(SyncMessageType.UPDATE, event.update)
        try:
            self.sio.emit("sync", message, callback=self._on_ack)
        except socketio.exceptions.BadNamespaceError:
            # Disconnected meanwhile: the next handshake's step 2 carries this edit.
            with self.lock:
                self.unacked -= 1

    def _on_ack(self, reply: dict[str, Any]) -> None:
        with self.lock:
            self.acks.append(reply)
            self.unacked = max(self.unacked - 1, 0)

    def _on_sync(self, data: bytes) -> None:
        message = decode_sync_message(data)
        if message.type is SyncMessageType.STEP1:
            with self.lock:
                if not self.sio.connected:
                    self._early_step1 = message.payload
                    return
            self._answer_step1(message.payload)
            return
        with self.lock, self.doc.transaction(origin=REMOTE):
            self.doc.apply_update(message.payload)
            self.updates_received += 1
        if self.update_listener is not None:
            self.update_listener(message.payload)
        if message.type is SyncMessageType.STEP2:
            self.synced.set()

    def _answer_step1(self, state_vector: bytes) -> None:
        with self.lock:
            update = self.doc.get_update(state_vector)
            self.unacked += 1
        self.sio.emit(
            "sync", encode_sync_message(SyncMessageType.STEP2, update), callback=self._on_ack
        )

    def _on_presence(self, payload: dict[str, Any]) -> None:
        self.presence.append(payload)

    def _on_error(self, payload: dict[str, Any]) -> None:
        self.errors.append(payload)

    def _on_awareness(self, data: bytes) -> None:
        self.awareness.append(data)

    def _on_disconnect(self, *_reason: Any) -> None:
        # Acks of a closed connection never arrive. As in the browser, whatever the server
        # lacks goes out again in the step 2 of the next handshake.
        with self.lock:
            self.online = False
            self.unacked = 0

    def _on_connect_error(self, data: Any) -> None:
        self.connect_error = data

    def last_presence(self) -> dict[str, Any] | None:
        """Return the latest presence payload received."""
        return self.presence[-1] if self.presence else None

    def error_codes(self) -> list[str]:
        """Return the codes of every error event received."""
        return [error.get("code", "") for error in self.errors]


def _dispatch_in_order(client: socketio.Client) -> None:
    """Make the client handle messages one at a time, in arrival order.

    python-engineio's client starts a thread per received message, so the placeholder packet of
    a binary event and its attachment can be reassembled out of order, which python-socketio
    then reports as "Unexpected binary attachment". A browser handles messages in order, and so
    must the test client.
    """
    trigger = client.eio._trigger_event

    def in_order(event: str, *args: Any, run_async: bool = False, **kwargs: Any) -> Any:
        return trigger(event, *args, run_async=False, **kwargs)

    client.eio._trigger_event = in_order  # type: ignore[method-assign]


def wait_until(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    """Poll ``predicate`` every 20 ms until it is true, or raise ``AssertionError``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s: {message}")


def unique_session() -> str:
    """Return a new valid session id, so tests sharing a server never share a session."""
    return secrets.token_urlsafe(16)
