"""The lease keeper: a background thread of each consuming connection.

While its process lives, the keeper extends the leases of every message the connection holds
unacknowledged. Celery holds a task with an ETA or countdown unacknowledged in the worker until
it runs, and holds a late-acknowledged task until it ends, so without renewal such a message would
be delivered a second time once the visibility timeout passed. Only a consumer that stops renewing,
because its process was killed or hangs with the GIL held, lets its leases run out.

The keeper also ends the leases of holders whose process has exited (see :mod:`.liveness`), marks
consumed queues as used (x-expires) and runs the periodic maintenance.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable

from .deadletter import log_expired_dead_letters
from .liveness import owner_is_dead
from .settings import BrokerSettings
from .store import Store

logger = logging.getLogger(__name__)

# Seconds between checks for dead lease holders, which bounds how long the messages of a
# killed worker on this machine wait before redelivery.
MAX_TICK = 1.0
ERROR_LOG_EVERY = 20


class LeaseKeeper:
    """Renews the leases of ``owner`` and maintains the database from a daemon thread.

    :param settings: the connection's settings; the keeper opens its own SQLite connection.
    :param owner: the lease-holder token of the connection.
    :param consumed_queues: returns the names of the queues the connection consumes from.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        owner: str,
        consumed_queues: Callable[[], Iterable[str]],
    ):
        self.settings = settings
        self.owner = owner
        self._consumed_queues = consumed_queues
        self._store = Store(
            settings.path, busy_timeout=settings.busy_timeout, synchronous=settings.synchronous
        )
        self._stop = threading.Event()
        self._errors = 0
        self._renewed_at = 0.0
        self._thread = threading.Thread(
            target=self._run, name=f"sqlite-broker-keeper-{owner}", daemon=True
        )

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()
        logger.debug(
            "sqlite broker %s: lease keeper of %s started, renewing every %.1f s",
            self.settings.path,
            self.owner,
            self.settings.renew_interval,
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close its connection."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._store.close()

    @property
    def tick_interval(self) -> float:
        """Seconds between checks for dead holders; renewal and maintenance run on these ticks."""
        return min(self.settings.renew_interval, self.settings.maintenance_interval, MAX_TICK)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_interval):
            self.tick()
        self._store.close()

    def tick(self) -> None:
        """Renew the leases, mark the queues as used and run maintenance when it is due."""
        now = time.time()
        renewed = 0
        try:
            if now - self._renewed_at >= self.settings.renew_interval:
                renewed = self._store.renew(self.owner, now + self.settings.visibility_timeout)
                self._store.touch_queues(list(self._consumed_queues()), now)
                self._renewed_at = now
            release_dead_owners(self._store, now)
            if self._store.claim_maintenance(self.settings.maintenance_interval, now):
                self._maintain(now)
        except sqlite3.Error as exc:
            self._errors += 1
            if self._errors % ERROR_LOG_EVERY == 1:
                logger.error(
                    "sqlite broker %s: lease renewal of %s failed (%d failures so far); "
                    "its messages are redelivered if this lasts beyond the visibility "
                    "timeout of %.0f s: %s",
                    self.settings.path,
                    self.owner,
                    self._errors,
                    self.settings.visibility_timeout,
                    exc,
                )
            return
        if renewed:
            logger.debug("sqlite broker: renewed %d leases of %s", renewed, self.owner)

    def _maintain(self, now: float) -> None:
        report = self._store.maintain(self.settings.fanout_ttl, now)
        log_expired_dead_letters(report.dead_lettered)
        if report.expired_messages or report.expired_queues:
            logger.info(
                "sqlite broker %s: deleted %d expired messages and %d idle queues %s",
                self.settings.path,
                report.expired_messages,
                len(report.expired_queues),
                report.expired_queues,
            )
        logger.debug(
            "sqlite broker %s: maintenance removed %d old broadcasts, freed %d pages",
            self.settings.path,
            report.expired_fanout,
            report.freed_pages,
        )


def release_dead_owners(store: Store, now: float) -> int:
    """End the leases of holders on this host whose process has exited; return the count."""
    released = 0
    for owner in store.lease_holders(now):
        if owner_is_dead(owner):
            count = store.end_leases(owner)
            released += count
            logger.warning(
                "sqlite broker %s: process of %s has exited; its %d unacknowledged messages "
                "are delivered again",
                store.path,
                owner,
                count,
            )
    return released
