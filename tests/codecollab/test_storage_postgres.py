"""PostgreSQL document store: contracts of the SQLite store, plus writes from many processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from pycrdt import Doc, Text

from codecollab.storage import StorageError
from codecollab.storage_postgres import PostgresDocumentStore


@pytest.fixture
def schema(postgres_url: str, unique_prefix: str) -> Iterator[str]:
    """A schema unique to the test, dropped afterwards."""
    name = unique_prefix.replace("-", "_")
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def store(postgres_url: str, schema: str) -> Iterator[PostgresDocumentStore]:
    opened = PostgresDocumentStore(postgres_url, schema, pool_size=4)
    yield opened
    opened.close()


def text_doc(value: str, client_id: int = 1) -> Doc:
    doc = Doc(client_id=client_id)
    doc.get("content", type=Text).insert(0, value)
    return doc


def insert_update(base: Doc, value: str, client_id: int) -> bytes:
    """Return the update of a client appending ``value`` to ``base``'s text."""
    doc = Doc(client_id=client_id)
    doc.apply_update(base.get_update())
    text = doc.get("content", type=Text)
    state = doc.get_state()
    text.insert(len(str(text).encode("utf-8")), value)
    return doc.get_update(state)


def stored_text(store: PostgresDocumentStore, session_id: str) -> str:
    stored = store.load(session_id)
    assert stored is not None
    doc = Doc()
    doc.apply_update(stored.snapshot)
    for _update_id, update in stored.updates:
        doc.apply_update(update)
    return str(doc.get("content", type=Text))


def test_load_missing_session(store: PostgresDocumentStore) -> None:
    assert store.load("nobody-created-this") is None


def test_create_twice_keeps_first(store: PostgresDocumentStore) -> None:
    first = store.create("s1", text_doc("first").get_update())
    second = store.create("s1", text_doc("second").get_update())
    assert first is True
    assert second is False
    assert stored_text(store, "s1") == "first"


def test_append_then_load(store: PostgresDocumentStore) -> None:
    base = text_doc("a")
    store.create("s1", base.get_update())
    store.append_update("s1", insert_update(base, "b", client_id=2))
    stored = store.load("s1")
    assert stored is not None
    assert len(stored.updates) == 1
    assert stored_text(store, "s1") == "ab"


def test_compact_keeps_rows_missing_from_memory(store: PostgresDocumentStore) -> None:
    """A row appended by another process, not yet in the caller's memory, survives."""
    base = text_doc("a")
    store.create("s1", base.get_update())
    store.append_update("s1", insert_update(base, "X", client_id=2))

    store.compact("s1", base.get_update(), last_update_id=10**9)

    stored = store.load("s1")
    assert stored is not None
    assert stored.updates == []
    assert stored_text(store, "s1") == "aX"


def test_compact_during_uncommitted_append(store: PostgresDocumentStore, postgres_url: str) -> None:
    """An append that commits after the compaction read the rows is neither lost nor merged."""
    base = text_doc("a")
    store.create("s1", base.get_update())
    late = insert_update(base, "L", client_id=3)
    table = f"{store.schema}.codecollab_updates"
    with psycopg.connect(postgres_url) as other:
        other.execute(
            f"INSERT INTO {table} (session_id, data, created_at) VALUES (%s, %s, 0)",
            ("s1", late),
        )
        store.compact("s1", base.get_update())
        other.commit()

    stored = store.load("s1")
    assert stored is not None
    assert len(stored.updates) == 1
    assert stored_text(store, "s1") == "aL"


def test_concurrent_appends_and_compactions(postgres_url: str, schema: str) -> None:
    """Two stores (as two processes) append and compact at once; every update is kept once."""
    stores = [PostgresDocumentStore(postgres_url, schema, pool_size=2) for _ in range(2)]
    base = text_doc("")
    stores[0].create("s1", base.get_update())
    errors: list[BaseException] = []

    def writer(store: PostgresDocumentStore, client_id: int) -> None:
        doc = Doc(client_id=client_id)
        text = doc.get("content", type=Text)
        try:
            for index in range(40):
                state = doc.get_state()
                text.insert(0, f"<{client_id}:{index}>")
                store.append_update("s1", doc.get_update(state))
                if index % 10 == 9:
                    store.compact("s1", base.get_update())
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(stores[i % 2], 10 + i)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    text = stored_text(stores[0], "s1")
    for store in stores:
        store.close()
    assert errors == []
    for client_id in range(10, 14):
        for index in range(40):
            assert text.count(f"<{client_id}:{index}>") == 1, (client_id, index)


def test_unreachable_database_raises() -> None:
    with pytest.raises(StorageError, match="could not connect"):
        PostgresDocumentStore(
            "postgresql://postgres@127.0.0.1:1/test", "public", pool_size=1, timeout=0.5
        )


def test_password_masked_in_errors() -> None:
    with pytest.raises(StorageError) as raised:
        PostgresDocumentStore(
            "postgresql://postgres:hunter2@127.0.0.1:1/test", pool_size=1, timeout=0.5
        )
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize("mode", ["off", "on"])
def test_synchronous_commit_applied(postgres_url: str, schema: str, mode: str) -> None:
    opened = PostgresDocumentStore(postgres_url, schema, pool_size=1, synchronous_commit=mode)
    try:
        with opened._pool.connection() as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
    finally:
        opened.close()
    assert row == (mode,)
