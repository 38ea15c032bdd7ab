"""Storage backends for token buckets, chosen by URL."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from .base import Bucket, Storage, StorageError, StorageFullError
from .memory import MemoryStorage

__all__ = [
    "Bucket",
    "MemoryStorage",
    "Storage",
    "StorageError",
    "StorageFullError",
    "storage_from_url",
]


def storage_from_url(
    url: str, *, timeout: float = 0.1, clock: Callable[[], int] | None = None
) -> Storage:
    """Create the backend a URL names.

    - ``memory://`` keeps buckets in this process; ``memory://?max_keys=N`` sets the key cap.
    - ``redis://host:port/db`` and ``rediss://`` (TLS) share buckets across processes and
      hosts. The Redis clock decides, so ``clock`` does not apply.

    :param timeout: seconds each Redis call may take, connecting included.
    :param clock: integer-nanosecond monotonic clock for ``memory://`` (tests use a fake).
    :raises ValueError: when the URL scheme or a query parameter is not supported.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        options = parse_qs(parts.query)
        kwargs = {}
        if "max_keys" in options:
            raw = options["max_keys"][-1]
            try:
                kwargs["max_keys"] = int(raw)
            except ValueError:
                raise ValueError(
                    f"storage URL {url!r} has max_keys={raw!r}; use a whole number"
                ) from None
        if clock is not None:
            kwargs["clock"] = clock
        return MemoryStorage(**kwargs)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisStorage

        return RedisStorage(url, timeout=timeout)
    raise ValueError(
        f"storage URL {url!r} is not supported; use memory://, redis://host:6379/0 or "
        "rediss://host:6379/0"
    )
