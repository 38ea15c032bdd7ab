"""A WSGI middleware that applies one RateLimiter to every request of any WSGI application.

::

    limiter = RateLimiter("100/minute, burst 100", storage="redis://127.0.0.1:6379/0")
    app.wsgi_app = RateLimitMiddleware(app.wsgi_app, limiter)

The middleware answers a rejected request itself (429 JSON, or 503 while storage fails with
``on_storage_error="deny"``) and never calls the application for it. Admitted responses get the
``RateLimit-Policy`` and ``RateLimit`` headers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .clientip import ClientIP
from .keys import KeySource
from .limiter import RateLimiter
from .paths import PathMatcher
from .responses import rate_limit_headers, rejection

__all__ = ["RateLimitMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class RateLimitMiddleware:
    """Rate-limit a WSGI application.

    :param app: the WSGI application to wrap.
    :param limiter: the limiter whose policies apply to every request.
    :param key_func: ``key_func(environ) -> str`` or a key source such as ``APIKeyHeader()``.
        Default: the client IP address from ``client_ip``.
    :param client_ip: the :class:`ClientIP` of the default key; set it to trust proxies.
    :param cost: tokens per request, or ``cost(environ) -> int``.
    :param exempt_methods: methods never counted (default ``{"OPTIONS"}``). ``HEAD`` is
        counted like ``GET``.
    :param exempt_paths: paths never counted. An entry ending in ``/`` exempts everything
        below it (``"/static/"``); any other entry matches exactly (``"/healthz"``).
    :param headers_enabled: add ``RateLimit-Policy`` and ``RateLimit`` headers (default true).
    :param scope: a bucket scope, so that two middlewares with the same limiter do not share
        buckets; default none.
    """

    def __init__(
        self,
        app: WSGIApp,
        limiter: RateLimiter,
        key_func: Callable[[Environ], str] | KeySource | None = None,
        *,
        client_ip: ClientIP | None = None,
        cost: int | Callable[[Environ], int] = 1,
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
        self._key: Callable[[Environ], str] = getattr(source, "from_environ", source)
        self.cost = cost
        self.exempt_methods = frozenset(method.upper() for method in exempt_methods)
        self.exempt_paths = PathMatcher(exempt_paths)
        self.headers_enabled = headers_enabled
        self.scope = scope

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method in self.exempt_methods or self.exempt_paths.matches(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)

        key = self._key(environ)
        cost = self.cost(environ) if callable(self.cost) else self.cost
        decision = self.limiter.check_buckets(self.limiter.buckets(key, self.scope), key, cost)
        environ["ratelimiter.decision"] = decision

        if not decision.allowed:
            response = rejection(decision, include_rate_limit_headers=self.headers_enabled)
            start_response(response.status_line, response.headers)
            return [response.body]
        if not self.headers_enabled:
            return self.app(environ, start_response)

        extra = rate_limit_headers(decision)

        def start_response_with_headers(status: str, headers: list, exc_info: Any = None):
            return start_response(status, [*headers, *extra], exc_info)

        return self.app(environ, start_response_with_headers)
