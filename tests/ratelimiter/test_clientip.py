"""ClientIP: peer addresses, trusted proxies, forwarding headers and IPv6 grouping."""

from __future__ import annotations

import pytest

from ratelimiter.clientip import ClientIP, parse_forwarded_for
from ratelimiter.keys import APIKeyHeader


def environ(remote: str, **headers: str) -> dict:
    env = {"REMOTE_ADDR": remote}
    for name, value in headers.items():
        env["HTTP_" + name.upper()] = value
    return env


def scope(remote: str, headers: list[tuple[bytes, bytes]] = ()) -> dict:
    return {"type": "http", "client": (remote, 50000), "headers": list(headers)}


@pytest.mark.parametrize(
    ("remote", "forwarded_for", "expected"),
    [
        ("198.51.100.7", None, "198.51.100.7"),
        ("198.51.100.7", "203.0.113.1", "198.51.100.7"),
        ("198.51.100.7", "203.0.113.1, 10.0.0.1", "198.51.100.7"),
        ("2001:db8:1:2:3:4:5:6", None, "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.7", None, "198.51.100.7"),
        ("", None, "unknown"),
    ],
)
def test_untrusted_uses_peer(remote: str, forwarded_for: str | None, expected: str) -> None:
    headers = {"X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    assert ClientIP().from_environ(environ(remote, **headers)) == expected


@pytest.mark.parametrize(
    ("trusted", "remote", "forwarded_for", "expected"),
    [
        (["10.0.0.0/8"], "10.0.0.2", "203.0.113.9", "203.0.113.9"),
        (["10.0.0.0/8"], "10.0.0.2", "1.1.1.1, 203.0.113.9", "203.0.113.9"),
        (["10.0.0.0/8"], "10.0.0.2", "1.1.1.1, 203.0.113.9, 10.0.0.7", "203.0.113.9"),
        (["10.0.0.0/8"], "198.51.100.7", "203.0.113.9", "198.51.100.7"),
        (["10.0.0.0/8"], "10.0.0.2", "10.0.0.3, 10.0.0.4", "10.0.0.3"),
        (["10.0.0.0/8"], "10.0.0.2", "garbage, 203.0.113.9", "203.0.113.9"),
        (["10.0.0.0/8"], "10.0.0.2", "203.0.113.9, garbage", "10.0.0.2"),
        (["10.0.0.0/8"], "10.0.0.2", "[2001:db8::1]:443", "2001:db8::/64"),
        (["10.0.0.0/8"], "10.0.0.2", "203.0.113.9:8080", "203.0.113.9"),
        (["10.0.0.0/8", "2001:db8:ffff::/48"], "2001:db8:ffff::1", "203.0.113.9", "203.0.113.9"),
        (1, "10.0.0.2", "1.1.1.1, 203.0.113.9", "203.0.113.9"),
        (2, "10.0.0.2", "1.1.1.1, 203.0.113.9, 10.9.9.9", "203.0.113.9"),
        (2, "10.0.0.2", "203.0.113.9", "10.0.0.2"),
        (1, "10.0.0.2", "", "10.0.0.2"),
    ],
)
def test_trusted_forwarded_for(trusted, remote: str, forwarded_for: str, expected: str) -> None:
    client_ip = ClientIP(trusted_proxies=trusted)
    assert client_ip.from_environ(environ(remote, X_FORWARDED_FOR=forwarded_for)) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("for=203.0.113.9", "203.0.113.9"),
        ('for=1.1.1.1, for="203.0.113.9";proto=https', "203.0.113.9"),
        ('for="[2001:db8:1:2::9]:4711"', "2001:db8:1:2::/64"),
        ("for=unknown", "10.0.0.2"),
        ("for=1.1.1.1;by=x, proto=http, for=203.0.113.9", "203.0.113.9"),
        ("For=203.0.113.9;Proto=https", "203.0.113.9"),
    ],
)
def test_trusted_forwarded_rfc7239(header: str, expected: str) -> None:
    client_ip = ClientIP(trusted_proxies=["10.0.0.0/8"], header="Forwarded")
    assert client_ip.from_environ(environ("10.0.0.2", FORWARDED=header)) == expected


