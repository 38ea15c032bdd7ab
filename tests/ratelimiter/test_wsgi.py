"""The WSGI middleware around a plain WSGI application."""

from __future__ import annotations

import json

from werkzeug.test import Client

from ratelimiter import Policy, RateLimiter
from ratelimiter.clientip import ClientIP
from ratelimiter.storage import MemoryStorage
from ratelimiter.wsgi import RateLimitMiddleware

from .conftest import FakeClock


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def make_client(clock: FakeClock, policy: str = "2/minute", **kwargs) -> Client:
    limiter = RateLimiter(policy, storage=MemoryStorage(clock=clock))
    return Client(RateLimitMiddleware(hello_app, limiter, **kwargs))


def test_wsgi_rejects_third(clock: FakeClock) -> None:
    client = make_client(clock)
    statuses = [client.get("/").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_wsgi_rejection_response(clock: FakeClock) -> None:
    client = make_client(clock)
    client.get("/")
    client.get("/")
    response = client.get("/")
    assert json.loads(response.data) == {
        "error": "rate limit of 2 per minute exceeded; retry in 30 s",
        "retry_after": 30,
    }
    assert response.headers["Retry-After"] == "30"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/json"


def test_wsgi_rejection_named_policy(clock: FakeClock) -> None:
    limiter = RateLimiter(Policy(1, 60.0, name="uploads"), storage=MemoryStorage(clock=clock))
    client = Client(RateLimitMiddleware(hello_app, limiter))
    client.get("/")
    error = json.loads(client.get("/").data)["error"]
    assert error == "rate limit uploads (1 per minute) exceeded; retry in 60 s"


def test_wsgi_allowed_headers(clock: FakeClock) -> None:
    response = make_client(clock).get("/")
    assert response.data == b"hello"
    assert response.headers["RateLimit"] == '"2/60s";r=1;t=30'
    assert response.headers["RateLimit-Policy"] == '"2/60s";q=2;w=60'


def test_wsgi_headers_disabled(clock: FakeClock) -> None:
    response = make_client(clock, headers_enabled=False).get("/")
    assert "RateLimit" not in response.headers


def test_wsgi_exempt_paths(clock: FakeClock) -> None:
    client = make_client(clock, exempt_paths=["/healthz", "/static/"])
    statuses = [client.get(path).status_code for path in ["/healthz", "/static/a.css"] * 3]
    assert statuses == [200] * 6


def test_wsgi_exempt_prefix_exact_only(clock: FakeClock) -> None:
    client = make_client(clock, exempt_paths=["/healthz"])
    statuses = [client.get("/healthz/deep").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_wsgi_options_exempt(clock: FakeClock) -> None:
    client = make_client(clock)
    statuses = [client.options("/").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]


def test_wsgi_head_counted(clock: FakeClock) -> None:
    client = make_client(clock)
    statuses = [client.head("/").status_code, client.get("/").status_code]
    statuses.append(client.head("/").status_code)
    assert statuses == [200, 200, 429]


def test_wsgi_cost_func(clock: FakeClock) -> None:
    client = make_client(clock, "10/minute", cost=lambda environ: 5)
    statuses = [client.get("/").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_wsgi_key_func(clock: FakeClock) -> None:
    client = make_client(clock, key_func=lambda environ: environ.get("HTTP_X_TENANT", "none"))
    for _ in range(2):
        client.get("/", headers={"X-Tenant": "a"})
    assert client.get("/", headers={"X-Tenant": "b"}).status_code == 200


def test_wsgi_forged_forwarded_for(clock: FakeClock) -> None:
    client = make_client(clock)
    statuses = [
        client.get("/", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_wsgi_trusted_proxy_rotation(clock: FakeClock) -> None:
    client = make_client(clock, client_ip=ClientIP(trusted_proxies=["127.0.0.0/8"]))
    statuses = [
        client.get("/", headers={"X-Forwarded-For": f"6.6.6.{i}, 203.0.113.9"}).status_code
        for i in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_wsgi_limiter_without_policies() -> None:
    import pytest

    with pytest.raises(ValueError, match="no policies"):
        RateLimitMiddleware(hello_app, RateLimiter(None))
