"""Presence across processes in Redis: counting, de-duplication, heartbeats and expiry."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from codecollab.cluster_presence import EXPIRY_HEARTBEATS, ClusterPresence
from codecollab.presence import Participant

HEARTBEAT = 0.1


@pytest.fixture
def client(redis_url: str, unique_prefix: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url, decode_responses=True)
    yield connection
    keys = list(connection.scan_iter(f"{unique_prefix}:*"))
    if keys:
        connection.delete(*keys)
    connection.close()


def process(client: redis.Redis, prefix: str, process_id: str) -> ClusterPresence:
    presence = ClusterPresence(client, prefix, process_id, HEARTBEAT)
    presence.beat()
    return presence


def participant(sid: str, client_id: str, name: str = "Ada") -> Participant:
    return Participant(sid, client_id, name, "#4363d8")


def test_count_spans_processes(client: redis.Redis, unique_prefix: str) -> None:
    first = process(client, unique_prefix, "p1")
    second = process(client, unique_prefix, "p2")
    first.add("s", participant("a", "tab-a"))
    second.add("s", participant("b", "tab-b"))
    assert first.snapshot("s")["count"] == 2
    assert second.snapshot("s")["count"] == 2


def test_same_client_id_counts_once(client: redis.Redis, unique_prefix: str) -> None:
    """A tab that reconnected to another process while its old entry remains counts once."""
    first = process(client, unique_prefix, "p1")
    second = process(client, unique_prefix, "p2")
    first.add("s", participant("old", "tab-a", "Old name"))
    second.add("s", participant("new", "tab-a", "New name"))
    snapshot = second.snapshot("s")
    assert snapshot["count"] == 1
    assert snapshot["users"][0]["name"] == "New name"


def test_remove_drops_user(client: redis.Redis, unique_prefix: str) -> None:
    first = process(client, unique_prefix, "p1")
    first.add("s", participant("a", "tab-a"))
    first.remove("s", "a")
    assert first.snapshot("s")["count"] == 0


def test_rename_updates_name(client: redis.Redis, unique_prefix: str) -> None:
    first = process(client, unique_prefix, "p1")
    first.add("s", participant("a", "tab-a", "Ada"))
    first.rename("s", participant("a", "tab-a", "Grace"))
    assert first.snapshot("s")["users"][0]["name"] == "Grace"


def test_dead_process_expires(client: redis.Redis, unique_prefix: str) -> None:
    survivor = process(client, unique_prefix, "p1")
    crashed = process(client, unique_prefix, "p2")
    survivor.add("s", participant("a", "tab-a"))
    crashed.add("s", participant("b", "tab-b"))
    assert survivor.snapshot("s")["count"] == 2

    # The crashed process stops beating; the survivor goes on.
    deadline = time.monotonic() + HEARTBEAT * (EXPIRY_HEARTBEATS + 3)
    changed: list[str] = []
    while time.monotonic() < deadline:
        changed += survivor.beat()
        time.sleep(HEARTBEAT)
    assert survivor.snapshot("s")["count"] == 1
    assert "s" in changed
    assert client.hlen(f"{unique_prefix}:presence:s") == 1


def test_beat_restores_lost_entries(client: redis.Redis, unique_prefix: str) -> None:
    """After Redis lost its keys (a restart), the next beat writes them again."""
    first = process(client, unique_prefix, "p1")
    first.add("s", participant("a", "tab-a"))
    client.delete(f"{unique_prefix}:presence:s", f"{unique_prefix}:process:p1")
    changed = first.beat()
    assert changed == ["s"]
    assert first.snapshot("s")["count"] == 1


def test_stop_removes_entries(client: redis.Redis, unique_prefix: str) -> None:
    first = process(client, unique_prefix, "p1")
    second = process(client, unique_prefix, "p2")
    first.add("s", participant("a", "tab-a"))
    second.add("s", participant("b", "tab-b"))
    assert first.stop() == ["s"]
    assert second.snapshot("s")["count"] == 1


def test_hash_expires_without_live_process(client: redis.Redis, unique_prefix: str) -> None:
    crashed = process(client, unique_prefix, "p1")
    crashed.add("s", participant("a", "tab-a"))
    ttl_ms = client.pttl(f"{unique_prefix}:presence:s")
    assert 0 < ttl_ms <= 2 * EXPIRY_HEARTBEATS * HEARTBEAT * 1000
