"""In-process storage (``memory://``): exact integer token buckets in plain dicts.

Each bucket is stored as its theoretical arrival time (TAT, the GCRA form of a token bucket):
the moment the bucket will be full again. One integer per key is the whole state, so a bucket
that has refilled is indistinguishable from a missing one and can be dropped.

Time is an integer count of nanoseconds from a monotonic clock, multiplied by the policy's
``count``. In those units one token lasts exactly ``period_ns`` units, so every step is
integer arithmetic with no rounding. Both factors are first divided by their greatest common
divisor, which keeps the integers small (a day-long period of a million-per-day policy then
scales time by 1, not by a million) and the arithmetic fast.

Memory is bounded in two ways, without background threads:

- every new key first inspects two stored keys and drops those whose bucket is full again,
  so a table that stops growing costs nothing more, and one that grows sheds idle keys;
- ``max_keys`` caps the live keys. At the cap a new key first makes room by dropping full
  buckets, then a bucket that still admits a request (a reset that favours that client a
  little). A bucket that is currently rejecting requests is never dropped: when every key
  inspected is limited, the check raises ``StorageFullError``, which ``on_storage_error``
  turns into an admit or a reject.

Memory bound: with client keys of about 20 characters, one million live keys take about
175 bytes each on CPython 3.11 x86-64 (about 170 MiB in all); the test
``tests/ratelimiter/test_memory_bound.py`` fails above 250 bytes per key. Longer keys add
their length. ``max_keys`` (default 1,000,000) caps the total.

Safe under threads, and under gevent or eventlet greenlets: the critical section holds a
``threading.Lock`` (a cooperative lock once monkey-patched) and never does I/O.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ..decision import BacklogDecision, BucketState, Decision
from ..policy import Policy
from .base import Bucket, StorageError, StorageFullError, seconds_from

__all__ = ["MemoryStorage"]

logger = logging.getLogger(__name__)

_NS_PER_SECOND = 1_000_000_000
# Each new key first inspects 2 stored keys and drops the full ones, so a sweep pass over n
# keys completes within n/2 insertions: the table holds at most the live keys plus the keys
# inserted during about two passes. A new key at the cap inspects 64 to make room.
_SWEEP_PER_INSERT = 2
_SWEEP_AT_CAP = 64
_EVICTION_LOG_INTERVAL_NS = 60 * _NS_PER_SECOND

_new_tuple = tuple.__new__


class RejectLogDeadline(Protocol):
    """The rejection log throttle of a limiter."""

    #: The clock value, in nanoseconds, from which the next rejection may be logged.
    next_at: int


class CheckOwner(Protocol):
    """The limiter that a function from :meth:`MemoryStorage.check_function` counts for."""

    #: When true, every check goes to ``_check_one_general`` (dry run, event callbacks, or
    #: storage that failed and has not recovered yet).
    _general_only: bool
    _allowed_count: itertools.count
    _limited_count: itertools.count
    _reject_log: RejectLogDeadline

    def _log_rejection(self, decision: Decision) -> None:
        """Log a rejection, unless the throttle suppresses the line."""
        ...

    def _check_one_general(
        self, key: object, cost: object, label: str | None, key_prefix: str, policy: Policy
    ) -> Decision:
        """Validate the arguments and check the one bucket through ``acquire``."""
        ...

    def _storage_error_decision(self, key: str, cost: int, error: StorageError) -> Decision:
        """Decide a check whose storage failed, as ``on_storage_error`` sets."""
        ...


class _Table:
    """The buckets of one policy: key -> TAT in scaled units (ns x ``scale``).

    It is also the :class:`~ratelimiter.decision.BucketSource` of the decisions its buckets
    make: a backlog is the TAT minus the scaled time of the check.
    """

    __slots__ = ("scale", "interval", "tolerance", "units_per_second", "policy", "tats")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        period_ns = policy.period_us * 1000
        divisor = math.gcd(policy.count, period_ns)
        #: Scaled units per nanosecond: count / gcd(count, period_ns).
        self.scale = policy.count // divisor
        #: Scaled units one token lasts: period_ns / gcd(count, period_ns).
        self.interval = period_ns // divisor
        #: Scaled units a full bucket covers.
        self.tolerance = policy.capacity * self.interval
        self.units_per_second = self.scale * _NS_PER_SECOND
        self.tats: dict[str, int] = {}

    def retry_after(self, backlog: int, cost: int) -> float:
        """Seconds until a bucket with ``backlog`` admits ``cost``, never rounded down."""
        if cost * self.interval > self.tolerance:
            return math.inf
        # The bucket admits ``cost`` once the backlog has drained to tolerance - cost tokens.
        wait = backlog + cost * self.interval - self.tolerance
        return seconds_from(wait, self.units_per_second) if wait > 0 else 0.0


class MemoryStorage:
    """Token buckets in this process's memory.

    :param max_keys: the cap on live keys across all policies (default one million).
    :param clock: a function returning integer nanoseconds from a monotonic clock; tests
        inject a fake clock here. Default ``time.monotonic_ns``.
    """

    def __init__(
        self,
        max_keys: int = 1_000_000,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys={max_keys!r} is invalid; use an integer >= 1")
        self.max_keys = max_keys
        #: The clock of every bucket, in integer nanoseconds.
        self.clock = clock
        self._lock = threading.Lock()
        self._tables: dict[str, _Table] = {}
        self._size = 0
        #: Partly used (not limited) buckets dropped at the key cap.
        self.evictions = 0
        self._last_eviction_log = -_EVICTION_LOG_INTERVAL_NS
        # Idle-sweep cursor: a snapshot of one table's keys and a position in it.
        self._sweep_tables: list[_Table] = []
        self._sweep_table: _Table | None = None
        self._sweep_keys: list[str] = []
        self._sweep_position = 0

    def __len__(self) -> int:
        """Return the number of live keys."""
        return self._size

    def acquire(self, buckets: Sequence[Bucket], cost: int) -> tuple[bool, list[BucketState]]:
        """Take ``cost`` tokens from every bucket, or from none when one lacks them."""
        now = self.clock()
        with self._lock:
            return self._acquire_all(buckets, cost, now)

    def _acquire_all(
        self, buckets: Sequence[Bucket], cost: int, now: int
    ) -> tuple[bool, list[BucketState]]:
        tables = [self._tables.get(p.storage_id) or self._table(p) for _, p in buckets]
        backlogs = []
        for table, (key, _) in zip(tables, buckets, strict=True):
            tat = table.tats.get(key, 0) - now * table.scale
            backlogs.append(tat if tat > 0 else 0)
        allowed = all(
            backlog + cost * table.interval <= table.tolerance
            for table, backlog in zip(tables, backlogs, strict=True)
        )

        states = []
        for table, backlog, (key, policy) in zip(tables, backlogs, buckets, strict=True):
            if allowed:
                backlog += cost * table.interval
                if cost:
                    tat = now * table.scale + backlog
                    if key in table.tats:
                        table.tats[key] = tat
                    else:
                        self._insert(table, key, tat, now)
                retry = 0.0
            else:
                retry = table.retry_after(backlog, cost)
            states.append(
                BucketState(
                    policy,
                    (table.tolerance - backlog) // table.interval,
                    backlog / table.units_per_second,
                    retry,
                )
            )
        return allowed, states

    async def acquire_async(
        self, buckets: Sequence[Bucket], cost: int
    ) -> tuple[bool, list[BucketState]]:
        """The same as ``acquire``; it never blocks, so it runs inline on the event loop."""
        return self.acquire(buckets, cost)

    def close(self) -> None:
        """Drop every bucket."""
        with self._lock:
            # Tables stay, emptied in place, because limiters hold them for their fast path.
            for table in self._tables.values():
                table.tats.clear()
            self._size = 0
            self._sweep_tables = []
            self._sweep_table = None
            self._sweep_keys = []

    def _table(self, policy: Policy) -> _Table:
        """Return the table of ``policy``, created if missing; the caller holds the lock."""
        table = self._tables.get(policy.storage_id)
        if table is None:
            table = _Table(policy)
            self._tables[policy.storage_id] = table
        return table

    def check_function(
        self, policy: Policy, key_prefix: str, owner: CheckOwner
    ) -> Callable[[str, int, str | None], Decision]:
        """Build the single-bucket check of ``policy`` that ``owner``, a limiter, calls.

        ``check(key, cost=1, label=None)`` takes ``cost`` tokens from the bucket of
        ``key_prefix + key``, or none when it lacks them, counts the outcome in ``owner`` and
        returns the :class:`Decision`, labelled with ``label`` or else ``key``. The results
        equal those of :meth:`acquire` with that one bucket. The decision is a
        :class:`BacklogDecision`, which computes its numbers only when they are read.

        The function hands the call to ``owner._check_one_general`` when
        ``owner._general_only`` is set, or when ``key`` is not a ``str`` or ``cost`` is not
        an ``int`` of 0 or more. Otherwise it works in one Python frame, with everything it
        reads bound to local names, because it runs for every request.
        """
        with self._lock:
            table = self._table(policy)
        acquire_lock = self._lock.acquire
        release_lock = self._lock.release
        clock = self.clock
        insert = self._insert
        tats_get = table.tats.get
        tats = table.tats
        scale = table.scale
        interval = table.interval
        tolerance = table.tolerance
        allowed_count = owner._allowed_count
        limited_count = owner._limited_count
        reject_log = owner._reject_log
        log_rejection = owner._log_rejection
        check_general = owner._check_one_general
        storage_error = owner._storage_error_decision

        def check(key: str, cost: int = 1, label: str | None = None) -> Decision:
            if (
                owner._general_only
                or cost.__class__ is not int
                or cost < 0
                or key.__class__ is not str
            ):
                return check_general(key, cost, label, key_prefix, policy)
            storage_key = key_prefix + key
            now = clock()
            # Most policies have a scale of 1, and a multiplication of ints beyond 2**30
            # costs more than the test.
            now_scaled = now if scale == 1 else now * scale
            step = interval if cost == 1 else cost * interval

            # A rejection changes no state, so it is decided on one dict read, which the GIL
            # makes atomic, without the lock. It is the same as a rejection decided under the
            # lock an instant before any write that races with it.
            stored = tats_get(storage_key, 0)  # 0: absent, because a stored TAT is positive.
            backlog = (stored if stored > now_scaled else now_scaled) - now_scaled
            allowed = False
            if backlog + step <= tolerance:
                try:
                    # On CPython 3.11, acquire() and release() cost half as much as `with`.
                    acquire_lock()
                    try:
                        stored = tats_get(storage_key, 0)
                        tat = stored if stored > now_scaled else now_scaled
                        backlog = tat - now_scaled
                        if backlog + step <= tolerance:
                            if cost:
                                if stored:
                                    tats[storage_key] = tat + step
                                else:
                                    insert(table, storage_key, tat + step, now)
                            backlog += step
                            allowed = True
                    finally:
                        release_lock()
                except StorageFullError as error:
                    return storage_error(key if label is None else label, cost, error)

            decision = _new_tuple(
                BacklogDecision,
                (
                    allowed,
                    not allowed,
                    key if label is None else label,
                    cost,
                    policy,
                    False,
                    False,
                    None,
                    None,
                    0.0 if allowed else None,
                    table,
                    backlog,
                    None,
                ),
            )
            if allowed:
                next(allowed_count)
            else:
                next(limited_count)
                if now >= reject_log.next_at:
                    log_rejection(decision)
            return decision

        return check

    def _insert(self, table: _Table, key: str, tat: int, now: int) -> None:
        """Store a new key, after dropping idle ones so that memory follows the live keys."""
        self._sweep(now, _SWEEP_PER_INSERT)
        if self._size >= self.max_keys:
            self._make_room(now)
        self._size += 1
        table.tats[key] = tat

    def _make_room(self, now: int) -> None:
        """Drop one bucket so that a new key fits, or raise StorageFullError."""
        size_before = self._size
        candidate = self._sweep(now, _SWEEP_AT_CAP, find_unlimited=True)
        if self._size < size_before:
            return
        if candidate is not None:
            table, key = candidate
            del table.tats[key]
            self._size -= 1
            self.evictions += 1
            self._log_eviction(now)
            return
        raise StorageFullError(
            f"memory storage holds max_keys={self.max_keys} keys and every key inspected is "
            "currently limited; raise max_keys or use redis:// storage"
        )

    def _log_eviction(self, now: int) -> None:
        if now - self._last_eviction_log >= _EVICTION_LOG_INTERVAL_NS:
            self._last_eviction_log = now
            logger.warning(
                "memory rate-limit storage reached max_keys=%d; dropping partly used buckets "
                "(%d so far), which lets those clients start over; raise max_keys",
                self.max_keys,
                self.evictions,
            )

    def _sweep(
        self, now: int, budget: int, find_unlimited: bool = False
    ) -> tuple[_Table, str] | None:
        """Inspect up to ``budget`` stored keys and drop those whose bucket is full again.

        With ``find_unlimited``, return the first inspected bucket that is not full but still
        admits a request of cost 1, or ``None`` when there is none.
        """
        candidate = None
        tables_left = len(self._tables) + 1
        while budget > 0:
            keys = self._sweep_keys
            position = self._sweep_position
            if position >= len(keys):
                tables_left -= 1
                if tables_left < 0 or not self._next_sweep_table():
                    break
                continue
            table = self._sweep_table
            tats = table.tats
            now_scaled = now * table.scale
            end = min(position + budget, len(keys))
            budget -= end - position
            self._sweep_position = end
            for key in keys[position:end]:
                tat = tats.get(key)
                if tat is None:
                    continue
                if tat <= now_scaled:
                    del tats[key]
                    self._size -= 1
                elif (
                    find_unlimited
                    and candidate is None
                    and tat - now_scaled <= table.tolerance - table.interval
                ):
                    candidate = (table, key)
        return candidate

    def _next_sweep_table(self) -> bool:
        if not self._sweep_tables:
            self._sweep_tables = list(self._tables.values())
            if not self._sweep_tables:
                return False
        self._sweep_table = self._sweep_tables.pop()
        self._sweep_keys = list(self._sweep_table.tats)
        self._sweep_position = 0
        return True
