"""Web origins (RFC 6454) and Host headers: the checks that keep other sites out.

Browsers send ``Origin`` as ``scheme://host[:port]`` with a default port left out, and a
``Host`` header as ``host[:port]``. Both are parsed into the same key, so letter case and an
explicit default port make no difference. Anything with a path, user name, query, fragment or
space is not an origin and never matches.

The same-origin check alone does not stop DNS rebinding: a page on a domain that an attacker
points at 127.0.0.1 sends that domain as both ``Origin`` and ``Host``. So
:class:`AllowedHostsMiddleware` rejects with 400 every request whose Host names a host not in the
allow-list, which by default holds only the loopback names when the editor listens on loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

# The names a browser on this machine uses for a server that listens on loopback.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

DEFAULT_PORTS = {"http": 80, "https": 443}

# A serialized origin: scheme, then a bracketed IPv6 address or a host name (ASCII letters,
# digits, dots, hyphens, or non-ASCII letters of an internationalized name), then a port.
_ORIGIN = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.\-\u0080-\U0010ffff]+))"
    r"(?::(?P<port>[0-9]{1,5}))?"
)

OriginKey = tuple[str, str, int | None]


def origin_key(origin: str) -> OriginKey | None:
    """Return ``(scheme, host name, port)`` of a serialized origin, lowercased.

    A missing port is the scheme's default, or ``None`` for a scheme without one. An IPv6
    address is returned in its compressed form, without brackets.

    :return: ``None`` when ``origin`` is not an origin, such as ``null`` or a URL with a path.
    """
    match = _ORIGIN.fullmatch(origin)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    if match["ipv6"] is not None:
        try:
            host = ipaddress.IPv6Address(match["ipv6"]).compressed
        except ValueError:
            return None
    else:
        host = match["name"].lower()
    if match["port"] is None:
        return scheme, host, DEFAULT_PORTS.get(scheme)
    port = int(match["port"])
    if not 0 < port < 65536:
        return None
    return scheme, host, port


def is_same_origin(origin: str, scheme: str, host: str) -> bool:
    """Return whether ``origin`` is the origin of a page served as ``scheme`` from ``host``.

    ``host`` is a Host header value; ``example.com`` and ``example.com:80`` are the same host
    for ``http``.
    """
    key = origin_key(origin)
    return key is not None and key == origin_key(f"{scheme}://{host}")


def host_name(host: str) -> str | None:
    """Return the lowercased host name of a Host header value, without port or final dot.

    :return: ``None`` when ``host`` is not ``name[:port]`` or ``[ipv6][:port]``.
    """
    key = origin_key(f"http://{host}")
    return key[1].rstrip(".") if key is not None else None


def default_allowed_hosts(bind_host: str) -> tuple[str, ...]:
    """Return the allowed Host names for a server bound to ``bind_host``.

    A server on loopback can only be reached from this machine: by the loopback names, or by
    the address it is bound to. Anywhere else the names the server is reached by are unknown:
    ``("*",)``, any.
    """
    if bind_host == "localhost":
        return LOOPBACK_HOSTS
    try:
        address = ipaddress.ip_address(bind_host)
    except ValueError:
        return ("*",)
    if not address.is_loopback:
        return ("*",)
    return tuple(dict.fromkeys((*LOOPBACK_HOSTS, address.compressed)))


def host_allowed(name: str, allowed: Iterable[str]) -> bool:
    """Return whether the host name ``name`` matches an entry of ``allowed``.

    An entry is a host name, ``*`` for any, or ``.example.com`` for example.com and every name
    below it.
    """
    for entry in allowed:
        if entry == "*" or entry == name:
            return True
        if entry.startswith(".") and (name == entry[1:] or name.endswith(entry)):
            return True
    return False


def forwarded_value(header: str, proxy_count: int) -> str:
    """Return the entry that the first of ``proxy_count`` trusted proxies added to ``header``.

    Each proxy appends an entry to a comma-separated forwarding header, so that one is
    ``proxy_count`` places from the right. Entries left of it may come from the client.
    """
    entries = [entry.strip() for entry in header.split(",")]
    return entries[-proxy_count] if len(entries) >= proxy_count else entries[0]


def request_host(environ: Mapping[str, Any], proxy_count: int) -> str:
    """Return the host a request was sent to, as a Host header value.

    That is the Host header, or behind ``proxy_count`` trusted proxies the ``X-Forwarded-Host``
    entry that the first of them added.
    """
    host = environ.get("HTTP_HOST", "")
    forwarded = environ.get("HTTP_X_FORWARDED_HOST")
    if proxy_count > 0 and forwarded:
        host = forwarded_value(forwarded, proxy_count)
    return host


class AllowedHostsMiddleware:
    """WSGI middleware that rejects requests for a host not in ``allowed`` with status 400.

    The loopback names are always allowed: a browser sends them only when its user typed them,
    and health checks inside a container use them.

    :param app: the WSGI application to protect, Socket.IO included.
    :param allowed: host names, ``*`` or ``.domain`` entries, as :func:`host_allowed` reads them.
    :param proxy_count: trusted reverse proxies; with one or more, the host is read from the
        ``X-Forwarded-Host`` entry of the first of them (:func:`forwarded_value`).
    """

    # Host names whose rejection is logged at WARNING; later ones are logged at DEBUG.
    MAX_REPORTED = 100

    def __init__(self, app: Callable[..., Any], allowed: Iterable[str], proxy_count: int) -> None:
        self.app = app
        self.allowed = (*(entry.lower().rstrip(".") for entry in allowed), *LOOPBACK_HOSTS)
        self.proxy_count = proxy_count
        self._any = "*" in self.allowed
        self._reported: set[str] = set()

    def allows(self, environ: dict[str, Any]) -> bool:
        """Return whether the request of ``environ`` names an allowed host."""
        if self._any:
            return True
        name = host_name(request_host(environ, self.proxy_count))
        return name is not None and host_allowed(name, self.allowed)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self.allows(environ):
            return self.app(environ, start_response)
        self._report(request_host(environ, self.proxy_count), environ.get("REMOTE_ADDR"))
        body = (
            b'{"error":"This server does not answer to that host name; '
            b'its operator can allow it with CODECOLLAB_ALLOWED_HOSTS"}'
        )
        start_response(
            "400 Bad Request",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _report(self, host: str, client: str | None) -> None:
        key = host_name(host) or host
        if key in self._reported:
            logger.debug("rejected a request for host %r from %s", host, client)
            return
        if len(self._reported) >= self.MAX_REPORTED:
            logger.debug("rejected a request for host %r from %s", host, client)
            return
        self._reported.add(key)
        if not host:
            logger.warning("rejected a request without a Host header from %s", client)
            return
        logger.warning(
            "rejected a request for host %r from %s; add the name to "
            "CODECOLLAB_ALLOWED_HOSTS if the editor is reached by it%s",
            host,
            client,
            " (further rejected host names are logged at DEBUG)"
            if len(self._reported) == self.MAX_REPORTED
            else "",
        )
