"""Tests of skipping empty polls on the SQLite transport, against real database files."""

from __future__ import annotations

import time
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection

from scheduler.sqlite_broker import register
from scheduler.sqlite_broker.emptypolls import MAX_SKIP, EmptyPolls
from scheduler.sqlite_broker.store import Store

register()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'broker.sqlite3'}"


def claims_counted(channel: object) -> list[str]:
    """Wrap the channel's store so that each claiming UPDATE appends its queue to a list."""
    calls: list[str] = []
    store = channel.store  # type: ignore[attr-defined]
    original = store.claim

    def claim(queue: str, *args: object, **kwargs: object) -> object:
        calls.append(queue)
        return original(queue, *args, **kwargs)

    store.claim = claim
    return calls


def poll(channel: object, queue: str) -> object:
    try:
        return channel._get(queue)  # type: ignore[attr-defined]
    except Empty:
        return None


# EmptyPolls


@pytest.mark.parametrize(
    ("token", "lease_end", "at", "skipped"),
    [
        ((1, 1, 0), None, 0.5, True),
        ((1, 2, 0), None, 0.5, False),
        ((1, 1, 0), None, MAX_SKIP, False),
        ((1, 1, 0), 0.3, 0.2, True),
        ((1, 1, 0), 0.3, 0.3, False),
    ],
)
def test_empty_polls_unchanged(
    token: tuple[int, int, int], lease_end: float | None, at: float, skipped: bool
) -> None:
    empty = EmptyPolls()
    empty.record("q", (1, 1, 0), lease_end, 0.0)
    assert empty.unchanged("q", token, at) is skipped


def test_empty_polls_forget() -> None:
    empty = EmptyPolls()
    empty.record("q", (1, 1, 0), None, 0.0)
    empty.forget("q")
    assert empty.unchanged("q", (1, 1, 0), 0.1) is False


# Channel


def test_idle_poll_skips_claim(url: str) -> None:
    with Connection(url) as conn:
        channel = conn.default_channel
        conn.SimpleQueue("idle")
        calls = claims_counted(channel)
        for _ in range(10):
            poll(channel, "idle")
    assert calls == ["idle"]


def test_publish_from_other_connection_seen(url: str) -> None:
    with Connection(url) as consumer, Connection(url) as producer:
        consumer.SimpleQueue("seen")
        channel = consumer.default_channel
        poll(channel, "seen")
        producer.SimpleQueue("seen").put("hello")
        message = poll(channel, "seen")
    assert message is not None


def test_publish_on_same_connection_seen(url: str) -> None:
    with Connection(url) as conn:
        queue = conn.SimpleQueue("own")
        channel = conn.default_channel
        poll(channel, "own")
        queue.put("mine")
        message = poll(channel, "own")
    assert message is not None


def test_ended_lease_seen_without_write(url: str, tmp_path: Path) -> None:
    with Connection(url) as conn:
        conn.SimpleQueue("lease").put("again")
        channel = conn.default_channel
        # Another holder leases the message for 0.3 s and never renews nor acks it.
        holder = Store(tmp_path / "broker.sqlite3")
        now = time.time()
        assert len(holder.claim("lease", "gone", now + 0.3, now)) == 1
        holder.close()
        first = poll(channel, "lease")
        time.sleep(0.4)
        second = poll(channel, "lease")
    assert first is None
    assert second is not None
