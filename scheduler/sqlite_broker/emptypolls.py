"""Skipping polls of queues that cannot hold a deliverable message.

A poll of a queue runs a claiming UPDATE, which takes SQLite's write lock even when it finds
nothing, and a Celery worker polls each consumed queue 20 times a second. A queue that was
found empty stays empty until one of two things happens:

- a connection commits a change to the database: a publish, a release, a requeue, a renewal;
- a lease in the queue ends, which makes its message ready again without any write.

:class:`EmptyPolls` remembers, for each queue found empty, the database's change token at that
poll (see :meth:`.store.Store.change_token`) and the end of the earliest lease in the queue.
A poll is skipped while the token is the same and that time has not come. As a safeguard, a
full poll runs at least every :data:`MAX_SKIP` seconds.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

# Maximum time in seconds between two full polls of a queue that looks unchanged.
MAX_SKIP = 1.0


@dataclass(frozen=True)
class _Empty:
    token: Hashable  # the store's change token read before the empty poll
    recheck_at: float  # UNIX time at which a lease ends or MAX_SKIP runs out


class EmptyPolls:
    """The queues of one channel that were found empty, and until when that holds."""

    def __init__(self) -> None:
        self._queues: dict[str, _Empty] = {}

    def unchanged(self, queue: str, token: Hashable, now: float) -> bool:
        """Return whether ``queue`` was found empty with this ``token`` and nothing is due."""
        empty = self._queues.get(queue)
        return empty is not None and empty.token == token and now < empty.recheck_at

    def record(self, queue: str, token: Hashable, next_lease_end: float | None, now: float) -> None:
        """Remember that a poll that started with ``token`` found ``queue`` empty.

        :param next_lease_end: the end of the earliest lease in ``queue``, None without leases.
        """
        recheck_at = now + MAX_SKIP
        if next_lease_end is not None:
            recheck_at = min(recheck_at, next_lease_end)
        self._queues[queue] = _Empty(token, recheck_at)

    def forget(self, queue: str | None = None) -> None:
        """Poll ``queue``, or every queue when None, in full next time."""
        if queue is None:
            self._queues.clear()
        else:
            self._queues.pop(queue, None)
