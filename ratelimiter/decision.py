"""The result of one check: the verdict and every number the response headers need."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


class Decision:
    """One check's verdict. Response headers are computed from this object alone.

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
    """

    # A plain class with slots: checks build one per request, and a dataclass __init__
    # with defaults costs a measurable share of a memory-backend check.
    __slots__ = (
        "allowed",
        "remaining",
        "retry_after",
        "reset_after",
        "policy",
        "key",
        "cost",
        "limited",
        "storage_error",
        "dry_run",
        "_states",
    )

    def __init__(
        self,
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
    ) -> None:
        self.allowed = allowed
        self.remaining = remaining
        self.retry_after = retry_after
        self.reset_after = reset_after
        self.policy = policy
        self.key = key
        self.cost = cost
        self.limited = limited
        self.storage_error = storage_error
        self.dry_run = dry_run
        self._states = states

    @property
    def states(self) -> tuple[BucketState, ...]:
        """The state of every policy's bucket, in policy order; empty when storage failed."""
        if self._states is None:
            if self.policy is None:
                self._states = ()
            else:
                # A single-policy check: its one bucket is the deciding one.
                self._states = (
                    BucketState(self.policy, self.remaining, self.reset_after, self.retry_after),
                )
        return self._states

    @property
    def retry_after_seconds(self) -> int | None:
        """The ``Retry-After`` value: whole seconds, rounded up, at least 1.

        ``None`` when the request was admitted, or when no retry can ever succeed because
        the cost exceeds a policy's capacity.
        """
        if not (self.limited or self.storage_error) or math.isinf(self.retry_after):
            return None
        return max(1, math.ceil(self.retry_after))

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed}, remaining={self.remaining}, "
            f"retry_after={self.retry_after}, reset_after={self.reset_after}, "
            f"policy={self.policy}, key={self.key!r}, cost={self.cost}, limited={self.limited}, "
            f"storage_error={self.storage_error}, dry_run={self.dry_run})"
        )
