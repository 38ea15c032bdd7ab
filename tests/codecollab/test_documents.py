import threading
from pathlib import Path

import pytest
from pycrdt import Doc, Text

from codecollab.documents import SEED_TEXT, RoomManager, RoomSettings
from codecollab.errors import DocumentTooLarge, InvalidUpdate, PersistenceFailed
from codecollab.presence import Participant
from codecollab.storage import DocumentStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> DocumentStore:
    return DocumentStore(tmp_path / "docs.db")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def manager(store: DocumentStore, clock: FakeClock, **settings: object) -> RoomManager:
    return RoomManager(store, RoomSettings(**settings), clock=clock)  # type: ignore[arg-type]


def client_update(room_doc: Doc, edit: str) -> bytes:
    """Return the update of a client that synced with ``room_doc`` and appended ``edit``."""
    client = Doc()
    client.apply_update(room_doc.get_update())
    state = client.get_state()
    text = client.get("content", type=Text)
    text += edit
    return client.get_update(state)


def participant(sid: str) -> Participant:
    return Participant(sid, f"tab-{sid}", "Ada", "#000000")


def test_new_session_seeded(store: DocumentStore, clock: FakeClock) -> None:
    room = manager(store, clock).join("s1", participant("a"))
    assert (room.plain_text(), room.language) == (SEED_TEXT, "python")


def test_concurrent_first_joins_seed_once(store: DocumentStore, clock: FakeClock) -> None:
    rooms = manager(store, clock)
    results = []
    barrier = threading.Barrier(8)

    def join(sid: str) -> None:
        barrier.wait()
        results.append(rooms.join("fresh", participant(sid)))

    threads = [threading.Thread(target=join, args=(str(i),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(room) for room in results}) == 1
    assert results[0].plain_text().count("Welcome to CodeCollab") == 1


def test_two_processes_seed_once(store: DocumentStore, clock: FakeClock, tmp_path: Path) -> None:
    # A second manager on the same file stands for a second server process.
    first = manager(store, clock)
    second = manager(DocumentStore(tmp_path / "docs.db"), clock)
    first.join("fresh", participant("a"))
    room = second.join("fresh", participant("b"))
    merged = Doc()
    merged.apply_update(first.loaded("fresh").doc.get_update())
    merged.apply_update(room.doc.get_update())
    assert str(merged.get("content", type=Text)).count("Welcome to CodeCollab") == 1


def test_apply_update_persists(store: DocumentStore, clock: FakeClock) -> None:
    rooms = manager(store, clock)
    room = rooms.join("s1", participant("a"))
    rooms.apply_update(room, client_update(room.doc, "x = 1\n"), origin="a")
    reloaded = manager(store, clock).join("s1", participant("b"))
    assert reloaded.plain_text() == SEED_TEXT + "x = 1\n"


def test_apply_update_relays_with_origin(store: DocumentStore, clock: FakeClock) -> None:
    rooms = manager(store, clock)
    relayed = []
    rooms.on_update = lambda room, update, origin: relayed.append(origin)
    room = rooms.join("s1", participant("a"))
    rooms.apply_update(room, client_update(room.doc, "x"), origin="a")
    assert relayed == ["a"]


def test_apply_update_rejects_garbage(store: DocumentStore, clock: FakeClock) -> None:
    rooms = manager(store, clock)
    room = rooms.join("s1", participant("a"))
    with pytest.raises(InvalidUpdate, match="could not be decoded"):
        rooms.apply_update(room, b"\x05\xff\x01garbage", origin="a")
    assert room.plain_text() == SEED_TEXT


def test_apply_update_rejects_over_cap(store: DocumentStore, clock: FakeClock) -> None:
    rooms = manager(store, clock, doc_max_bytes=4096)
    room = rooms.join("s1", participant("a"))
    with pytest.raises(DocumentTooLarge, match="above the limit of 4,096 bytes"):
        rooms.apply_update(room, client_update(room.doc, "y" * 5000), origin="a")
    assert room.plain_text() == SEED_TEXT


def test_delete_allowed_at_cap(store: DocumentStore, clock: FakeClock) -> None:
    rooms = manager(store, clock, doc_max_bytes=4096)
    room = rooms.join("s1", participant("a"))
    rooms.apply_update(room, client_update(room.doc, "y" * 3500), origin="a")
    client = Doc()
    client.apply_update(room.doc.get_update())
    text = client.get("content", type=Text)
    state = client.get_state()
    del text[0:100]
    rooms.apply_update(room, client.get_update(state), origin="a")
    assert len(room.plain_text()) == len(SEED_TEXT) + 3400


def test_persistence_failure_reported(store: DocumentStore, clock: FakeClock) -> None:
    rooms = manager(store, clock)
    room = rooms.join("s1", participant("a"))
    store.close()
    with pytest.raises(PersistenceFailed, match="could not be saved"):
        rooms.apply_update(room, client_update(room.doc, "x"), origin="a")
    assert room.unsaved


def test_replace_text_minimal(store: DocumentStore, clock: FakeClock) -> None:
    rooms = manager(store, clock)
    room = rooms.join("s1", participant("a"))
    new_text = SEED_TEXT.replace("world", "there")
    change = rooms.replace_text(room, new_text)
    assert room.plain_text() == new_text
    assert change.deleted <= len("world")


def test_sweep_compacts_after_threshold(store: DocumentStore, clock: FakeClock) -> None:
    rooms = manager(store, clock, compact_after_updates=3)
    room = rooms.join("s1", participant("a"))
    for char in "abc":
        rooms.apply_update(room, client_update(room.doc, char), origin="a")
    rooms.sweep()
    stored = store.load("s1")
    assert stored is not None
    assert stored.updates == []


def test_sweep_unloads_idle_room(store: DocumentStore, clock: FakeClock) -> None:
    rooms = manager(store, clock, idle_unload_after=60)
    room = rooms.join("s1", participant("a"))
    rooms.apply_update(room, client_update(room.doc, "kept"), origin="a")
    rooms.leave(room, "a")
    clock.now += 61
    rooms.sweep()
    assert rooms.loaded_count() == 0
    assert manager(store, clock).join("s1", participant("b")).plain_text().endswith("kept")


def test_sweep_keeps_room_with_connection(store: DocumentStore, clock: FakeClock) -> None:
    rooms = manager(store, clock, idle_unload_after=60)
    rooms.join("s1", participant("a"))
    clock.now += 3600
    rooms.sweep()
    assert rooms.loaded_count() == 1


def test_use_without_create_returns_none(store: DocumentStore, clock: FakeClock) -> None:
    with manager(store, clock).use("unknown-session-id", create=False) as room:
        assert room is None
