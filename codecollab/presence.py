"""Presence: the live connections of a session, de-duplicated by the client's per-tab id.

The counter is derived from Socket.IO connections, not from awareness entries, so it is right
as soon as a connection opens or closes. A browser tab keeps its ``clientId`` in
``sessionStorage``, which survives a reload: while the old connection of a reloading tab is
still open next to the new one, both carry the same ``clientId`` and count once.

Display names come from clients and are untrusted. ``clean_display_name`` normalizes them
(NFC), drops control and bidirectional-override characters, collapses whitespace and caps the
length. It does not HTML-escape: names travel as JSON data, and the page inserts them as text.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

DEFAULT_NAME = "Anonymous"
NAME_MAX_LENGTH = 40

# Distinct, readable on light and dark backgrounds.
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#469990",
    "#9a6324",
    "#800000",
    "#808000",
    "#000075",
)

_COLOR_PATTERN = re.compile(r"^#[0-9a-fA-F]{6}$")
# Bidirectional embeddings, overrides and isolates can make a name display as another.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_display_name(raw: object) -> str:
    """Return a display name safe to show: printable, single-line, at most 40 code points."""
    if not isinstance(raw, str):
        return DEFAULT_NAME
    name = unicodedata.normalize("NFC", raw)
    kept = []
    for char in name:
        category = unicodedata.category(char)
        if char in _BIDI_CONTROLS or category in ("Cc", "Cs", "Co", "Cn"):
            kept.append(" " if char in "\t\n\r" else "")
        elif category == "Cf" and char != "\u200d":
            # Format characters other than the zero-width joiner of emoji sequences.
            continue
        else:
            kept.append(char)
    name = " ".join("".join(kept).split())
    name = name[:NAME_MAX_LENGTH].strip()
    return name or DEFAULT_NAME


def color_for(client_id: str) -> str:
    """Return a stable palette colour for ``client_id``."""
    digest = hashlib.sha256(client_id.encode("utf-8")).digest()
    return PALETTE[digest[0] % len(PALETTE)]


def clean_color(raw: object) -> str | None:
    """Return ``raw`` when it is a ``#rrggbb`` colour, else ``None``."""
    if isinstance(raw, str) and _COLOR_PATTERN.match(raw):
        return raw.lower()
    return None


@dataclass
class Participant:
    """One live Socket.IO connection in a session."""

    sid: str
    client_id: str
    name: str
    color: str


class Presence:
    """The live connections of one session. The caller serializes access (the room lock)."""

    def __init__(self) -> None:
        self._participants: dict[str, Participant] = {}

    def __len__(self) -> int:
        return len(self._participants)

    def add(self, participant: Participant) -> None:
        """Register a connection."""
        self._participants[participant.sid] = participant

    def remove(self, sid: str) -> Participant | None:
        """Forget a connection; return it, or ``None`` when it was not registered."""
        return self._participants.pop(sid, None)

    def get(self, sid: str) -> Participant | None:
        """Return the connection ``sid``, if registered."""
        return self._participants.get(sid)

    def update_user(self, sid: str, name: str | None, color: str | None) -> bool:
        """Set the name and colour a connection announced; return whether anything changed."""
        participant = self._participants.get(sid)
        if participant is None:
            return False
        changed = False
        if name is not None and name != participant.name:
            participant.name = name
            changed = True
        if color is not None and color != participant.color:
            participant.color = color
            changed = True
        return changed

    def users(self) -> list[dict[str, str]]:
        """Return one entry per ``clientId``, in order of first connection.

        When one ``clientId`` has several connections (a reloading tab), the newest
        connection's name and colour win.
        """
        by_client: dict[str, Participant] = {}
        for participant in self._participants.values():
            by_client[participant.client_id] = participant
        first_seen = list(dict.fromkeys(p.client_id for p in self._participants.values()))
        return [
            {
                "clientId": client_id,
                "name": by_client[client_id].name,
                "color": by_client[client_id].color,
            }
            for client_id in first_seen
        ]

    def snapshot(self) -> dict[str, object]:
        """Return the payload of the ``presence`` event."""
        users = self.users()
        return {"count": len(users), "users": users}
