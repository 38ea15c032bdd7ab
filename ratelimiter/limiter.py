"""The framework-free rate limiter: policies, a storage backend and the failure policy."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .decision import BucketState, Decision
from .policy import Policy, parse_policies
from .storage import Bucket, Storage, StorageError, storage_from_url

__all__ = ["RateLimitEvent", "RateLimiter"]

logger = logging.getLogger(__name__)

_new_tuple = tuple.__new__

#: ``check(key, cost=1, label=None)``: a backend's check of one bucket (see
#: ``MemoryStorage.check_function`` and ``RateLimiter._table_check_function``).
CheckFunction = Callable[..., Decision]

EventKind = Literal["allowed", "limited", "dry_run", "storage_error"]
_EVENT_KINDS: tuple[EventKind, ...] = ("allowed", "limited", "dry_run", "storage_error")
# Rejections and dry-run hits are logged at most once per interval per limiter, with a count.
_REJECT_LOG_INTERVAL_NS = 10 * 1_000_000_000


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
        self.on_storage_error = on_storage_error
        self.timeout = timeout
        self._dry_run = dry_run
        self.key_prefix = key_prefix
        self._on_event = on_event
        self.storage_retry_after = storage_retry_after
        # itertools.count increments atomically under the GIL, without a lock.
        self._counts = {kind: itertools.count() for kind in _EVENT_KINDS}
        self._allowed_count = self._counts["allowed"]
        self._limited_count = self._counts["limited"]
        self._counter_lock = threading.Lock()
        self._storage_failing = False
        self._failed_checks = 0
        # Set while dry run, on_event or a storage failure needs the general path.
        self._general_only = dry_run or on_event is not None
        # The memory backend's clock, so that a fake clock in tests also paces the log.
        self._clock: Callable[[], int] = getattr(storage, "clock", time.monotonic_ns)
        self._reject_log = _LogThrottle(_REJECT_LOG_INTERVAL_NS, self._rejection_total)

        # A backend with a fast path for one bucket builds check(key, cost=1, label=None) for
        # a policy and a key prefix: the memory backend from its own check_function(),
        # Redis from its per-policy table. storage_id -> that function with no key prefix,
        # built on first use, for check_buckets().
        self._check_function_of: Callable[[Policy, str], CheckFunction] | None = None
        if getattr(storage, "check_function", None) is not None:
            self._check_function_of = self._memory_check_function
        elif getattr(storage, "table", None) is not None:
            self._check_function_of = self._table_check_function
        self._check_functions: dict[str, CheckFunction] = {}
        if self._check_function_of is not None and len(self.policies) == 1:
            # An instance attribute in front of the check() method, with the same contract.
            self.check = self._check_function_of(self.policies[0], key_prefix + ":")

    @property
    def dry_run(self) -> bool:
        """Whether rejected requests are counted, logged and let through."""
        return self._dry_run

    @dry_run.setter
    def dry_run(self, value: bool) -> None:
        self._dry_run = value
        self._update_general_only()

    @property
    def on_event(self) -> Callable[[RateLimitEvent], object] | None:
        """The callback that receives a :class:`RateLimitEvent` after every check."""
        return self._on_event

    @on_event.setter
    def on_event(self, value: Callable[[RateLimitEvent], object] | None) -> None:
        self._on_event = value
        self._update_general_only()

    def _update_general_only(self) -> None:
        self._general_only = self._dry_run or self._on_event is not None or self._storage_failing

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
        if self._check_function_of is not None and len(buckets) == 1:
            storage_key, policy = buckets[0]
            check = self._check_functions.get(policy.storage_id)
            if check is None:
                check = self._check_function_of(policy, "")
                self._check_functions[policy.storage_id] = check
            return check(storage_key, cost, key)
        return self._check_general(buckets, key, cost)

    def bucket_check_function(
        self, policies: Sequence[Policy]
    ) -> Callable[[str, int, str], Decision]:
        """Return ``check(storage_key, cost, key)`` for integrations that call it per request.

        ``check(storage_key, cost, key)`` is
        ``check_buckets([(storage_key, policy) for policy in policies], key, cost)``. With one
        policy on memory storage it takes the memory backend's one-call path.
        """
        policies = tuple(policies)
        if not policies:
            raise ValueError("bucket_check_function() needs at least one policy")
        if self._check_function_of is not None and len(policies) == 1:
            return self._check_function_of(policies[0], "")

        def check(storage_key: str, cost: int, key: str) -> Decision:
            return self.check_buckets([(storage_key, policy) for policy in policies], key, cost)

        return check

    def _memory_check_function(self, policy: Policy, key_prefix: str) -> CheckFunction:
        return self.storage.check_function(policy, key_prefix, self)  # type: ignore[attr-defined]

    def _table_check_function(self, policy: Policy, key_prefix: str) -> CheckFunction:
        """Build ``check(key, cost=1, label=None)`` on the backend's ``table(policy).take``.

        It has the contract of ``MemoryStorage.check_function`` and serves backends whose
        per-policy table takes the tokens of one bucket in one call, such as Redis.
        """
        table = self.storage.table(policy)  # type: ignore[attr-defined]
        take = table.take
        allowed_count = self._allowed_count
        limited_count = self._limited_count

        def check(key: str, cost: int = 1, label: str | None = None) -> Decision:
            if (
                self._general_only
                or cost.__class__ is not int
                or cost < 0
                or key.__class__ is not str
            ):
                return self._check_one_general(key, cost, label, key_prefix, policy)
            if label is None:
                label = key
            try:
                allowed, remaining, reset_after, backlog = take(key_prefix + key, cost)
            except StorageError as error:
                return self._storage_error_decision(label, cost, error)
            # The decision's retry time comes from table.retry_after() when it is read.
            decision = _new_tuple(
                Decision,
                (
                    allowed,
                    not allowed,
                    label,
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
            if allowed:
                next(allowed_count)
            else:
                next(limited_count)
                self._log_rejection(decision)
            return decision

        return check

    def _check_general(self, buckets: Sequence[Bucket], key: str, cost: int) -> Decision:
        _validate_cost(cost)
        try:
            allowed, states = self.storage.acquire(buckets, cost)
        except StorageError as error:
            return self._storage_error_decision(key, cost, error)
        return self._decide(key, cost, allowed, states)

    def _check_one_general(
        self, key: object, cost: object, label: str | None, key_prefix: str, policy: Policy
    ) -> Decision:
        """The general path of a memory check function (see ``MemoryStorage.check_function``)."""
        if not isinstance(key, str):
            raise TypeError(f"rate-limit key {key!r} is not a string")
        return self._check_general(
            [(key_prefix + key, policy)],
            key if label is None else label,
            cost,  # type: ignore[arg-type]
        )

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
        self._count(kind, decision)
        self._log_rejection(decision)
        return decision

    def _log_rejection(self, decision: Decision) -> None:
        """Log a rejection (or a dry-run hit), at most one line per interval with a count.

        Call it after counting the rejection.
        """
        suppressed = self._reject_log.ready(self._clock())
        if suppressed is not None:
            logger.info(
                "%s key=%s policy=%s retry_after=%.3fs (%d more since the last such line)",
                "dry run: would reject" if decision.dry_run else "rejected",
                decision.key,
                decision.policy,
                decision.retry_after,
                suppressed,
            )

    def _rejection_total(self) -> int:
        return _count_value(self._limited_count) + _count_value(self._counts["dry_run"])

    def _storage_error_decision(self, key: str, cost: int, error: StorageError) -> Decision:
        allow = self.on_storage_error == "allow"
        with self._counter_lock:
            self._failed_checks += 1
            first = not self._storage_failing
            self._storage_failing = True
            self._update_general_only()
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
            self._update_general_only()
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
    """Let one log line through per interval and report how many were held back.

    Callers read ``next_at`` without the lock and call :meth:`ready` once it has passed, so
    the held-back lines cost nothing here. Their number comes from ``total()``, the count of
    events so far, which the caller advances before calling :meth:`ready`.
    """

    def __init__(self, interval_ns: int, total: Callable[[], int]) -> None:
        self._interval_ns = interval_ns
        self._total = total
        #: The clock value, in nanoseconds, from which the next line may be logged.
        self.next_at = -(2**63)
        self._total_at_last_line = 0
        self._lock = threading.Lock()

    def ready(self, now: int) -> int | None:
        """Return the number of events held back since the last line if one may be logged."""
        if now < self.next_at:
            return None
        with self._lock:
            if now < self.next_at:
                return None
            self.next_at = now + self._interval_ns
            total = self._total()
            # The event being logged is counted in total, but it is not held back.
            held_back = max(0, total - self._total_at_last_line - 1)
            self._total_at_last_line = total
            return held_back
