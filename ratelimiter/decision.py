"""The result of one check: the verdict and every number the response headers need."""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import itemgetter
from typing import Protocol

from .policy import Policy

__all__ = ["BucketState", "Decision"]


@dataclass(slots=True)
class BucketState:
    """The state of one policy's bucket right after a check."""

    policy: Policy
    #: Whole tokens left in the bucket.
    remaining: int
    #: Seconds until the bucket is full again (0 when it is full).
    reset_after: float
    #: Seconds until this bucket admits the request's cost; 0 when it admits it now, and
    #: ``math.inf`` when the cost exceeds the capacity.
    retry_after: float


class RetrySource(Protocol):
    """A bucket table that computes a rejected request's retry time only when it is read."""

    def retry_after(self, backlog: int, cost: int) -> float:
        """Seconds until a bucket ``backlog`` time units behind full admits ``cost``.

        Never rounded down; ``math.inf`` when ``cost`` exceeds the capacity. The backlog is
        captured at the check, so the result never changes between reads.
        """
        ...


class BucketSource(RetrySource, Protocol):
    """A memory bucket table, from which a decision computes its numbers when they are read.

    Time is in the table's integer units, and a backlog is the time the bucket needs to be
    full again, captured at the check.
    """

    #: Units one token lasts.
    interval: int
    #: Units a full bucket covers: capacity x ``interval``.
    tolerance: int
    #: Units per second.
    units_per_second: int


# Positions in the tuple behind a Decision. A decision stores its retry time, or None with a
# RetrySource and a backlog that compute it when it is read.
_ALLOWED, _LIMITED, _KEY, _COST, _POLICY, _STORAGE_ERROR, _DRY_RUN = range(7)
_REMAINING, _RESET_AFTER, _RETRY_AFTER, _SOURCE, _BACKLOG, _STATES = range(7, 13)


