import sqlite3
from pathlib import Path

import pytest

from codecollab.storage import DocumentStore, StorageError


@pytest.fixture
def store(tmp_path: Path) -> DocumentStore:
    return DocumentStore(tmp_path / "sub" / "docs.db")


def test_load_unknown_session_returns_none(store: DocumentStore) -> None:
    assert store.load("nobody") is None


def test_create_then_load_snapshot(store: DocumentStore) -> None:
    assert store.create("s1", b"seed")
    stored = store.load("s1")
    assert stored is not None
    assert (stored.snapshot, stored.updates) == (b"seed", [])


def test_create_twice_keeps_first(store: DocumentStore) -> None:
    store.create("s1", b"first")
    assert not store.create("s1", b"second")
    stored = store.load("s1")
    assert stored is not None
    assert stored.snapshot == b"first"


def test_append_updates_in_order(store: DocumentStore) -> None:
    store.create("s1", b"seed")
    ids = [store.append_update("s1", bytes([i])) for i in range(3)]
    stored = store.load("s1")
    assert stored is not None
    assert stored.updates == list(zip(ids, [b"\x00", b"\x01", b"\x02"], strict=True))


def test_compact_deletes_covered_updates(store: DocumentStore) -> None:
    store.create("s1", b"seed")
    first = store.append_update("s1", b"a")
    store.append_update("s1", b"b")
    store.compact("s1", b"snapshot", first)
    stored = store.load("s1")
    assert stored is not None
    assert (stored.snapshot, [u for _, u in stored.updates]) == (b"snapshot", [b"b"])


def test_sessions_are_separate(store: DocumentStore) -> None:
    store.create("s1", b"one")
    store.create("s2", b"two")
    store.append_update("s2", b"u")
    stored = store.load("s1")
    assert stored is not None
    assert stored.updates == []


def test_append_to_missing_session_fails(store: DocumentStore) -> None:
    with pytest.raises(StorageError, match="session 'ghost'"):
        store.append_update("ghost", b"u")


def test_database_uses_wal(store: DocumentStore) -> None:
    store.create("s1", b"seed")
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_closed_store_raises_storage_error(store: DocumentStore) -> None:
    store.close()
    with pytest.raises(StorageError, match="failed to load session 's1'"):
        store.load("s1")
