"""Encoding and strict decoding of the y-protocols messages carried by Socket.IO events.

The ``sync`` event carries one y-protocols sync message as ``y-protocols/sync`` writes it:
``varUint(type)`` then ``varUint8Array(payload)``. Type 0 is step 1, whose payload is a state
vector. Types 1 (step 2) and 2 (update) carry a Yjs v1 update. There is no leading message-type
byte, because the event name already marks a sync message.

The ``awareness`` event carries ``encodeAwarenessUpdate`` output of ``y-protocols/awareness``:
``varUint(n)`` then n times ``varUint(clientID) varUint(clock) varString(JSON state)``, where a
JSON ``null`` state removes that client.

Integers are lib0 variable-length unsigned integers (7 bits per byte, low bits first) and
strings are a varUint byte length followed by UTF-8. Decoding rejects truncated input, trailing
bytes and integers beyond 2**53 (the largest integer JavaScript represents exactly) with
``ProtocolError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = [
    "AwarenessEntry",
    "ProtocolError",
    "SyncMessage",
    "SyncMessageType",
    "decode_awareness_update",
    "decode_sync_message",
    "encode_awareness_update",
    "encode_sync_message",
]

MAX_SAFE_INTEGER = 2**53 - 1


class ProtocolError(ValueError):
    """A message is not well-formed y-protocols binary."""


class SyncMessageType(IntEnum):
    """The first field of a sync message."""

    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


@dataclass(frozen=True)
class SyncMessage:
    """A decoded sync message."""

    type: SyncMessageType
    # A state vector for STEP1, a Yjs v1 update for STEP2 and UPDATE.
    payload: bytes


@dataclass(frozen=True)
class AwarenessEntry:
    """One client's awareness state as carried in an awareness update."""

    client_id: int
    clock: int
    # The JSON text exactly as received, so relaying never re-serializes it.
    state_json: str

    @property
    def state(self) -> Any:
        """The decoded state; ``None`` means the client was removed."""
        return json.loads(self.state_json)

    @property
    def removed(self) -> bool:
        """Whether this entry removes the client (its state is JSON ``null``)."""
        return self.state_json.strip() == "null"


def encode_sync_message(message_type: SyncMessageType, payload: bytes) -> bytes:
    """Encode a sync message as the ``sync`` event carries it."""
    return _var_uint(int(message_type)) + _var_uint(len(payload)) + payload


def decode_sync_message(data: bytes) -> SyncMessage:
    """Decode one sync message.

    :raises ProtocolError: on an unknown type, a truncated payload or trailing bytes.
    """
    reader = _Reader(data)
    raw_type = reader.var_uint()
    try:
        message_type = SyncMessageType(raw_type)
    except ValueError:
        raise ProtocolError(f"unknown sync message type {raw_type}; expected 0, 1 or 2") from None
    payload = reader.var_bytes()
    reader.expect_end()
    return SyncMessage(message_type, payload)


def encode_awareness_update(entries: list[AwarenessEntry]) -> bytes:
    """Encode entries in the ``encodeAwarenessUpdate`` format."""
    parts = [_var_uint(len(entries))]
    for entry in entries:
        encoded_state = entry.state_json.encode("utf-8")
        parts.append(_var_uint(entry.client_id))
        parts.append(_var_uint(entry.clock))
        parts.append(_var_uint(len(encoded_state)))
        parts.append(encoded_state)
    return b"".join(parts)


def decode_awareness_update(data: bytes) -> list[AwarenessEntry]:
    """Decode an awareness update.

    :raises ProtocolError: on truncated input, trailing bytes, text that is not UTF-8 or a
        state that is not JSON.
    """
    reader = _Reader(data)
    count = reader.var_uint()
    entries = []
    for _ in range(count):
        client_id = reader.var_uint()
        clock = reader.var_uint()
        state_bytes = reader.var_bytes()
        try:
            state_json = state_bytes.decode("utf-8")
            json.loads(state_json)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(
                f"awareness state of client {client_id} is not JSON: {exc}"
            ) from None
        entries.append(AwarenessEntry(client_id, clock, state_json))
    reader.expect_end()
    return entries


def _var_uint(number: int) -> bytes:
    if number < 0:
        raise ValueError(f"cannot encode negative integer {number}")
    out = bytearray()
    while number > 0x7F:
        out.append(0x80 | (number & 0x7F))
        number >>= 7
    out.append(number)
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def var_uint(self) -> int:
        number = 0
        shift = 0
        while True:
            if self.position >= len(self.data):
                raise ProtocolError(f"message ends inside an integer at byte {self.position}")
            byte = self.data[self.position]
            self.position += 1
            number |= (byte & 0x7F) << shift
            if number > MAX_SAFE_INTEGER:
                raise ProtocolError(f"integer at byte {self.position} exceeds 2**53")
            if byte < 0x80:
                return number
            shift += 7

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        end = self.position + length
        if end > len(self.data):
            raise ProtocolError(
                f"field of {length} bytes at byte {self.position} runs past the end of the "
                f"{len(self.data)}-byte message"
            )
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def expect_end(self) -> None:
        if self.position != len(self.data):
            raise ProtocolError(
                f"{len(self.data) - self.position} unexpected bytes after the message"
            )