class Decision(tuple):
    """One check's verdict, immutable. Response headers are computed from this object alone.

    When several policies apply, the deciding policy is the one with the longest
    ``retry_after`` on a rejection, and the one with the fewest tokens left on an admission.

    Attributes:

    - ``allowed``: whether the request may proceed. In dry-run mode this is ``True`` even when
      the buckets rejected the request; ``limited`` then tells.
    - ``remaining``: whole tokens left in the deciding policy's bucket.
    - ``retry_after``: seconds until the request would be admitted: 0 when admitted,
      ``math.inf`` when its cost exceeds a policy's capacity. Rounded up, so a retry at
      now + retry_after is admitted unless other requests take the tokens first.
    - ``reset_after``: seconds until the deciding policy's bucket is full again.
    - ``policy``: the policy that decided; ``None`` only when storage failed.
    - ``key``: the client key that was checked. ``cost``: the cost that was requested.
    - ``limited``: whether the buckets rejected the request, even if dry-run let it through.
    - ``storage_error``: whether storage failed, so ``on_storage_error`` decided.
    - ``dry_run``: whether dry-run mode let a limited request through.
    - ``states``: every policy's :class:`BucketState`, in policy order.

    A check builds one decision per request, so the class is a tuple underneath, which one
    C call builds and whose fields read without a Python call. The memory backend's
    single-bucket checks return a :class:`BacklogDecision`, which computes its numbers from
    the backlog captured at the check only when they are read. Decisions compare by
    identity, like plain objects.
    """

    __slots__ = ()

    def __new__(
        cls,
        allowed: bool,
        remaining: int,
        retry_after: float,
        reset_after: float,
        policy: Policy | None,
        key: str,
        cost: int,
        limited: bool = False,
        storage_error: bool = False,
        dry_run: bool = False,
        states: tuple[BucketState, ...] | None = None,
    ) -> Decision:
        fields = (
            allowed,
            limited,
            key,
            cost,
            policy,
            storage_error,
            dry_run,
            remaining,
            reset_after,
            retry_after,
            None,
            0,
            states,
        )
        return tuple.__new__(cls, fields)

    allowed: bool = property(itemgetter(_ALLOWED), doc="Whether the request may proceed.")  # type: ignore[assignment]
    limited: bool = property(itemgetter(_LIMITED), doc="Whether the buckets rejected it.")  # type: ignore[assignment]
    key: str = property(itemgetter(_KEY), doc="The client key that was checked.")  # type: ignore[assignment]
    cost: int = property(itemgetter(_COST), doc="The cost that was requested.")  # type: ignore[assignment]
    policy: Policy | None = property(itemgetter(_POLICY), doc="The deciding policy.")  # type: ignore[assignment]
    storage_error: bool = property(itemgetter(_STORAGE_ERROR), doc="Whether storage failed.")  # type: ignore[assignment]
    dry_run: bool = property(itemgetter(_DRY_RUN), doc="Whether dry run let it through.")  # type: ignore[assignment]
    remaining: int = property(itemgetter(_REMAINING), doc="Whole tokens left.")  # type: ignore[assignment]
    reset_after: float = property(itemgetter(_RESET_AFTER), doc="Seconds until full again.")  # type: ignore[assignment]

    @property
    def retry_after(self) -> float:
        """Seconds until the request would be admitted (see the class docstring)."""
        retry_after = self[_RETRY_AFTER]
        if retry_after is None:
            return self[_SOURCE].retry_after(self[_BACKLOG], self[_COST])
        return retry_after

    @property
    def states(self) -> tuple[BucketState, ...]:
        """The state of every policy's bucket, in policy order; empty when storage failed."""
        states = self[_STATES]
        if states is not None:
            return states
        if self[_POLICY] is None:
            return ()
        # A single-policy check: its one bucket is the deciding one.
        return (BucketState(self[_POLICY], self.remaining, self.reset_after, self.retry_after),)

    @property
    def retry_after_seconds(self) -> int | None:
        """The ``Retry-After`` value: whole seconds, rounded up, at least 1.

        ``None`` when the request was admitted, or when no retry can ever succeed because
        the cost exceeds a policy's capacity.
        """
        if not (self[_LIMITED] or self[_STORAGE_ERROR]):
            return None
        retry_after = self.retry_after
        if math.isinf(retry_after):
            return None
        return max(1, math.ceil(retry_after))

    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __reduce__(self) -> tuple:
        # copy and pickle rebuild a plain Decision, with every number computed.
        return (Decision, self.__getnewargs__())

    def __getnewargs__(self) -> tuple:
        return (
            self.allowed,
            self.remaining,
            self.retry_after,
            self.reset_after,
            self.policy,
            self.key,
            self.cost,
            self.limited,
            self.storage_error,
            self.dry_run,
            self[_STATES],
        )

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed}, remaining={self.remaining}, "
            f"retry_after={self.retry_after}, reset_after={self.reset_after}, "
            f"policy={self.policy}, key={self.key!r}, cost={self.cost}, limited={self.limited}, "
            f"storage_error={self.storage_error}, dry_run={self.dry_run})"
        )


class BacklogDecision(Decision):
    """The decision of one memory bucket, which computes its numbers when they are read.

    It stores the bucket's table (a :class:`BucketSource`) and its backlog instead of
    ``remaining``, ``reset_after`` and, on a rejection, ``retry_after``: most decisions are
    read for ``allowed`` alone. The backlog is the one after the request when admitted and
    before it when rejected, so the numbers never change between reads.
    """

    __slots__ = ()

    @property
    def remaining(self) -> int:  # type: ignore[override]
        """Whole tokens left."""
        source = self[_SOURCE]
        return (source.tolerance - self[_BACKLOG]) // source.interval

    @property
    def reset_after(self) -> float:  # type: ignore[override]
        """Seconds until the bucket is full again."""
        return self[_BACKLOG] / self[_SOURCE].units_per_second


#: ``policy_source_backlog(decision)``: the policy, the table and the backlog of a
#: :class:`BacklogDecision`.
policy_source_backlog = itemgetter(_POLICY, _SOURCE, _BACKLOG)

#: ``several_states(decision)``: the bucket states a decision stores, or ``None`` when it
#: checked one bucket and keeps that bucket's numbers in its own fields, so that header
#: formatting can skip building a :class:`BucketState`.
several_states = itemgetter(_STATES)
