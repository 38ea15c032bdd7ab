"""The child process of the multi-process Redis test; it imports only the core package."""

from __future__ import annotations

from ratelimiter import Policy, RateLimiter


def process_worker(redis_url: str, prefix: str, barrier, results) -> None:
    """Check one shared key 100 times and report how many checks were admitted."""
    limiter = RateLimiter(
        Policy(1, 86400.0, burst=50), storage=redis_url, key_prefix=prefix, timeout=2.0
    )
    barrier.wait(timeout=30)
    admitted = sum(limiter.check("shared").allowed for _ in range(100))
    results.put((admitted, limiter.counters["storage_error"]))
    limiter.close()
