"""Key sources: what identifies the client a request is counted against.

A key source has ``from_environ(environ)`` for WSGI and Flask and ``from_scope(scope)`` for
ASGI, so one object works in every integration. The integrations also take a plain callable:
``key_func()`` in Flask (it reads ``flask.request``), ``key_func(environ)`` in WSGI and
``key_func(scope)`` in ASGI.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .clientip import ClientIP

__all__ = ["APIKeyHeader", "ClientIP", "KeySource", "user_or_ip"]


class KeySource(Protocol):
    """An object that derives a rate-limit key from a WSGI environ or an ASGI scope."""

    def from_environ(self, environ: Mapping[str, Any]) -> str: ...

    def from_scope(self, scope: Mapping[str, Any]) -> str: ...


class APIKeyHeader:
    """Key requests by an API-key header, falling back to the client IP without one.

    The key stored and logged is ``apikey:`` plus a SHA-256 digest of the header value, so
    neither Redis nor the logs ever contain the secret.

    :param name: the header, ``"X-API-Key"`` by default.
    :param fallback: the key source for requests without the header; by default the peer IP
        address (``ClientIP()``).
    """

    def __init__(self, name: str = "X-API-Key", fallback: KeySource | None = None) -> None:
        if not name or "_" in name:
            raise ValueError(f"header name {name!r} is invalid; use a name such as X-API-Key")
        self.name = name
        self._environ_key = "HTTP_" + name.upper().replace("-", "_")
        self._scope_name = name.lower().encode("latin-1")
        self.fallback = fallback or ClientIP()

    def from_environ(self, environ: Mapping[str, Any]) -> str:
        """Return the key of a WSGI request."""
        value = environ.get(self._environ_key)
        return _digest(value) if value else self.fallback.from_environ(environ)

    def from_scope(self, scope: Mapping[str, Any]) -> str:
        """Return the key of an ASGI scope."""
        for name, value in scope.get("headers", ()):
            if name.lower() == self._scope_name and value:
                return _digest(value.decode("latin-1"))
        return self.fallback.from_scope(scope)


def _digest(value: str) -> str:
    return "apikey:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def user_or_ip(
    get_user_id: Callable[[], object | None], client_ip: ClientIP | None = None
) -> Callable[[], str]:
    """Return a Flask ``key_func`` that keys signed-in users by id and others by IP address.

    :param get_user_id: returns the signed-in user's id, or ``None`` for anonymous requests,
        for example ``lambda: getattr(g, "user_id", None)``.
    :param client_ip: the IP key source for anonymous requests (default ``ClientIP()``).
    """
    ip_source = client_ip or ClientIP()

    def key_func() -> str:
        from flask import request

        user_id = get_user_id()
        if user_id is not None:
            return f"user:{user_id}"
        return ip_source.from_environ(request.environ)

    return key_func
