from codecollab.awareness import AwarenessRegistry
from codecollab.yprotocol import AwarenessEntry, decode_awareness_update


def entry(client_id: int, clock: int, state: str = '{"user":{"name":"Ada"}}') -> AwarenessEntry:
    return AwarenessEntry(client_id, clock, state)


def test_apply_stores_new_client() -> None:
    registry = AwarenessRegistry()
    change = registry.apply([entry(1, 1)], "sid-a")
    assert change.accepted == [entry(1, 1)]
    assert change.latest_state == {"user": {"name": "Ada"}}


def test_apply_ignores_older_clock() -> None:
    registry = AwarenessRegistry()
    registry.apply([entry(1, 5)], "sid-a")
    assert registry.apply([entry(1, 4)], "sid-a").accepted == []


def test_apply_ignores_client_owned_by_other_connection() -> None:
    registry = AwarenessRegistry()
    registry.apply([entry(1, 1)], "sid-a")
    assert registry.apply([entry(1, 9)], "sid-b").accepted == []


def test_apply_same_clock_removal_removes() -> None:
    registry = AwarenessRegistry()
    registry.apply([entry(1, 3)], "sid-a")
    registry.apply([entry(1, 3, "null")], "sid-a")
    assert len(registry) == 0


def test_snapshot_contains_every_state() -> None:
    registry = AwarenessRegistry()
    registry.apply([entry(1, 1)], "sid-a")
    registry.apply([entry(2, 4)], "sid-b")
    snapshot = registry.snapshot()
    assert snapshot is not None
    assert {e.client_id for e in decode_awareness_update(snapshot)} == {1, 2}


def test_snapshot_none_when_empty() -> None:
    assert AwarenessRegistry().snapshot() is None


def test_remove_connection_announces_null_states() -> None:
    registry = AwarenessRegistry()
    registry.apply([entry(1, 2), entry(3, 7)], "sid-a")
    registry.apply([entry(2, 1)], "sid-b")
    removal = registry.remove_connection("sid-a")
    assert removal is not None
    assert decode_awareness_update(removal) == [entry(1, 2, "null"), entry(3, 7, "null")]
    assert len(registry) == 1


def test_remove_connection_without_states_returns_none() -> None:
    assert AwarenessRegistry().remove_connection("sid-x") is None
