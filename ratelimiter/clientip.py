"""The client IP address that keys a request, with trusted reverse proxies taken into account.

Any client can send ``X-Forwarded-For`` or ``Forwarded`` with whatever addresses it likes. A
limiter that believed them would let one client rotate forged addresses and never be limited.
So by default both headers are ignored and the key is the peer address (``REMOTE_ADDR`` in
WSGI, ``scope["client"]`` in ASGI).

Behind reverse proxies, name them with ``trusted_proxies``: either their networks (CIDR list)
or how many proxies sit in front of the application (hop count). Each proxy appends the address
it received the request from, so the list is read from the right: proxies that are trusted are
skipped, and the first address that is not trusted is the client (the rightmost-untrusted
rule). Whatever the client put further left is never read.

Header names with underscores, such as ``X_Forwarded_For``, never count. In ASGI the raw header
name is available and only ``x-forwarded-for`` / ``forwarded`` match. WSGI folds ``-`` and
``_`` into the same environ key (``HTTP_X_FORWARDED_FOR``), so there the server must drop
underscore spellings: Werkzeug's development server always does, and gunicorn 22 and newer
does by default (``--header-map drop``).

IPv6 clients can get a new address in their /64 at will, so by default all addresses of one /64
share a bucket (``ipv6_prefix``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

__all__ = ["ClientIP", "parse_forwarded_for"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_FORWARDED_PAIR = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*""", re.ASCII
)


