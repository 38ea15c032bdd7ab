"""Server-Sent Events of task changes, for live progress bars.

Workers write to the task store from other processes, so the producer learns of changes by
polling: one background thread reads rows whose ``seq`` grew and fans them out to every
connected client. Each event carries ``id: <seq>``, so a browser that reconnects with
``Last-Event-ID`` receives the changes it missed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Iterator

from scheduler.taskstore import TaskRecord, TaskStore

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.3
KEEPALIVE_INTERVAL = 15.0
SUBSCRIBER_BUFFER = 1000


def format_event(record: TaskRecord) -> str:
    """Return one ``event: task`` message in the SSE wire format."""
    data = json.dumps(record.to_json(), separators=(",", ":"))
    return f"id: {record.seq}\nevent: task\ndata: {data}\n\n"


class TaskEvents:
    """Polls the task store and delivers each change to the subscribed clients."""

    def __init__(self, store: TaskStore, poll_interval: float = POLL_INTERVAL) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self._subscribers: set[queue.Queue[TaskRecord | None]] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="task-events", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        last = self.store.last_seq()
        errors = 0
        while not self._stop.wait(self.poll_interval):
            try:
                changes = self.store.changed_since(last)
            except Exception as exc:  # noqa: BLE001 - keep streaming after a locked database
                errors += 1
                if errors in (1, 10, 100) or errors % 1000 == 0:
                    logger.error("task event poll failed (%d times so far): %s", errors, exc)
                continue
            for record in changes:
                last = max(last, record.seq)
                self._publish(record)

    def _publish(self, record: TaskRecord) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber.put_nowait(record)
            except queue.Full:
                # A client that reads too slowly is dropped; its browser reconnects and
                # catches up through Last-Event-ID.
                self._remove(subscriber)
                with subscriber.mutex:
                    subscriber.queue.clear()
                subscriber.put_nowait(None)

    def _remove(self, subscriber: queue.Queue[TaskRecord | None]) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)

    def stream(self, last_event_id: str | None = None) -> Iterator[str]:
        """Yield SSE text for one client until it disconnects.

        :param last_event_id: the ``Last-Event-ID`` header of a reconnecting client; changes
            after that ``seq`` are sent first.
        """
        subscriber: queue.Queue[TaskRecord | None] = queue.Queue(maxsize=SUBSCRIBER_BUFFER)
        with self._lock:
            self._subscribers.add(subscriber)
        self._ensure_thread()
        try:
            yield "retry: 2000\n: connected\n\n"
            if last_event_id is not None and last_event_id.isdigit():
                for record in self.store.changed_since(int(last_event_id)):
                    yield format_event(record)
            while True:
                try:
                    record = subscriber.get(timeout=KEEPALIVE_INTERVAL)
                except queue.Empty:
                    yield ": keepalive\n\n"
                    continue
                if record is None:
                    return
                yield format_event(record)
        finally:
            self._remove(subscriber)

    def close(self) -> None:
        """Stop the polling thread and end every stream."""
        self._stop.set()
        with self._lock:
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for subscriber in subscribers:
            with contextlib.suppress(queue.Full):
                subscriber.put_nowait(None)
