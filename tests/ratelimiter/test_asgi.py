"""The ASGI middleware with Starlette and FastAPI, including streaming responses."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from ratelimiter import RateLimiter
from ratelimiter.asgi import RateLimitMiddleware
from ratelimiter.clientip import ClientIP
from ratelimiter.storage import MemoryStorage

from .conftest import FakeClock

pytestmark = pytest.mark.timeout(30)

CHUNKS = [f"chunk {i}\n".encode() for i in range(50)]


async def stream():
    for chunk in CHUNKS:
        await asyncio.sleep(0)
        yield chunk


def make_starlette(limiter: RateLimiter, **kwargs) -> Starlette:
    async def hello(request):
        return PlainTextResponse("hello")

    async def streamed(request):
        return StreamingResponse(stream(), media_type="text/plain", headers={"X-App": "kept"})

    app = Starlette(routes=[Route("/", hello), Route("/stream", streamed)])
    app.add_middleware(RateLimitMiddleware, limiter=limiter, **kwargs)
    return app


def memory_limiter(clock: FakeClock, policy: str = "2/minute") -> RateLimiter:
    return RateLimiter(policy, storage=MemoryStorage(clock=clock))


async def get_statuses(app, path: str, count: int, **kwargs) -> list[int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return [(await client.get(path, **kwargs)).status_code for _ in range(count)]


def test_asgi_rejects_third(clock: FakeClock) -> None:
    app = make_starlette(memory_limiter(clock))
    assert asyncio.run(get_statuses(app, "/", 3)) == [200, 200, 429]


def test_asgi_rejection_response(clock: FakeClock) -> None:
    app = make_starlette(memory_limiter(clock))

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("/")
            await client.get("/")
            return await client.get("/")

    response = asyncio.run(run())
    assert response.json() == {
        "error": "rate limit of 2 per minute exceeded; retry in 30 s",
        "retry_after": 30,
    }
    assert response.headers["retry-after"] == "30"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["ratelimit"] == '"2/60s";r=0;t=60'


def test_asgi_streaming_intact(clock: FakeClock) -> None:
    app = make_starlette(memory_limiter(clock))

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/stream")

    response = asyncio.run(run())
    assert response.content == b"".join(CHUNKS)
    assert response.headers["x-app"] == "kept"
    assert response.headers["ratelimit"] == '"2/60s";r=1;t=30'


async def collect_messages(app, path: str = "/stream") -> list[dict]:
    messages: list[dict] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]
    finished = asyncio.Event()

    async def receive():
        if requests:
            return requests.pop()
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            finished.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("198.51.100.7", 50000),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    return messages


def test_asgi_streaming_one_start(clock: FakeClock) -> None:
    app = make_starlette(memory_limiter(clock))
    messages = asyncio.run(collect_messages(app))
    starts = [m for m in messages if m["type"] == "http.response.start"]
    bodies = [m["body"] for m in messages if m["type"] == "http.response.body"]
    assert len(starts) == 1
    assert messages[0]["type"] == "http.response.start"
    assert b"".join(bodies) == b"".join(CHUNKS)
    assert len(bodies) >= len(CHUNKS)


def test_asgi_rejection_one_start(clock: FakeClock) -> None:
    app = make_starlette(memory_limiter(clock, "1/minute"))
    asyncio.run(collect_messages(app))
    messages = asyncio.run(collect_messages(app))
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert messages[0]["status"] == 429


def test_asgi_options_exempt(clock: FakeClock) -> None:
    app = make_starlette(memory_limiter(clock, "1/minute"))

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.options("/")).status_code for _ in range(3)]

    assert 429 not in asyncio.run(run())


def test_asgi_exempt_path(clock: FakeClock) -> None:
    app = make_starlette(memory_limiter(clock, "1/minute"), exempt_paths=["/stream"])
    assert asyncio.run(get_statuses(app, "/stream", 3)) == [200, 200, 200]


def test_asgi_async_key_func(clock: FakeClock) -> None:
    async def tenant(scope) -> str:
        return dict(scope["headers"]).get(b"x-tenant", b"none").decode()

    app = make_starlette(memory_limiter(clock, "1/minute"), key_func=tenant)
    first = asyncio.run(get_statuses(app, "/", 2, headers={"X-Tenant": "a"}))
    second = asyncio.run(get_statuses(app, "/", 1, headers={"X-Tenant": "b"}))
    assert first + second == [200, 429, 200]


def test_asgi_forged_forwarded_for(clock: FakeClock) -> None:
    app = make_starlette(memory_limiter(clock))

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                (await client.get("/", headers={"X-Forwarded-For": f"203.0.113.{i}"})).status_code
                for i in range(3)
            ]

    assert asyncio.run(run()) == [200, 200, 429]


def test_asgi_trusted_proxy_rotation(clock: FakeClock) -> None:
    app = make_starlette(memory_limiter(clock), client_ip=ClientIP(trusted_proxies=1))

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                (
                    await client.get("/", headers={"X-Forwarded-For": f"6.6.6.{i}, 203.0.113.9"})
                ).status_code
                for i in range(3)
            ]

    assert asyncio.run(run()) == [200, 200, 429]


def test_asgi_fastapi(clock: FakeClock) -> None:
    app = FastAPI()

    @app.get("/items")
    async def items() -> dict:
        return {"items": []}

    app.add_middleware(RateLimitMiddleware, limiter=memory_limiter(clock))
    assert asyncio.run(get_statuses(app, "/items", 3)) == [200, 200, 429]


@pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
def test_asgi_other_scopes_pass(scope_type: str, clock: FakeClock) -> None:
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    middleware = RateLimitMiddleware(inner, limiter=memory_limiter(clock))
    asyncio.run(middleware({"type": scope_type}, None, None))
    assert seen == [scope_type]
