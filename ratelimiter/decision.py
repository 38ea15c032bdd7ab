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


@dataclass(slots=True)
class Decision:
    """One check's verdict. Response headers are computed from this object alone.

    When several policies apply, the deciding policy is the one with the longest
    ``retry_after`` on a rejection, and the one with the fewest tokens left on an admission.
    """

    #: Whether the request may proceed. In dry-run mode this is ``True`` even when the
    #: buckets rejected it; ``limited`` then tells.
    allowed: bool
    #: Tokens left in the deciding policy's bucket.
    remaining: int
    #: Seconds until the request would be admitted: 0 when admitted, ``math.inf`` when its
    #: cost exceeds a policy's capacity. Rounded up, so a retry at exactly now + retry_after
    #: is admitted unless other requests take the tokens first.
    retry_after: float
    #: Seconds until the deciding policy's bucket is full again.
    reset_after: float
    #: The policy that decided; ``None`` only when storage failed.
    policy: Policy | None
    #: The client key that was checked.
    key: str
    #: The cost that was requested.
    cost: int
    #: Whether the buckets rejected the request, even if dry-run mode let it through.
    limited: bool = False
    #: Whether storage failed, so ``on_storage_error`` decided instead of the buckets.
    storage_error: bool = False
    #: Whether dry-run mode let a limited request through.
    dry_run: bool = False
    #: The state of every policy's bucket, in policy order.
    states: tuple[BucketState, ...] = ()

    @property
    def retry_after_seconds(self) -> int | None:
        """The ``Retry-After`` value: whole seconds, rounded up, at least 1.

        ``None`` when the request was admitted, or when no retry can ever succeed because
        the cost exceeds a policy's capacity.
        """
        if not (self.limited or self.storage_error) or math.isinf(self.retry_after):
            return None
        return max(1, math.ceil(self.retry_after))