class ClientIP:
    """Find the client IP address of a request and turn it into a rate-limit key.

    :param trusted_proxies: ``None`` (the default) trusts no proxy and keys on the peer
        address. A list of addresses or CIDR networks (``["10.0.0.0/8", "127.0.0.1"]``)
        trusts proxies whose address is in it. An integer N trusts the N proxies nearest
        to the application, whatever their address.
    :param header: ``"X-Forwarded-For"`` (the default) or ``"Forwarded"`` (RFC 7239): the
        header the trusted proxies set. Only that one is read.
    :param ipv6_prefix: IPv6 addresses share one key per network of this length (default 64;
        128 keys each address apart).
    :param ipv4_prefix: the same for IPv4 (default 32, one key per address).
    :raises ValueError: for an invalid network, a negative hop count, an unknown header or a
        prefix length out of range.

    Usage::

        client_ip = ClientIP(trusted_proxies=["10.0.0.0/8"])
        key = client_ip.from_environ(environ)  # "203.0.113.7" or "2001:db8:1:2::/64"
    """

    def __init__(
        self,
        trusted_proxies: Sequence[str] | int | None = None,
        header: Literal["X-Forwarded-For", "Forwarded"] = "X-Forwarded-For",
        ipv6_prefix: int = 64,
        ipv4_prefix: int = 32,
    ) -> None:
        self.hops = 0
        self.networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
        if isinstance(trusted_proxies, bool):
            raise ValueError("trusted_proxies must be a list of networks or a hop count")
        if isinstance(trusted_proxies, int):
            if trusted_proxies < 0:
                raise ValueError(f"trusted_proxies={trusted_proxies} is negative; use 0 or more")
            self.hops = trusted_proxies
        elif trusted_proxies is not None:
            if isinstance(trusted_proxies, str):
                trusted_proxies = [item for item in trusted_proxies.split(",") if item.strip()]
            self.networks = tuple(_parse_network(item) for item in trusted_proxies)

        normalized_header = header.lower()
        if normalized_header not in ("x-forwarded-for", "forwarded"):
            raise ValueError(f"header={header!r} is invalid; use 'X-Forwarded-For' or 'Forwarded'")
        self.header = normalized_header
        self._environ_key = "HTTP_" + normalized_header.upper().replace("-", "_")
        self._scope_name = normalized_header.encode("latin-1")

        if not 0 <= ipv6_prefix <= 128:
            raise ValueError(f"ipv6_prefix={ipv6_prefix} is invalid; use 0 to 128")
        if not 0 <= ipv4_prefix <= 32:
            raise ValueError(f"ipv4_prefix={ipv4_prefix} is invalid; use 0 to 32")
        self.ipv6_prefix = ipv6_prefix
        self.ipv4_prefix = ipv4_prefix
        self._key_of = lru_cache(maxsize=4096)(self._group)

    @property
    def trusts_proxies(self) -> bool:
        """Whether forwarding headers are read at all."""
        return bool(self.hops or self.networks)

    def from_environ(self, environ: Mapping[str, Any]) -> str:
        """Return the key of a WSGI request."""
        remote = environ.get("REMOTE_ADDR") or ""
        if not (self.hops or self.networks):
            return self._key_of(remote)
        return self._key_of(self.resolve(remote, environ.get(self._environ_key)))

    def from_scope(self, scope: Mapping[str, Any]) -> str:
        """Return the key of an ASGI HTTP or WebSocket scope."""
        client = scope.get("client")
        remote = client[0] if client else ""
        if not self.trusts_proxies:
            return self._key_of(remote)
        values = [
            value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name.lower() == self._scope_name
        ]
        return self._key_of(self.resolve(remote, ",".join(values) if values else None))

    def resolve(self, remote: str, header_value: str | None) -> str:
        """Return the client address for a peer address and the forwarding header's value.

        The result is ``remote`` when no proxy is trusted, when the header is missing, or
        when ``remote`` itself is not a trusted proxy. An address the walk reaches that does
        not parse (such as ``unknown`` in ``Forwarded``) cannot be judged, so the address to
        its right, the last proxy that handled the request, is returned instead.
        """
        if not self.trusts_proxies or not header_value:
            return remote
        if self.header == "forwarded":
            entries = parse_forwarded_for(header_value)
        else:
            entries = [item.strip() for item in header_value.split(",")]
        chain = [*entries, remote]

        if self.hops:
            if len(chain) <= self.hops:
                return remote
            return self._valid_from(chain, len(chain) - 1 - self.hops)

        for index in range(len(chain) - 1, -1, -1):
            address = _parse_address(chain[index])
            if address is None:
                return self._valid_from(chain, index + 1) if index + 1 < len(chain) else remote
            if not any(address in network for network in self.networks):
                return str(address)
        # Every hop is a trusted proxy: the leftmost is as far as the chain goes.
        return str(_parse_address(chain[0]))

    @staticmethod
    def _valid_from(chain: list[str], index: int) -> str:
        """Return the first address in ``chain`` at ``index`` or to its right that parses."""
        for candidate in chain[index:]:
            address = _parse_address(candidate)
            if address is not None:
                return str(address)
        return chain[-1]

    def _group(self, text: str) -> str:
        address = _parse_address(text)
        if address is None:
            return text or "unknown"
        if isinstance(address, ipaddress.IPv6Address):
            if self.ipv6_prefix == 128:
                return str(address)
            network = ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False)
            return str(network)
        if self.ipv4_prefix == 32:
            return str(address)
        return str(ipaddress.IPv4Network((address, self.ipv4_prefix), strict=False))


def parse_forwarded_for(value: str) -> list[str]:
    """Return the ``for=`` value of each element of an RFC 7239 ``Forwarded`` header.

    An element without a ``for=`` parameter, or one that does not parse, yields ``""`` so
    that positions in the chain are kept. Quotes are removed; brackets and ports stay and
    are stripped when the address is parsed.
    """
    results: list[str] = []
    for element in _split_outside_quotes(value, ","):
        found = ""
        for pair in _split_outside_quotes(element, ";"):
            if not pair.strip():
                continue
            match = _FORWARDED_PAIR.fullmatch(pair)
            if match is None:
                found = ""
                break
            if match[1].lower() == "for":
                raw = match[2]
                if raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                found = raw
        results.append(found)
    return results


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _parse_address(text: str) -> IPAddress | None:
    """Parse ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1`` or ``[2001:db8::1]:80``.

    Returns ``None`` for anything else. IPv4-mapped IPv6 addresses become IPv4.
    """
    text = text.strip().strip('"')
    if not text:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    if "%" in text:
        text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"trusted proxy {text!r} is not an IP address or CIDR network such as 10.0.0.0/8"
        ) from None
