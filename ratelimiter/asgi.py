"""An ASGI middleware for Starlette, FastAPI or any ASGI application.

::

    limiter = RateLimiter("100/minute, burst 100", storage="redis://127.0.0.1:6379/0")
    app.add_middleware(RateLimitMiddleware, limiter=limiter)

It is a plain ASGI middleware, not a ``BaseHTTPMiddleware``: the response passes through
message by message, so streaming and server-sent responses keep streaming. The rate-limit
headers are added to the one ``http.response.start`` message the application sends; the body
messages are untouched. The middleware sends a rejection itself, with exactly
one ``http.response.start`` and one body message, and the application never sees it.

Checks use the limiter's async path (``redis.asyncio`` for Redis), so the event loop never
waits on a socket. Only ``http`` scopes are limited; ``websocket`` and ``lifespan`` pass
through.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from .clientip import ClientIP
from .keys import KeySource
from .limiter import RateLimiter
from .paths import PathMatcher
from .responses import rate_limit_headers, rejection

__all__ = ["RateLimitMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RateLimitMiddleware:
    """Rate-limit the HTTP requests of an ASGI application.

    :param app: the ASGI application to wrap.
    :param limiter: the limiter whose policies apply to every request.
    :param key_func: ``key_func(scope)`` returning a key or an awaitable of one, or a key
        source such as ``APIKeyHeader()``. Default: the client IP address from ``client_ip``.
    :param client_ip: the :class:`ClientIP` of the default key; set it to trust proxies.
    :param cost: tokens per request, or ``cost(scope) -> int``.
    :param exempt_methods: methods never counted (default ``{"OPTIONS"}``). ``HEAD`` is
        counted like ``GET``.
    :param exempt_paths: paths never counted. An entry ending in ``/`` exempts everything
        below it; any other entry matches exactly.
    :param headers_enabled: add ``RateLimit-Policy`` and ``RateLimit`` headers (default true).
    :param scope: a bucket scope, so that two middlewares with one limiter keep separate buckets.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        key_func: Callable[[Scope], str | Awaitable[str]] | KeySource | None = None,
        *,
        client_ip: ClientIP | None = None,
        cost: int | Callable[[Scope], int] = 1,
        exempt_methods: Iterable[str] = ("OPTIONS",),
        exempt_paths: Iterable[str] = (),
        headers_enabled: bool = True,
        scope: str | None = None,
    ) -> None:
        if not limiter.policies:
            raise ValueError("the RateLimiter given to RateLimitMiddleware has no policies")
        self.app = app
        self.limiter = limiter
        source = key_func or client_ip or ClientIP()
        self._key = getattr(source, "from_scope", source)
        self.cost = cost
        self.exempt_methods = frozenset(method.upper() for method in exempt_methods)
        self.exempt_paths = PathMatcher(exempt_paths)
        self.headers_enabled = headers_enabled
        self.scope = scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET").upper()
        if method in self.exempt_methods or self.exempt_paths.matches(scope.get("path", "")):
            await self.app(scope, receive, send)
            return

        key = self._key(scope)
        if inspect.isawaitable(key):
            key = await key
        cost = self.cost(scope) if callable(self.cost) else self.cost
        buckets = self.limiter.buckets(key, self.scope)
        decision = await self.limiter.check_buckets_async(buckets, key, cost)
        scope.setdefault("state", {})["ratelimiter_decision"] = decision

        if not decision.allowed:
            response = rejection(decision, include_rate_limit_headers=self.headers_enabled)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": _encode(response.headers),
                }
            )
            await send({"type": "http.response.body", "body": response.body})
            return
        if not self.headers_enabled:
            await self.app(scope, receive, send)
            return

        extra = _encode(rate_limit_headers(decision))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
