"""The framework-free rate limiter: policies, a storage backend and the failure policy."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from .decision import BucketState, Decision, RetrySource, lazy_decision
from .policy import Policy, parse_policies
from .storage import Bucket, Storage, StorageError, storage_from_url

__all__ = ["RateLimitEvent", "RateLimiter"]

logger = logging.getLogger(__name__)

_new_tuple = tuple.__new__
_monotonic = time.monotonic


class BucketTable(RetrySource, Protocol):
    """A backend's buckets of one policy (see ``MemoryStorage.table``, ``RedisStorage.table``)."""

    def take(self, key: str, cost: int) -> tuple[bool, int, float, int]:
        """Take ``cost`` tokens for ``key``: allowed, remaining, reset_after and backlog."""
        ...


EventKind = Literal["allowed", "limited", "dry_run", "storage_error"]
_EVENT_KINDS: tuple[EventKind, ...] = ("allowed", "limited", "dry_run", "storage_error")
# Rejections and dry-run hits are logged at most once per interval per limiter, with a count.
_REJECT_LOG_INTERVAL = 10.0


@dataclass(slots=True)
class RateLimitEvent:
    """What ``on_event`` receives after every check."""

    #: ``allowed``, ``limited`` (rejected), ``dry_run`` (would be rejected, let through) or
    #: ``storage_error`` (storage failed and ``on_storage_error`` decided).
    kind: EventKind
    decision: Decision
    #: The storage failure, for ``storage_error`` events.
    error: Exception | None = None


