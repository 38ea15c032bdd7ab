"""Collaborative documents: one pycrdt ``Doc`` per active session, called a room.

A room contains the document, the session's live connections (presence) and awareness states.
``RoomManager`` loads rooms from storage on first use, seeds new sessions, applies updates
(size cap, persistence, relay), compacts storage and unloads rooms nobody uses.

Shared types in every document: ``Y.Text`` named ``content`` and ``Y.Map`` named ``meta``, whose
key ``language`` names the editor language (for example ``python``).

Locking: the manager lock guards the table of rooms and is taken before a room's own lock when
both are needed. Connections and HTTP requests "pin" a room while they use it, and only an
unpinned, idle room is unloaded, so a session never has two rooms in memory at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pycrdt import Doc, Map, Text, TransactionEvent, merge_updates

from codecollab.awareness import AwarenessRegistry
from codecollab.errors import (
    DocumentTooLarge,
    InvalidMessage,
    InvalidUpdate,
    PersistenceFailed,
    SessionUnavailable,
)
from codecollab.presence import Participant, Presence
from codecollab.storage import DocumentStore, StorageError
from codecollab.text_diff import apply_edits, diff_edits
from codecollab.text_offsets import Unit, length_in

logger = logging.getLogger(__name__)

CONTENT = "content"
META = "meta"
LANGUAGE_KEY = "language"

# Yjs encodes an update that changes nothing as these two bytes (no structs, no deletions).
EMPTY_UPDATE = b"\x00\x00"

SEED_TEXT = (
    "# Welcome to CodeCollab.\n"
    "# Everyone who opens this page edits this file with you, live.\n"
    "# Share the link to invite someone. The language menu changes highlighting for all.\n"
    "\n"
    'print("Hello, world!")\n'
)

# Relays an applied update to the session's other connections: (room, update, origin sid).
UpdateListener = Callable[["Room", bytes, "str | None"], None]


@dataclass(frozen=True)
class RoomSettings:
    """Limits and timings of rooms. Sizes are bytes, durations seconds."""

    doc_max_bytes: int = 2 * 1024 * 1024
    compact_after_updates: int = 500
    compact_interval: float = 30.0
    idle_unload_after: float = 60.0
    seed_language: str = "python"


@dataclass(frozen=True)
class TextChange:
    """The outcome of replacing a document's text."""

    edits: int
    inserted: int
    deleted: int


class Room:
    """One loaded session. Mutable state is guarded by ``lock``."""

    def __init__(self, session_id: str, doc: Doc, last_update_id: int, now: float) -> None:
        self.session_id = session_id
        self.doc = doc
        self.text: Text = doc.get(CONTENT, type=Text)
        self.meta: Map = doc.get(META, type=Map)
        self.lock = threading.RLock()
        self.presence = Presence()
        self.awareness = AwarenessRegistry()
        # Estimated size of the encoded document: exact after loading and compaction, then
        # grown by the size of every applied update (an upper bound in practice).
        self.size_bytes = len(doc.get_update())
        # Row id of the last update appended to storage; compaction deletes rows up to it.
        self.last_update_id = last_update_id
        self.updates_since_compaction = 0
        # True when memory contains changes that storage lacks (an append failed).
        self.unsaved = False
        self.compacted_at = now
        self.last_activity = now
        # Connections and requests currently using the room; it is unloaded only at zero.
        self.pins = 0
        self.unloaded = False

    @property
    def language(self) -> str | None:
        """The editor language stored in ``meta``, if set."""
        value = self.meta.get(LANGUAGE_KEY)
        return value if isinstance(value, str) else None

    def state_vector(self) -> bytes:
        """Return the document's state vector (the payload of a sync step 1)."""
        with self.lock:
            return self.doc.get_state()

    def update_since(self, state_vector: bytes) -> bytes:
        """Return everything the holder of ``state_vector`` lacks (the payload of a step 2).

        :raises InvalidMessage: when ``state_vector`` does not decode.
        """
        with self.lock:
            try:
                return self.doc.get_update(state_vector)
            except ValueError as exc:
                raise InvalidMessage(f"the sync step 1 state vector is invalid: {exc}") from None

    def plain_text(self) -> str:
        """Return the current text of ``content``."""
        with self.lock:
            return str(self.text)


