"""A token-bucket rate limiter with memory and Redis storage and Flask, WSGI and ASGI guards.

    from ratelimiter import RateLimiter

    limiter = RateLimiter("5/second, burst 10; 1000/hour", storage="memory://")
    decision = limiter.check("client-key", cost=1)
    if not decision.allowed:
        ...  # reject the request; decision.retry_after gives the seconds to wait

The core knows nothing of web frameworks: ``ratelimiter.flask``, ``ratelimiter.wsgi`` and
``ratelimiter.asgi`` adapt it to HTTP.
"""

from .decision import BucketState, Decision
from .limiter import RateLimiter, RateLimitEvent
from .policy import Policy, parse_policies, parse_policy
from .storage import MemoryStorage, StorageError, StorageFullError, storage_from_url

__all__ = [
    "BucketState",
    "Decision",
    "MemoryStorage",
    "Policy",
    "RateLimitEvent",
    "RateLimiter",
    "StorageError",
    "StorageFullError",
    "parse_policies",
    "parse_policy",
    "storage_from_url",
]
