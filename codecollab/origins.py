"""Web origins (RFC 6454) of Socket.IO requests, compared as scheme, host and port.

Browsers send ``Origin`` as ``scheme://host[:port]`` with a default port left out, and a
``Host`` header as ``host[:port]``. Both are parsed into the same key, so letter case and an
explicit default port make no difference. Anything with a path, user name, query, fragment or
space is not an origin and never matches.
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}

# Characters that may not appear in the host and port part of an origin or a Host header.
_NOT_IN_AUTHORITY = frozenset("/@?#\\ \t\r\n")

OriginKey = tuple[str, str, int | None]


def origin_key(origin: str) -> OriginKey | None:
    """Return ``(scheme, host name, port)`` of a serialized origin, lowercased.

    A missing port is the scheme's default, or ``None`` for a scheme without one.

    :return: ``None`` when ``origin`` is not an origin, such as ``null`` or a URL with a path.
    """
    _, separator, authority = origin.partition("://")
    if not separator or not authority or not _NOT_IN_AUTHORITY.isdisjoint(authority):
        return None
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:  # a port that is not a number or out of range
        return None
    if not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS.get(parts.scheme)


def is_same_origin(origin: str, scheme: str, host: str) -> bool:
    """Return whether ``origin`` is the origin of a page served as ``scheme`` from ``host``.

    ``host`` is a Host header value; ``example.com`` and ``example.com:80`` are the same host
    for ``http``.
    """
    key = origin_key(origin)
    return key is not None and key == origin_key(f"{scheme}://{host}")