def test_forwarded_ignores_x_forwarded_for() -> None:
    client_ip = ClientIP(trusted_proxies=1, header="Forwarded")
    assert client_ip.from_environ(environ("10.0.0.2", X_FORWARDED_FOR="1.1.1.1")) == "10.0.0.2"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('for=a;proto="x,y", for=b', ["a", "b"]),
        ('for="\\"quoted\\""', ['"quoted"']),
        ("proto=http", [""]),
        ("for=a;;for=b", ["b"]),
        ("nonsense", [""]),
    ],
)
def test_parse_forwarded_for(header: str, expected: list[str]) -> None:
    assert parse_forwarded_for(header) == expected


def test_forged_rotation_one_key() -> None:
    """Rotating forged leftmost values behind one trusted proxy keeps one key."""
    client_ip = ClientIP(trusted_proxies=1)
    keys = {
        client_ip.from_environ(environ("10.0.0.2", X_FORWARDED_FOR=f"6.6.6.{i}, 203.0.113.9"))
        for i in range(50)
    }
    assert keys == {"203.0.113.9"}


def test_scope_underscore_header_ignored() -> None:
    client_ip = ClientIP(trusted_proxies=1)
    forged = scope("10.0.0.2", [(b"x_forwarded_for", b"203.0.113.9")])
    assert client_ip.from_scope(forged) == "10.0.0.2"


def test_scope_header_read() -> None:
    client_ip = ClientIP(trusted_proxies=1)
    request = scope("10.0.0.2", [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9")])
    assert client_ip.from_scope(request) == "203.0.113.9"


def test_scope_repeated_header_joined() -> None:
    client_ip = ClientIP(trusted_proxies=1)
    request = scope(
        "10.0.0.2", [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"203.0.113.9")]
    )
    assert client_ip.from_scope(request) == "203.0.113.9"


@pytest.mark.parametrize(
    ("kwargs", "address", "expected"),
    [
        ({}, "2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ({"ipv6_prefix": 128}, "2001:db8:1:2:aaaa::1", "2001:db8:1:2:aaaa::1"),
        ({"ipv6_prefix": 48}, "2001:db8:1:2:aaaa::1", "2001:db8:1::/48"),
        ({"ipv4_prefix": 24}, "198.51.100.7", "198.51.100.0/24"),
        ({}, "198.51.100.7", "198.51.100.7"),
    ],
)
def test_prefix_grouping(kwargs: dict, address: str, expected: str) -> None:
    assert ClientIP(**kwargs).from_environ(environ(address)) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trusted_proxies": ["10.0.0.0/33"]}, "10.0.0.0/33"),
        ({"trusted_proxies": ["proxy.local"]}, "proxy.local"),
        ({"trusted_proxies": -1}, "negative"),
        ({"trusted_proxies": True}, "hop count"),
        ({"header": "X-Real-IP"}, "X-Real-IP"),
        ({"ipv6_prefix": 129}, "ipv6_prefix"),
        ({"ipv4_prefix": -1}, "ipv4_prefix"),
    ],
)
def test_client_ip_invalid(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClientIP(**kwargs)


def test_api_key_hashed() -> None:
    key = APIKeyHeader().from_environ(environ("198.51.100.7", X_API_KEY="secret-token"))
    assert key.startswith("apikey:")
    assert "secret-token" not in key


def test_api_key_fallback_ip() -> None:
    assert APIKeyHeader().from_environ(environ("198.51.100.7")) == "198.51.100.7"


def test_api_key_scope() -> None:
    source = APIKeyHeader()
    with_key = scope("198.51.100.7", [(b"x-api-key", b"secret-token")])
    assert source.from_scope(with_key) == source.from_environ(
        environ("1.1.1.1", X_API_KEY="secret-token")
    )
