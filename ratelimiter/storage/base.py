"""The interface every storage backend implements, and its errors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from ..decision import BucketState
from ..policy import Policy

__all__ = ["Bucket", "Storage", "StorageError", "StorageFullError", "seconds_from"]

#: One bucket to take tokens from: the caller's key and the policy that shapes the bucket.
Bucket = tuple[str, Policy]


class StorageError(Exception):
    """The storage backend failed or timed out; ``on_storage_error`` decides the request."""


class StorageFullError(StorageError):
    """The memory backend holds its maximum number of keys and none can be dropped safely."""


class Storage(Protocol):
    """A backend that takes tokens from several buckets atomically.

    ``acquire`` admits the request only when every bucket holds ``cost`` tokens, and then
    takes ``cost`` from each. A rejected request takes nothing from any bucket. It returns
    whether the request was admitted and each bucket's state afterwards, in input order.
    """

    def acquire(self, buckets: Sequence[Bucket], cost: int) -> tuple[bool, list[BucketState]]:
        """Take ``cost`` tokens from every bucket, or from none. Raise StorageError on failure."""
        ...

    async def acquire_async(
        self, buckets: Sequence[Bucket], cost: int
    ) -> tuple[bool, list[BucketState]]:
        """The same as ``acquire``, without blocking the event loop."""
        ...

    def close(self) -> None:
        """Release connections and other resources."""
        ...


def seconds_from(amount: int, units_per_second: int) -> float:
    """Convert ``amount`` time units to seconds, rounded up to the next float.

    The result is never below the exact value, so ``ceil()`` of it never undercounts a
    Retry-After.
    """
    seconds = amount / units_per_second
    if amount % units_per_second:
        # The division may have rounded down onto a whole number; one ulp up keeps ceil() exact.
        seconds = math.nextafter(seconds, math.inf)
    return seconds
