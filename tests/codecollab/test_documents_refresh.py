"""Recovery of updates that another process stored but whose relay never arrived."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from pycrdt import Doc, Text

from codecollab.documents import RoomManager, RoomSettings
from codecollab.presence import Participant
from codecollab.storage_postgres import PostgresDocumentStore


@pytest.fixture
def store(postgres_url: str, unique_prefix: str) -> Iterator[PostgresDocumentStore]:
    schema = unique_prefix.replace("-", "_")
    opened = PostgresDocumentStore(postgres_url, schema, pool_size=2)
    yield opened
    opened.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def append_elsewhere(store: PostgresDocumentStore, session_id: str, value: str) -> None:
    """Store an update as another process would, without relaying it to this one."""
    stored = store.load(session_id)
    assert stored is not None
    doc = Doc(client_id=777)
    doc.apply_update(stored.snapshot)
    state = doc.get_state()
    doc.get("content", type=Text).insert(0, value)
    store.append_update(session_id, doc.get_update(state))


def test_refresh_applies_missed_update(store: PostgresDocumentStore) -> None:
    rooms = RoomManager(store, RoomSettings())
    room = rooms.join("s1", Participant("sid", "tab", "Ada", "#4363d8"))
    append_elsewhere(store, "s1", "MISSED ")

    update = rooms.refresh_from_storage(room)

    assert update is not None
    assert room.plain_text().startswith("MISSED ")


def test_refresh_returns_none_when_current(store: PostgresDocumentStore) -> None:
    rooms = RoomManager(store, RoomSettings())
    room = rooms.join("s1", Participant("sid", "tab", "Ada", "#4363d8"))
    append_elsewhere(store, "s1", "MISSED ")
    rooms.refresh_from_storage(room)

    assert rooms.refresh_from_storage(room) is None


def test_refresh_update_heals_a_client(store: PostgresDocumentStore) -> None:
    """A client holding the room's old state ends equal after applying the returned update."""
    rooms = RoomManager(store, RoomSettings())
    room = rooms.join("s1", Participant("sid", "tab", "Ada", "#4363d8"))
    client = Doc()
    client.apply_update(room.doc.get_update())
    append_elsewhere(store, "s1", "MISSED ")

    update = rooms.refresh_from_storage(room)
    assert update is not None
    client.apply_update(update)

    assert str(client.get("content", type=Text)) == room.plain_text()
