"""Origin and Host parsing, the host allow-list and its WSGI middleware."""

from __future__ import annotations

import json
import logging

import pytest
from werkzeug.test import Client

from codecollab.origins import (
    AllowedHostsMiddleware,
    default_allowed_hosts,
    forwarded_value,
    host_allowed,
    host_name,
    is_same_origin,
)


@pytest.mark.parametrize(
    ("origin", "host", "expected"),
    [
        ("http://127.0.0.1:3000", "127.0.0.1:3000", True),
        ("http://example.com", "example.com:80", True),
        ("http://Example.COM:80", "example.com", True),
        ("http://[::1]:3000", "[::1]:3000", True),
        ("https://example.com", "example.com", False),
        ("http://127.0.0.1:3001", "127.0.0.1:3000", False),
        # A Host without a port names port 80, whatever port the client connected to.
        ("http://127.0.0.1:3000", "127.0.0.1", False),
        ("http://evil@127.0.0.1:3000", "127.0.0.1:3000", False),
        ("http://127.0.0.1:3000/", "127.0.0.1:3000", False),
        ("http://127.0.0.1:port", "127.0.0.1:3000", False),
        ("null", "127.0.0.1:3000", False),
        ("http://example.com:0", "example.com", False),
        ("http://[::1]evil.example", "[::1]", False),
        ("http://[::1]]:8000", "[::1]:8000", False),
        ("http://[0:0:0:0:0:0:0:1]:3000", "[::1]:3000", True),
        ("h\ttp://example.com", "example.com", False),
        (" http://example.com", "example.com", False),
        ("http://example.com;evil", "example.com;evil", False),
        ("http://%65xample.com", "%65xample.com", False),
        # A Host header with a user name part would parse as the other host.
        ("http://evil.example", "127.0.0.1:3000@evil.example", False),
    ],
)
def test_same_origin_compare(origin: str, host: str, expected: bool) -> None:
    assert is_same_origin(origin, "http", host) is expected


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("Example.COM:8080", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:3000", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("", None),
        ("127.0.0.1:3000@evil.example", None),
        ("evil.example/path", None),
        ("example.com:port", None),
    ],
)
def test_host_name(host: str, name: str | None) -> None:
    assert host_name(host) == name


LOOPBACK = ("localhost", "127.0.0.1", "::1")


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1", LOOPBACK),
        ("127.0.0.2", (*LOOPBACK, "127.0.0.2")),
        ("::1", LOOPBACK),
        ("localhost", LOOPBACK),
        ("0.0.0.0", ("*",)),
        ("192.168.1.5", ("*",)),
        ("editor.example.com", ("*",)),
    ],
)
def test_default_allowed_hosts(bind: str, expected: tuple[str, ...]) -> None:
    assert default_allowed_hosts(bind) == expected


@pytest.mark.parametrize(
    ("header", "proxies", "expected"),
    [
        ("editor.example.com", 1, "editor.example.com"),
        ("evil.example, editor.example.com", 1, "editor.example.com"),
        ("evil.example, edge.example.com, editor.example.com", 2, "edge.example.com"),
        ("editor.example.com", 3, "editor.example.com"),
    ],
)
def test_forwarded_value(header: str, proxies: int, expected: str) -> None:
    assert forwarded_value(header, proxies) == expected


@pytest.mark.parametrize(
    ("name", "allowed", "expected"),
    [
        ("localhost", ("localhost", "127.0.0.1"), True),
        ("evil.example", ("localhost", "127.0.0.1"), False),
        ("anything.example", ("*",), True),
        ("docs.example.com", (".example.com",), True),
        ("example.com", (".example.com",), True),
        ("badexample.com", (".example.com",), False),
    ],
)
def test_host_allowed(name: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert host_allowed(name, allowed) is expected


def hello_app(environ, start_response):  # noqa: ANN001, ANN201
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def status_for(host: str, allowed: tuple[str, ...] = ("editor.example.com",), **headers) -> int:
    """Return the status the middleware gives a request with ``Host: host``."""
    client = Client(AllowedHostsMiddleware(hello_app, allowed, proxy_count=0))
    return client.get("/", headers={"Host": host, **headers}).status_code


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("editor.example.com:3000", 200),
        ("EDITOR.example.com.", 200),
        # The loopback names are allowed whatever the list contains.
        ("localhost:3000", 200),
        ("127.0.0.1", 200),
        ("[::1]:3000", 200),
        ("evil.example", 400),
        ("", 400),
    ],
)
def test_middleware_host(host: str, expected: int) -> None:
    assert status_for(host) == expected


def test_middleware_rejection_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    client = Client(AllowedHostsMiddleware(hello_app, (), proxy_count=0))
    with caplog.at_level(logging.WARNING):
        response = client.get("/", headers={"Host": "evil.example:3000"})
        client.get("/", headers={"Host": "EVIL.example:80"})
    assert response.status_code == 400
    assert "CODECOLLAB_ALLOWED_HOSTS" in json.loads(response.data)["error"]
    # One warning per host name, whatever its port or letter case.
    assert len(caplog.records) == 1


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [("editor.example.com", 200), ("editor.example.com, evil.example", 400)],
)
def test_middleware_forwarded_host(forwarded: str, expected: int) -> None:
    app = AllowedHostsMiddleware(hello_app, ("editor.example.com",), proxy_count=1)
    response = Client(app).get("/", headers={"Host": "10.0.0.5", "X-Forwarded-Host": forwarded})
    assert response.status_code == expected