class RateLimiter:
    """Checks client keys against one or more token-bucket policies.

    :param policies: a policy string such as ``"5/second, burst 10; 1000/hour"``, a
        :class:`Policy`, or a list of either. Every policy must admit a request. ``None``
        leaves the limiter without policies of its own, for integrations that pass buckets
        to :meth:`check_buckets`.
    :param storage: ``"memory://"`` (the default), ``"redis://host:6379/0"``,
        ``"rediss://..."``, or a storage object; pass the same object to several limiters to
        share one connection pool.
    :param on_storage_error: ``"allow"`` (the default) admits requests while storage fails;
        ``"deny"`` rejects them, which the web integrations answer with 503.
    :param timeout: seconds one storage call may take, connecting included (default 0.1).
        Used only when ``storage`` is a URL.
    :param dry_run: when true, requests the policies reject are counted, logged and let
        through, so that a new limit can be observed before it is enforced.
    :param key_prefix: prepended to every storage key (default ``"ratelimit"``), so that
        several applications can share one Redis database.
    :param on_event: called with a :class:`RateLimitEvent` after every check, from the
        thread (or coroutine) that checked. Exceptions it raises are logged and ignored.
    :param storage_retry_after: the ``retry_after`` in seconds of requests rejected because
        storage failed with ``on_storage_error="deny"`` (default 1).
    :param clock: integer-nanosecond monotonic clock for ``memory://``; tests inject a fake.
    :raises ValueError: for a malformed policy or an unknown setting value.
    """

    def __init__(
        self,
        policies: str | Policy | Sequence[str | Policy] | None,
        storage: str | Storage = "memory://",
        *,
        on_storage_error: Literal["allow", "deny"] = "allow",
        timeout: float = 0.1,
        dry_run: bool = False,
        key_prefix: str = "ratelimit",
        on_event: Callable[[RateLimitEvent], object] | None = None,
        storage_retry_after: int = 1,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if on_storage_error not in ("allow", "deny"):
            raise ValueError(
                f"on_storage_error={on_storage_error!r} is invalid; use 'allow' or 'deny'"
            )
        if not timeout > 0:
            raise ValueError(f"timeout={timeout!r} is invalid; use seconds > 0, such as 0.1")
        if not isinstance(storage_retry_after, int) or storage_retry_after < 1:
            raise ValueError(
                f"storage_retry_after={storage_retry_after!r} is invalid; use whole seconds >= 1"
            )
        self.policies: tuple[Policy, ...] = (
            tuple(parse_policies(policies)) if policies is not None else ()
        )
        if isinstance(storage, str):
            storage = storage_from_url(storage, timeout=timeout, clock=clock)
        self.storage: Storage = storage
        # The backend's fast path for one bucket, when the storage has one: its
        # per-policy table takes tokens and computes a rejection's retry time lazily.
        self._table_of: Callable[[Policy], BucketTable] | None = getattr(storage, "table", None)
        self._single_policy: Policy | None = None
        self._single_table: BucketTable | None = None
        self._single_take: Callable[[str, int], tuple[bool, int, float, int]] | None = None
        # storage_id -> the backend's table of that policy.
        self._tables: dict[str, BucketTable] = {}
        if self._table_of is not None and len(self.policies) == 1:
            self._single_policy = self.policies[0]
            self._single_table = self._table_of(self._single_policy)
            self._single_take = self._single_table.take
        self.on_storage_error = on_storage_error
        self.timeout = timeout
        self.dry_run = dry_run
        self.key_prefix = key_prefix
        self._key_prefix_colon = key_prefix + ":"
        self.on_event = on_event
        self.storage_retry_after = storage_retry_after
        # itertools.count increments atomically under the GIL, without a lock.
        self._counts = {kind: itertools.count() for kind in _EVENT_KINDS}
        self._allowed_count = self._counts["allowed"]
        self._limited_count = self._counts["limited"]
        self._counter_lock = threading.Lock()
        self._storage_failing = False
        self._failed_checks = 0
        self._reject_log = _LogThrottle(_REJECT_LOG_INTERVAL)

    @property
    def counters(self) -> dict[str, int]:
        """Checks so far by outcome: allowed, limited, dry_run and storage_error."""
        return {kind: _count_value(counter) for kind, counter in self._counts.items()}

    # Public checks

    def check(self, key: str, cost: int = 1) -> Decision:
        """Take ``cost`` tokens for ``key`` from every policy's bucket, or none if one lacks them.

        This is the plain guard for code outside HTTP, such as a Socket.IO handler:
        ``if not limiter.check(f"sio:{sid}").allowed: return``.

        :param key: the client identity, such as an IP address or user id.
        :param cost: the request's weight. 0 is always admitted and takes nothing; a cost above
            a policy's capacity is rejected without taking tokens, with
            ``retry_after = math.inf``.
        :raises ValueError: when ``cost`` is negative or not an integer.
        """
        take = self._single_take
        if take is not None and key.__class__ is str and cost.__class__ is int and cost >= 0:
            # The steps of check_buckets() with one bucket, inlined because this is the
            # hot path of every in-process check.
            try:
                allowed, remaining, reset_after, backlog = take(self._key_prefix_colon + key, cost)
            except StorageError as error:
                return self._storage_error_decision(key, cost, error)
            if self._storage_failing or self.dry_run or self.on_event is not None:
                return self._decide_one(
                    lazy_decision(
                        allowed,
                        key,
                        cost,
                        self._single_policy,
                        remaining,
                        reset_after,
                        self._single_table,
                        backlog,
                    )
                )
            # lazy_decision(), built here without a call.
            decision = _new_tuple(
                Decision,
                (
                    allowed,
                    not allowed,
                    key,
                    cost,
                    self._single_policy,
                    False,
                    False,
                    remaining,
                    reset_after,
                    0.0 if allowed else None,
                    self._single_table,
                    backlog,
                    None,
                ),
            )
            if allowed:
                next(self._allowed_count)
            else:
                next(self._limited_count)
                if _monotonic() < self._reject_log.next_at:
                    next(self._reject_log.held_back)
                else:
                    self._log_rejection(decision)
            return decision
        return self.check_buckets(self.buckets(key), key, cost)

    async def check_async(self, key: str, cost: int = 1) -> Decision:
        """The same as :meth:`check`, without blocking the event loop on Redis."""
        return await self.check_buckets_async(self.buckets(key), key, cost)

    def buckets(
        self, key: str, scope: str | None = None, policies: Sequence[Policy] | None = None
    ) -> list[Bucket]:
        """Return the storage buckets of ``key``, one per policy.

        :param scope: separates limits that share clients, such as one per route.
        :param policies: the policies to use instead of this limiter's own.
        """
        if not isinstance(key, str):
            raise TypeError(f"rate-limit key {key!r} is not a string")
        if not (policies or self.policies):
            raise ValueError("this RateLimiter has no policies; pass policies to RateLimiter()")
        storage_key = (
            f"{self.key_prefix}:{key}" if scope is None else f"{self.key_prefix}:{scope}:{key}"
        )
        return [(storage_key, policy) for policy in (policies or self.policies)]

    def check_buckets(self, buckets: Sequence[Bucket], key: str, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from all ``buckets`` atomically; ``key`` labels the decision."""
        if self._table_of is not None and len(buckets) == 1:
            # The same steps as check()'s fast path, inlined for the web integrations.
            if cost.__class__ is not int or cost < 0:
                _validate_cost(cost)
            storage_key, policy = buckets[0]
            table = self._tables.get(policy.storage_id)
            if table is None:
                table = self._tables[policy.storage_id] = self._table_of(policy)
            try:
                allowed, remaining, reset_after, backlog = table.take(storage_key, cost)
            except StorageError as error:
                return self._storage_error_decision(key, cost, error)
            decision = _new_tuple(
                Decision,
                (
                    allowed,
                    not allowed,
                    key,
                    cost,
                    policy,
                    False,
                    False,
                    remaining,
                    reset_after,
                    0.0 if allowed else None,
                    table,
                    backlog,
                    None,
                ),
            )
            if self._storage_failing or self.dry_run or self.on_event is not None:
                return self._decide_one(decision)
            if allowed:
                next(self._allowed_count)
            else:
                next(self._limited_count)
                self._log_rejection(decision)
            return decision
        _validate_cost(cost)
        try:
            allowed, states = self.storage.acquire(buckets, cost)
        except StorageError as error:
            return self._storage_error_decision(key, cost, error)
        return self._decide(key, cost, allowed, states)

    async def check_buckets_async(
        self, buckets: Sequence[Bucket], key: str, cost: int = 1
    ) -> Decision:
        """The same as :meth:`check_buckets`, without blocking the event loop on Redis."""
        _validate_cost(cost)
        try:
            allowed, states = await self.storage.acquire_async(buckets, cost)
        except StorageError as error:
            return self._storage_error_decision(key, cost, error)
        return self._decide(key, cost, allowed, states)

    def close(self) -> None:
        """Close the storage backend."""
        self.storage.close()

    # Decisions

    def _decide_one(self, decision: Decision) -> Decision:
        """Decide a fast-path check in dry-run mode, with on_event, or after a storage failure."""
        state = BucketState(
            decision.policy, decision.remaining, decision.reset_after, decision.retry_after
        )
        return self._decide(decision.key, decision.cost, decision.allowed, [state])

    def _decide(self, key: str, cost: int, allowed: bool, states: list[BucketState]) -> Decision:
        if self._storage_failing:
            self._mark_recovered()

        if allowed:
            deciding = min(states, key=_remaining_of)
            decision = Decision(
                True,
                deciding.remaining,
                0.0,
                deciding.reset_after,
                deciding.policy,
                key,
                cost,
                states=tuple(states),
            )
            self._count("allowed", decision)
            return decision

        deciding = max(states, key=_retry_after_of)
        decision = Decision(
            self.dry_run,
            deciding.remaining,
            deciding.retry_after,
            deciding.reset_after,
            deciding.policy,
            key,
            cost,
            limited=True,
            dry_run=self.dry_run,
            states=tuple(states),
        )
        kind: EventKind = "dry_run" if self.dry_run else "limited"
        self._log_rejection(decision)
        self._count(kind, decision)
        return decision

    def _log_rejection(self, decision: Decision) -> None:
        """Log a rejection (or a dry-run hit), at most one line per interval with a count."""
        suppressed = self._reject_log.ready()
        if suppressed is not None:
            logger.info(
                "%s key=%s policy=%s retry_after=%.3fs (%d more since the last such line)",
                "dry run: would reject" if decision.dry_run else "rejected",
                decision.key,
                decision.policy,
                decision.retry_after,
                suppressed,
            )

    def _storage_error_decision(self, key: str, cost: int, error: StorageError) -> Decision:
        allow = self.on_storage_error == "allow"
        with self._counter_lock:
            self._failed_checks += 1
            first = not self._storage_failing
            self._storage_failing = True
        if first:
            logger.error(
                "rate-limit storage failed (%s); %s requests until it recovers (key=%s)",
                error,
                "admitting" if allow else "rejecting",
                key,
            )
        decision = Decision(
            allow,
            0,
            0.0 if allow else float(self.storage_retry_after),
            0.0,
            None,
            key,
            cost,
            storage_error=True,
        )
        self._count("storage_error", decision, error)
        return decision

    def _mark_recovered(self) -> None:
        with self._counter_lock:
            if not self._storage_failing:
                return
            failed, self._failed_checks = self._failed_checks, 0
            self._storage_failing = False
        logger.warning("rate-limit storage recovered after %d failed checks", failed)

    def _count(self, kind: EventKind, decision: Decision, error: Exception | None = None) -> None:
        next(self._counts[kind])
        if self.on_event is not None:
            self._emit(kind, decision, error)

    def _emit(self, kind: EventKind, decision: Decision, error: Exception | None = None) -> None:
        if self.on_event is not None:
            try:
                self.on_event(RateLimitEvent(kind, decision, error))
            except Exception:
                logger.exception("on_event callback failed for key=%s", decision.key)


def _validate_cost(cost: int) -> None:
    if not isinstance(cost, int) or isinstance(cost, bool):
        raise ValueError(f"cost={cost!r} is invalid; use a whole number >= 0")
    if cost < 0:
        raise ValueError(f"cost={cost} is negative; use a whole number >= 0")


def _remaining_of(state: BucketState) -> int:
    return state.remaining


def _retry_after_of(state: BucketState) -> float:
    return state.retry_after


def _count_value(counter: itertools.count) -> int:
    # repr() is the one way to read an itertools.count without advancing it: "count(7)".
    return int(repr(counter)[6:-1])


class _LogThrottle:
    """Let one log line through per interval and count the ones held back.

    The hot path reads ``next_at`` and advances ``held_back`` without the lock; only the
    line that is let through takes it.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        #: ``time.monotonic()`` from which the next line may be logged.
        self.next_at = 0.0
        #: Lines held back since the throttle was created; itertools.count advances atomically.
        self.held_back = itertools.count()
        self._held_back_reported = 0
        self._lock = threading.Lock()

    def ready(self) -> int | None:
        """Return the number held back since the last line when a line may be logged now."""
        now = _monotonic()
        if now < self.next_at:
            next(self.held_back)
            return None
        with self._lock:
            if now < self.next_at:
                next(self.held_back)
                return None
            self.next_at = now + self._interval
            total = _count_value(self.held_back)
            held_back = total - self._held_back_reported
            self._held_back_reported = total
            return held_back
