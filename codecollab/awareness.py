"""The latest awareness state of every client in one session, and which connection owns it.

The server keeps these states so that a newcomer receives every existing user at once, instead
of after the clients' next 15-second awareness renewal. It also announces the removal of a
connection's states when the connection closes, with the bytes y-protocols'
``removeAwarenessStates`` followed by ``encodeAwarenessUpdate`` would produce.

Clock rules follow ``applyAwarenessUpdate`` of y-protocols: an entry replaces the stored one
when its clock is higher, or when the clocks are equal and the entry is a removal. Each
awareness client ID belongs to the first connection that announces it; entries for an ID owned
by another live connection are ignored, so one tab cannot overwrite another's cursor.
"""

from __future__ import annotations

from dataclasses import dataclass

from codecollab.yprotocol import AwarenessEntry, encode_awareness_update


@dataclass(frozen=True)
class AwarenessChange:
    """The result of applying an awareness update from one connection."""

    # Entries that changed the stored states, to relay to the other connections.
    accepted: list[AwarenessEntry]
    # The last accepted non-null state of the sender, for its name and colour.
    latest_state: object | None


class AwarenessRegistry:
    """Awareness states of one session. The caller serializes access (the room lock)."""

    def __init__(self) -> None:
        self._entries: dict[int, AwarenessEntry] = {}
        self._clocks: dict[int, int] = {}
        self._owners: dict[int, str] = {}
        # Every awareness client ID each connection has sent, so closing it frees their clocks.
        self._sent_by: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, entries: list[AwarenessEntry], sid: str) -> AwarenessChange:
        """Apply the entries a connection sent and return those that changed anything."""
        accepted = []
        latest_state = None
        for entry in entries:
            owner = self._owners.get(entry.client_id)
            if owner is not None and owner != sid:
                continue
            current_clock = self._clocks.get(entry.client_id, 0)
            removal = entry.removed
            newer = entry.clock > current_clock
            same_clock_removal = (
                entry.clock == current_clock and removal and entry.client_id in self._entries
            )
            if not (newer or same_clock_removal or entry.client_id not in self._clocks):
                continue

            self._clocks[entry.client_id] = entry.clock
            self._sent_by.setdefault(sid, set()).add(entry.client_id)
            if removal:
                self._entries.pop(entry.client_id, None)
                self._owners.pop(entry.client_id, None)
            else:
                self._entries[entry.client_id] = entry
                self._owners[entry.client_id] = sid
                latest_state = entry.state
            accepted.append(entry)
        return AwarenessChange(accepted, latest_state)

    def snapshot(self) -> bytes | None:
        """Return an awareness update with every stored state, or ``None`` when there is none."""
        if not self._entries:
            return None
        return encode_awareness_update(list(self._entries.values()))

    def remove_connection(self, sid: str) -> bytes | None:
        """Drop the states owned by ``sid`` and return the update announcing their removal."""
        removals = []
        for client_id in sorted(self._sent_by.pop(sid, set())):
            owner = self._owners.get(client_id)
            if owner is not None and owner != sid:
                continue
            self._owners.pop(client_id, None)
            clock = self._clocks.pop(client_id, 0)
            if self._entries.pop(client_id, None) is not None:
                removals.append(AwarenessEntry(client_id, clock, "null"))
        if not removals:
            return None
        return encode_awareness_update(removals)
