import pytest

from codecollab.yprotocol import (
    AwarenessEntry,
    ProtocolError,
    SyncMessageType,
    decode_awareness_update,
    decode_sync_message,
    encode_awareness_update,
    encode_sync_message,
)


@pytest.mark.parametrize("message_type", list(SyncMessageType))
def test_sync_message_round_trip(message_type: SyncMessageType) -> None:
    payload = bytes(range(200))
    message = decode_sync_message(encode_sync_message(message_type, payload))
    assert (message.type, message.payload) == (message_type, payload)


def test_sync_message_matches_y_protocols_bytes() -> None:
    # y-protocols writeUpdate: varUint(2), varUint(len), update bytes.
    assert encode_sync_message(SyncMessageType.UPDATE, b"\x00\x00") == b"\x02\x02\x00\x00"


def test_sync_message_long_payload_uses_multibyte_length() -> None:
    encoded = encode_sync_message(SyncMessageType.STEP2, b"x" * 300)
    assert encoded[:3] == b"\x01\xac\x02"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "ends inside an integer"),
        (b"\x07\x00", "unknown sync message type 7"),
        (b"\x02\x05ab", "runs past the end"),
        (b"\x02\x01ab", "unexpected bytes"),
        (b"\x02\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "exceeds 2\\*\\*53"),
    ],
)
def test_decode_sync_message_rejects_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_sync_message(data)


def test_awareness_round_trip_non_ascii_state() -> None:
    entries = [
        AwarenessEntry(12345, 3, '{"user":{"name":"Zoë 😀 中"}}'),
        AwarenessEntry(7, 1, "null"),
    ]
    assert decode_awareness_update(encode_awareness_update(entries)) == entries


def test_awareness_string_length_counts_utf8_bytes() -> None:
    encoded = encode_awareness_update([AwarenessEntry(1, 1, '"é"')])
    # count 1, client 1, clock 1, then the length 4 (quote, two bytes of é, quote).
    assert encoded[:4] == b"\x01\x01\x01\x04"


def test_awareness_removed_flag() -> None:
    assert AwarenessEntry(1, 2, "null").removed


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01\x01\x01\x03abc", "not JSON"),
        (b"\x01\x01\x01\x02\xff\xfe", "not JSON"),
        (b"\x02\x01\x01\x02{}", "ends inside an integer"),
        (b"\x01\x01\x01\x02{}\x00", "unexpected bytes"),
    ],
)
def test_decode_awareness_rejects_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_awareness_update(data)
