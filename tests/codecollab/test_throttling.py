"""The editor's HTTP rate limit, seen from a client of a real editor process."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from .conftest import ServerFactory, ServerProcess
from .yclient import unique_session


def get(server: ServerProcess, path: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"{server.url}{path}", timeout=10) as reply:
            return reply.status, dict(reply.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


@pytest.mark.parametrize(
    "path",
    ["/", "/api/sessions/default", "/api/sessions/default/text", "/no-such-page"],
)
def test_http_limit_headers_on_responses(shared_editor: ServerProcess, path: str) -> None:
    status, headers = get(shared_editor, path)
    assert status in (200, 404)
    assert "RateLimit-Policy" in headers
    assert "RateLimit" in headers


def test_http_limit_headers_on_429(start_editor: ServerFactory) -> None:
    server = start_editor(CODECOLLAB_HTTP_RATE_LIMIT="3/minute, burst 3")
    path = f"/api/sessions/{unique_session()}"
    replies = [get(server, path) for _ in range(5)]
    status, headers = replies[-1]
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert headers["RateLimit-Policy"].startswith('"3/60s"')
    assert "r=0" in headers["RateLimit"]


def remaining(headers: dict[str, str]) -> int:
    """Return the tokens left (``r``) in the first bucket of a ``RateLimit`` header."""
    return int(headers["RateLimit"].split(";r=")[1].split(";")[0])


def test_static_files_own_bucket(start_editor: ServerFactory) -> None:
    server = start_editor(
        CODECOLLAB_HTTP_RATE_LIMIT="30/minute, burst 30",
        CODECOLLAB_STATIC_RATE_LIMIT="50/minute, burst 50",
    )
    _, before = get(server, "/api/sessions/default")
    statics = [get(server, "/static/theme-init.js")[0] for _ in range(12)]
    _, after = get(server, "/api/sessions/default")
    assert statics == [200] * 12
    # Twelve static files took nothing from the routes' bucket: only the second GET did.
    assert remaining(before) - remaining(after) == 1


def test_static_files_limited(start_editor: ServerFactory) -> None:
    server = start_editor(CODECOLLAB_STATIC_RATE_LIMIT="2/minute, burst 2")
    statuses = [get(server, "/static/theme-init.js")[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


def rejected_reply(server: ServerProcess, path: str, accept: str) -> tuple[int, str, bytes]:
    """Use up the one-request bucket, then return status, Content-Type and body of a 429."""
    get(server, "/healthz")
    request = urllib.request.Request(f"{server.url}{path}", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(
    ("path", "accept", "html"),
    [
        ("/", BROWSER_ACCEPT, True),
        ("/no-such-page", BROWSER_ACCEPT, True),
        ("/?r=%FF", BROWSER_ACCEPT, True),
        ("/", "*/*", False),
        ("/", "text/html;q=0, application/json", False),
        ("/api/sessions/default", BROWSER_ACCEPT, False),
    ],
)
def test_429_html_for_browsers(
    start_editor: ServerFactory, path: str, accept: str, html: bool
) -> None:
    server = start_editor(CODECOLLAB_HTTP_RATE_LIMIT="1/minute, burst 1")
    status, content_type, body = rejected_reply(server, path, accept)
    assert status == 429
    assert content_type.startswith("text/html" if html else "application/json")
    assert (b"Too many requests" in body) is html


def test_429_retry_link_quoted(start_editor: ServerFactory) -> None:
    server = start_editor(CODECOLLAB_HTTP_RATE_LIMIT="1/minute, burst 1")
    _, _, body = rejected_reply(server, "//s/%0d%0aX%22%3E", BROWSER_ACCEPT)
    assert b'href="/s/%0D%0AX%22%3E"' in body