class RoomManager:
    """Loads, seeds, updates, compacts and unloads rooms.

    :param store: where documents are kept.
    :param settings: size cap and compaction and unloading timings.
    :param clock: monotonic time source, in seconds.
    """

    def __init__(
        self,
        store: DocumentStore,
        settings: RoomSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._rooms: dict[str, Room] = {}
        self._lock = threading.Lock()
        self.on_update: UpdateListener | None = None
        # Called after an update is relayed and before it is stored. The server passes a
        # zero-second cooperative sleep, so the relay's writes to peers go out before the
        # storage commit blocks the gevent loop.
        self.before_store: Callable[[], None] | None = None
        # Called with each room just loaded from storage, before anyone can use it. Several
        # processes use it to apply updates that were relayed but not yet stored.
        self.on_load: Callable[[Room], None] | None = None

    # Opening and closing

    def join(self, session_id: str, participant: Participant) -> Room:
        """Open (loading or creating) the room of ``session_id`` and register a connection.

        :raises SessionUnavailable: when storage fails.
        """
        with self._lock:
            room = self._open_locked(session_id, create=True)
            assert room is not None
            with room.lock:
                room.presence.add(participant)
                room.pins += 1
                room.last_activity = self._clock()
        return room

    def leave(self, room: Room, sid: str) -> tuple[Participant | None, bytes | None]:
        """Unregister a connection.

        :return: the participant (``None`` when ``sid`` was not registered) and the awareness
            update that removes its states (``None`` when it had none).
        """
        with room.lock:
            participant = room.presence.remove(sid)
            removal = room.awareness.remove_connection(sid)
            if participant is not None:
                room.pins -= 1
            room.last_activity = self._clock()
        return participant, removal

    @contextmanager
    def use(self, session_id: str, *, create: bool) -> Iterator[Room | None]:
        """Pin the room of ``session_id`` for the duration of a request.

        Yields ``None`` when the session does not exist and ``create`` is false.

        :raises SessionUnavailable: when storage fails.
        """
        with self._lock:
            room = self._open_locked(session_id, create=create)
            if room is not None:
                with room.lock:
                    room.pins += 1
        try:
            yield room
        finally:
            if room is not None:
                with room.lock:
                    room.pins -= 1
                    room.last_activity = self._clock()

    def loaded(self, session_id: str) -> Room | None:
        """Return the room of ``session_id`` if it is in memory."""
        with self._lock:
            return self._rooms.get(session_id)

    def loaded_session_ids(self) -> list[str]:
        """Return the ids of the sessions in memory."""
        with self._lock:
            return list(self._rooms)

    def loaded_count(self) -> int:
        """Return the number of rooms in memory."""
        with self._lock:
            return len(self._rooms)

    def _open_locked(self, session_id: str, *, create: bool) -> Room | None:
        room = self._rooms.get(session_id)
        if room is not None:
            return room
        try:
            room = self._load(session_id, create)
        except StorageError as exc:
            logger.error("session %s: failed to load: %s", session_id, exc)
            raise SessionUnavailable(
                f"Session {session_id!r} could not be loaded from storage; try again shortly"
            ) from exc
        if room is not None:
            if self.on_load is not None:
                self.on_load(room)
            self._rooms[session_id] = room
        return room

    def _load(self, session_id: str, create: bool) -> Room | None:
        stored = self._store.load(session_id)
        if stored is None:
            if not create:
                return None
            doc = self._seed_document()
            if self._store.create(session_id, doc.get_update()):
                logger.info("session %s: created with seed content", session_id)
                return Room(session_id, doc, last_update_id=0, now=self._clock())
            # Another process created it between the two statements: use the stored one.
            stored = self._store.load(session_id)
            if stored is None:
                raise StorageError(f"session {session_id!r} vanished right after its creation")

        doc = Doc(allow_multithreading=True)
        doc.apply_update(stored.snapshot)
        last_update_id = 0
        for update_id, update in stored.updates:
            try:
                doc.apply_update(update)
            except ValueError as exc:
                logger.error(
                    "session %s: skipped stored update %d that does not decode: %s",
                    session_id,
                    update_id,
                    exc,
                )
            last_update_id = update_id
        room = Room(session_id, doc, last_update_id=last_update_id, now=self._clock())
        room.updates_since_compaction = len(stored.updates)
        logger.info(
            "session %s: loaded (%d bytes, %d updates since the last compaction)",
            session_id,
            room.size_bytes,
            len(stored.updates),
        )
        return room

    def _seed_document(self) -> Doc:
        doc = Doc(allow_multithreading=True)
        text = doc.get(CONTENT, type=Text)
        meta = doc.get(META, type=Map)
        with doc.transaction():
            text.insert(0, SEED_TEXT)
            meta[LANGUAGE_KEY] = self._settings.seed_language
        return doc

    # Changing documents

    def apply_update(self, room: Room, update: bytes, origin: str | None) -> None:
        """Apply a Yjs v1 update, relay it to the other connections and append it to storage.

        The update is relayed before it is stored, and this method returns only once it is
        stored, so a caller that acknowledges after it returns acknowledges only stored edits.
        Updates may be stored in another order than they were applied. Compaction stays correct
        because a row is written only after its update is in memory.

        :param origin: the Socket.IO sid of the sender, which the relay skips; ``None`` for
            edits made by the server.
        :raises InvalidUpdate: when the update does not decode; the document is unchanged.
        :raises DocumentTooLarge: when the update would push the document over the cap.
        :raises PersistenceFailed: when the update was applied and relayed but not stored.
        """
        if update == EMPTY_UPDATE:
            return
        with room.lock:
            projected = self._check_size(room, update)
            try:
                room.doc.apply_update(update)
            except ValueError as exc:
                raise InvalidUpdate(
                    f"The update could not be decoded ({exc}); the document is unchanged"
                ) from None
            room.size_bytes = (projected if projected is not None else room.size_bytes) + len(
                update
            )
            room.last_activity = self._clock()
            self._relay(room, update, origin)
        # The commit runs outside the room lock, so the next update of the session is applied
        # and relayed meanwhile: a PostgreSQL commit with fsync takes milliseconds.
        if self.before_store is not None:
            self.before_store()
        self._append(room, update)

    def replace_text(self, room: Room, new_text: str) -> TextChange:
        """Replace the text of ``content`` with ``new_text`` through a minimal diff.

        Only changed ranges are deleted and inserted, so concurrent typists keep their edits
        and never see the text duplicated.

        :raises DocumentTooLarge: when the new text would push the document over the cap.
        :raises PersistenceFailed: when the change was applied but not stored.
        """
        with room.lock:
            old_text = str(room.text)
            edits = diff_edits(old_text, new_text)
            if not edits:
                return TextChange(0, 0, 0)

            # Edit a copy under the server's own client id, then apply the resulting update
            # through the same path as a client's, with the same size check and relay.
            scratch = Doc(client_id=room.doc.client_id, allow_multithreading=True)
            scratch.apply_update(room.doc.get_update())
            updates: list[bytes] = []

            def capture(event: TransactionEvent) -> None:
                updates.append(event.update)

            subscription = scratch.observe(capture)
            scratch_text = scratch.get(CONTENT, type=Text)
            with scratch.transaction():
                apply_edits(scratch_text, old_text, edits)
            scratch.unobserve(subscription)

            for update in updates:
                self.apply_update(room, update, origin=None)

        inserted = sum(len(edit.text) for edit in edits)
        deleted = sum(edit.end - edit.start for edit in edits)
        return TextChange(len(edits), inserted, deleted)

    def _check_size(self, room: Room, update: bytes) -> int | None:
        """Reject ``update`` when it would push the document over the cap.

        :return: the exact document size before the update when it had to be measured, so the
            caller can reset its estimate. ``None`` when the estimate was far below the cap.
        """
        cap = self._settings.doc_max_bytes
        if room.size_bytes + len(update) <= cap:
            return None

        current_state = room.doc.get_update()
        if len(current_state) + len(update) <= cap:
            return len(current_state)

        # Close to the cap, measure the result on a copy: deletions shrink the document, so an
        # update is rejected only if the document would really end up over the cap.
        trial = Doc(allow_multithreading=True)
        trial.apply_update(current_state)
        try:
            trial.apply_update(update)
        except ValueError as exc:
            raise InvalidUpdate(
                f"The update could not be decoded ({exc}); the document is unchanged"
            ) from None
        projected = len(trial.get_update())
        if projected > cap:
            raise DocumentTooLarge(
                f"This edit would make the document {projected:,} bytes, above the limit of "
                f"{cap:,} bytes; the edit was not saved. Remove text before adding more."
            )
        return projected - len(update)

    def apply_remote_update(self, session_id: str, update: bytes) -> bool:
        """Apply an update that another editor process applied and relays.

        Nothing is stored or relayed here. Waiting for the manager lock means that a load in
        progress finishes first (with ``on_load``), so an update is never applied to a room
        about to be replaced.

        :return: whether the session is loaded in this process; when it is not, nothing is
            applied and the caller keeps the update for a later load (see ``on_load``).
        """
        with self._lock:
            room = self._rooms.get(session_id)
        if room is None:
            return False
        with room.lock:
            try:
                room.doc.apply_update(update)
            except ValueError as exc:
                logger.error(
                    "session %s: skipped an update from another process that does not decode: %s",
                    session_id,
                    exc,
                )
                return True
            room.size_bytes += len(update)
        return True

    def refresh_from_storage(self, room: Room) -> bytes | None:
        """Apply whatever storage holds that the room lacks, and return it as one update.

        Several processes use it to recover updates that another process stored but whose
        relay never arrived (Redis pub/sub delivers at most once, so a dropped connection to
        the message queue loses messages).

        :return: the update that changed the room, for its local clients, or ``None`` when
            the room already held everything stored.
        :raises StorageError: when the load fails.
        """
        stored = self._store.load(room.session_id)
        if stored is None:
            return None
        merged = Doc()
        merged.apply_update(stored.snapshot)
        for _update_id, update in stored.updates:
            try:
                merged.apply_update(update)
            except ValueError:
                continue  # logged when the room was loaded

        changes: list[bytes] = []
        with room.lock:
            missing = merged.get_update(room.doc.get_state())
            subscription = room.doc.observe(lambda event: changes.append(event.update))
            try:
                room.doc.apply_update(missing)
            finally:
                room.doc.unobserve(subscription)
            if not changes:
                return None
            room.size_bytes = len(room.doc.get_update())
        return changes[0] if len(changes) == 1 else merge_updates(*changes)

    def _relay(self, room: Room, update: bytes, origin: str | None) -> None:
        if self.on_update is None:
            return
        try:
            self.on_update(room, update, origin)
        except Exception:
            logger.exception("session %s: failed to relay an update", room.session_id)

    def _append(self, room: Room, update: bytes) -> None:
        try:
            update_id = self._store.append_update(room.session_id, update)
        except StorageError as exc:
            with room.lock:
                room.unsaved = True
            logger.error("session %s: persistence failed: %s", room.session_id, exc)
            raise PersistenceFailed(
                "The edit is applied but could not be saved yet; the server retries when it "
                "next compacts this session"
            ) from exc
        with room.lock:
            # Concurrent appends may finish out of order. Compaction deletes rows up to the
            # highest id, and every row up to it contains an update already in memory.
            room.last_update_id = max(room.last_update_id, update_id)
            room.updates_since_compaction += 1

    # Compaction and unloading

    def compact(self, room: Room) -> bool:
        """Replace the stored updates of ``room`` with one snapshot; return whether it worked."""
        with room.lock:
            snapshot = room.doc.get_update()
            try:
                self._store.compact(room.session_id, snapshot, room.last_update_id)
            except StorageError as exc:
                logger.error("session %s: compaction failed: %s", room.session_id, exc)
                return False
            logger.debug(
                "session %s: compacted %d updates into %d bytes",
                room.session_id,
                room.updates_since_compaction,
                len(snapshot),
            )
            room.size_bytes = len(snapshot)
            room.updates_since_compaction = 0
            room.unsaved = False
            room.compacted_at = self._clock()
        return True

    def sweep(self) -> None:
        """Compact rooms that are due and unload rooms that have been idle long enough."""
        now = self._clock()
        with self._lock:
            rooms = list(self._rooms.values())
        for room in rooms:
            with room.lock:
                if self._compaction_due(room, now):
                    self.compact(room)

        with self._lock:
            for session_id, room in list(self._rooms.items()):
                with room.lock:
                    idle = now - room.last_activity >= self._settings.idle_unload_after
                    if room.pins > 0 or not idle:
                        continue
                    if (room.unsaved or room.updates_since_compaction) and not self.compact(room):
                        continue
                    del self._rooms[session_id]
                    room.unloaded = True
                logger.info(
                    "session %s: unloaded after %.0f s idle", session_id, now - room.last_activity
                )

    def close(self) -> None:
        """Compact every room with changes, for a clean shutdown."""
        with self._lock:
            rooms = list(self._rooms.values())
        for room in rooms:
            if room.unsaved or room.updates_since_compaction:
                self.compact(room)

    def _compaction_due(self, room: Room, now: float) -> bool:
        if room.unsaved:
            return True
        if room.updates_since_compaction >= self._settings.compact_after_updates:
            return True
        return (
            room.updates_since_compaction > 0
            and now - room.compacted_at >= self._settings.compact_interval
        )


def text_size(text: str) -> dict[str, int]:
    """Return the length of ``text`` in each unit, plus its line count."""
    return {
        "characters": length_in(text, Unit.CODE_POINT),
        "utf8_bytes": length_in(text, Unit.UTF8),
        "utf16_units": length_in(text, Unit.UTF16),
        "lines": text.count("\n") + 1 if text else 0,
    }
