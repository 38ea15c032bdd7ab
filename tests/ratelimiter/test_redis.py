"""Redis storage against the real server: atomicity, TTLs, processes, outages and recovery."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import multiprocessing
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from flask import Flask

from ratelimiter import Policy, RateLimiter, StorageError
from ratelimiter.asgi import RateLimitMiddleware
from ratelimiter.flask import Limiter
from ratelimiter.storage.redis import RedisStorage

from ..conftest import _unavailable
from .redis_worker import process_worker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def redis_client(redis_url: str, unique_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(f"{{{unique_prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def make_limiter(redis_url: str, unique_prefix: str, redis_client: redis.Redis):
    created: list[RateLimiter] = []

    def factory(policies, **kwargs) -> RateLimiter:
        kwargs.setdefault("key_prefix", unique_prefix)
        limiter = RateLimiter(policies, storage=kwargs.pop("storage", redis_url), **kwargs)
        created.append(limiter)
        return limiter

    yield factory
    for limiter in created:
        limiter.close()


def test_redis_admits_capacity(make_limiter) -> None:
    limiter = make_limiter("3/minute")
    decisions = [limiter.check("client") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[3].retry_after == pytest.approx(20.0, abs=0.5)
    assert decisions[3].retry_after_seconds in (20, 21)


def test_redis_ttl_is_time_until_full(make_limiter, redis_client, unique_prefix) -> None:
    limiter = make_limiter("10/second, burst 10; 60/minute")
    limiter.check("client", cost=4)
    keys = sorted(redis_client.scan_iter(f"{{{unique_prefix}*"))
    ttls = [redis_client.pttl(key) for key in keys]
    assert len(keys) == 2
    assert all(ttl > 0 for ttl in ttls)
    assert sorted(ttls)[0] <= 400
    assert sorted(ttls)[1] <= 4000


def test_redis_full_bucket_not_stored(make_limiter, redis_client, unique_prefix) -> None:
    limiter = make_limiter("10/second")
    limiter.check("client", cost=0)
    limiter.check("client", cost=11)
    assert list(redis_client.scan_iter(f"{{{unique_prefix}*")) == []


def test_redis_key_expires_when_full(make_limiter, redis_client, unique_prefix) -> None:
    limiter = make_limiter("100/second")
    limiter.check("client")
    time.sleep(0.05)
    assert list(redis_client.scan_iter(f"{{{unique_prefix}*")) == []


def test_redis_policies_rejected_takes_nothing(make_limiter) -> None:
    limiter = make_limiter("100/minute, burst 10; 3/hour")
    for _ in range(3):
        limiter.check("client")
    rejected = [limiter.check("client") for _ in range(5)]
    assert all(not decision.allowed for decision in rejected)
    assert [decision.states[0].remaining for decision in rejected] == [7] * 5


def test_redis_cost_above_capacity(make_limiter) -> None:
    limiter = make_limiter("10/minute")
    decision = limiter.check("client", cost=11)
    assert decision.allowed is False
    assert math.isinf(decision.retry_after)
    assert limiter.check("client", cost=10).allowed


def test_redis_retry_after_admitted(make_limiter) -> None:
    limiter = make_limiter("1/second")
    limiter.check("client")
    decision = limiter.check("client")
    assert decision.retry_after_seconds == 1
    time.sleep(decision.retry_after_seconds)
    assert limiter.check("client").allowed


def test_redis_threads_admit_capacity(make_limiter) -> None:
    """32 threads x 200 requests on one key with capacity 100 admit exactly 100."""
    # A generous timeout: this test is about atomicity, and a loaded CI machine can stall a
    # thread for longer than the default 0.1 s.
    limiter = make_limiter(Policy(1, 86400.0, burst=100), timeout=5.0)
    admitted = itertools.count()
    start = threading.Barrier(32)

    def worker() -> None:
        start.wait()
        for _ in range(200):
            if limiter.check("shared").allowed:
                next(admitted)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
    assert limiter.counters["storage_error"] == 0
    assert next(admitted) == 100


def test_redis_processes_admit_capacity(redis_url, unique_prefix, redis_client) -> None:
    """4 processes sharing Redis admit exactly the capacity, 50."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    results = context.Queue()
    processes = [
        context.Process(target=process_worker, args=(redis_url, unique_prefix, barrier, results))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=45) for _ in processes]
    for process in processes:
        process.join(timeout=10)
    assert sum(admitted for admitted, _ in outcomes) == 50
    assert sum(errors for _, errors in outcomes) == 0


def test_redis_check_async(make_limiter) -> None:
    limiter = make_limiter("2/minute")

    async def run() -> list[bool]:
        return [(await limiter.check_async("client")).allowed for _ in range(3)]

    assert asyncio.run(run()) == [True, True, False]


def test_redis_asgi_middleware(make_limiter) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request):
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(RateLimitMiddleware, limiter=make_limiter("2/minute"))

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.get("/")).status_code for _ in range(3)]

    assert asyncio.run(run()) == [200, 200, 429]


# Outages


# Upper bound of one check against a failed Redis with the default 0.1 s timeout; the margin
# covers a loaded 2-core CI machine.
OUTAGE_BOUND_S = 0.5


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening, so every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A loopback listener that accepts connections and never sends a reply."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    for connection in accepted:
        connection.close()
    server.close()


def timed_check(limiter: RateLimiter) -> tuple[float, object]:
    started = time.perf_counter()
    decision = limiter.check("client")
    return time.perf_counter() - started, decision


@pytest.mark.parametrize(("setting", "allowed"), [("allow", True), ("deny", False)])
def test_outage_closed_port(setting: str, allowed: bool, closed_port: int) -> None:
    limiter = RateLimiter(
        "1/minute", storage=f"redis://127.0.0.1:{closed_port}/0", on_storage_error=setting
    )
    elapsed, decision = timed_check(limiter)
    assert decision.allowed is allowed
    assert decision.storage_error is True
    assert elapsed < OUTAGE_BOUND_S


@pytest.mark.parametrize(("setting", "allowed"), [("allow", True), ("deny", False)])
def test_outage_silent_listener(setting: str, allowed: bool, silent_listener: int) -> None:
    limiter = RateLimiter(
        "1/minute", storage=f"redis://127.0.0.1:{silent_listener}/0", on_storage_error=setting
    )
    for _ in range(3):
        elapsed, decision = timed_check(limiter)
        assert decision.allowed is allowed
        assert decision.storage_error is True
        assert elapsed < OUTAGE_BOUND_S


def test_outage_silent_listener_async(silent_listener: int) -> None:
    limiter = RateLimiter(
        "1/minute", storage=f"redis://127.0.0.1:{silent_listener}/0", on_storage_error="deny"
    )

    async def run() -> tuple[float, object]:
        started = time.perf_counter()
        decision = await limiter.check_async("client")
        return time.perf_counter() - started, decision

    elapsed, decision = asyncio.run(run())
    assert decision.allowed is False
    assert elapsed < OUTAGE_BOUND_S


def test_outage_custom_timeout(silent_listener: int) -> None:
    limiter = RateLimiter("1/minute", storage=f"redis://127.0.0.1:{silent_listener}/0", timeout=0.3)
    elapsed, _ = timed_check(limiter)
    assert 0.25 < elapsed < 0.8


def test_outage_flask_deny_503(closed_port: int) -> None:
    app = Flask(__name__)
    limiter = Limiter(
        app,
        default_limits="10/minute",
        storage=f"redis://127.0.0.1:{closed_port}/0",
        on_storage_error="deny",
    )
    app.add_url_rule("/", "index", lambda: "hi")
    response = app.test_client().get("/")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["retry_after"] == 1
    assert limiter.limiter.counters["storage_error"] == 1


class ToggleProxy:
    """A loopback TCP forwarder to Redis that refuses connections until it is started."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []

    def start(self) -> None:
        self.server.listen(16)
        self.server.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self.server.close()
        for sock in self._sockets:
            sock.close()


def test_outage_logged_once_and_recovery(
    redis_url: str, unique_prefix: str, redis_client, caplog
) -> None:
    port = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    proxy = ToggleProxy(port)
    try:
        storage = RedisStorage(f"redis://127.0.0.1:{proxy.port}/0", failure_backoff=0.2)
        limiter = RateLimiter("100/minute", storage=storage, key_prefix=unique_prefix)
        with caplog.at_level(logging.INFO, logger="ratelimiter"):
            failures = [limiter.check("client").storage_error for _ in range(5)]
            proxy.start()
            time.sleep(0.3)
            recovered = [limiter.check("client").storage_error for _ in range(5)]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        recoveries = [r for r in caplog.records if "recovered" in r.getMessage()]
        assert failures == [True] * 5
        assert recovered == [False] * 5
        assert len(errors) == 1
        assert len(recoveries) == 1
        assert "after 5 failed checks" in recoveries[0].getMessage()
        limiter.close()
    finally:
        proxy.close()


def test_outage_backoff_fails_fast(silent_listener: int) -> None:
    storage = RedisStorage(f"redis://127.0.0.1:{silent_listener}/0", failure_backoff=5.0)
    limiter = RateLimiter("1/minute", storage=storage)
    first, _ = timed_check(limiter)
    later = [timed_check(limiter)[0] for _ in range(5)]
    assert first >= 0.09
    assert max(later) < 0.05


def test_outage_backoff_retries_after(closed_port: int) -> None:
    storage = RedisStorage(f"redis://127.0.0.1:{closed_port}/0", failure_backoff=0.1)
    limiter = RateLimiter("1/minute", storage=storage)
    limiter.check("client")
    time.sleep(0.15)
    with pytest.raises(StorageError, match="failed: ConnectionError"):
        storage.acquire(limiter.buckets("client"), 1)


def test_redis_invalid_url() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisStorage("redis://127.0.0.1:notaport/0")


@pytest.mark.parametrize(
    "policy", ["1000000000/day", "7/second, burst 3", "999983/hour, burst 1000000"]
)
def test_redis_matches_memory_counts(policy: str, make_limiter) -> None:
    """Large and awkward policies keep exact counts: capacity admitted, then rejections."""
    limiter = make_limiter(policy)
    capacity = limiter.policies[0].capacity
    first = limiter.check("client", cost=capacity)
    second = limiter.check("client", cost=capacity)
    assert first.allowed is True
    assert first.remaining == 0
    assert second.allowed is False
    assert 0 < second.retry_after <= capacity / limiter.policies[0].rate


def test_redis_remaining_after_partial_cost(make_limiter) -> None:
    limiter = make_limiter("1000000/day")
    assert limiter.check("client", cost=250_000).remaining == 750_000


# The script's arithmetic and the encoded command


def redis_time_us(client: redis.Redis) -> int:
    seconds, microseconds = client.time()
    return seconds * 1_000_000 + microseconds


def stored_value(client: redis.Redis, prefix: str, key: str, policy: Policy) -> tuple[int, int]:
    """Return the (microseconds, fraction) pair stored for ``key`` under ``policy``."""
    value = client.get(f"{{{prefix}:{key}}}:{policy.storage_id}")
    microseconds, fraction = value.split(b":")
    return int(microseconds), int(fraction)


@pytest.mark.parametrize(
    ("policy", "costs", "steps"),
    [
        # 60 s / 7 = 8,571,428 us + 4/7: the fractions carry into whole microseconds.
        ("7/minute", [1, 1, 5], [(8_571_428, 4), (8_571_429, 1), (42_857_143, 0)]),
        # One token lasts 86 us + 0.4. The first cost keeps the bucket 8.6 s from full, so the
        # next checks build on its arrival time. The sums need 51 bits and stay exact.
        (
            "1000000000/day",
            [100_001, 1, 1],
            [(8_640_086, 400_000_000), (86, 800_000_000), (87, 200_000_000)],
        ),
    ],
)
def test_redis_stored_tat_exact(
    policy: str,
    costs: list[int],
    steps: list[tuple[int, int]],
    make_limiter,
    redis_client,
    unique_prefix,
) -> None:
    """Each admitted check adds exactly cost x period / count to the stored arrival time."""
    limiter = make_limiter(policy)
    before = redis_time_us(redis_client)
    previous = None
    for cost, (step_us, fraction) in zip(costs, steps, strict=True):
        assert limiter.check("client", cost=cost).allowed
        microseconds, stored_fraction = stored_value(
            redis_client, unique_prefix, "client", limiter.policies[0]
        )
        if previous is None:
            # The first check starts from the server's clock, read between these two calls.
            assert before + step_us <= microseconds <= redis_time_us(redis_client) + step_us
        else:
            assert microseconds - previous == step_us
        assert stored_fraction == fraction
        previous = microseconds


def test_redis_largest_refill_exact(make_limiter, redis_client, unique_prefix) -> None:
    """A bucket that takes 2**51 us to refill stores its arrival time and TTL exactly."""
    policy = Policy(1, 2**51 / 1_000_000)
    limiter = make_limiter(policy)
    before = redis_time_us(redis_client)
    assert limiter.check("client").allowed
    microseconds, fraction = stored_value(redis_client, unique_prefix, "client", policy)
    key = f"{{{unique_prefix}:client}}:{policy.storage_id}"
    assert before + 2**51 <= microseconds <= redis_time_us(redis_client) + 2**51
    assert fraction == 0
    assert 2**51 // 1000 - 60_000 < redis_client.pttl(key) <= 2**51 // 1000 + 1


@pytest.mark.parametrize(
    ("stored", "remaining"),
    [
        ("{future}:0", 5),  # 3.5 tokens used: 6.5 left, 5 after this check
        ("{past}:0", 9),
        ("{future}", 9),  # no fraction: not a stored state
        ("garbage", 9),
    ],
)
def test_redis_reads_stored_value(
    stored: str, remaining: int, make_limiter, redis_client, unique_prefix
) -> None:
    """A stored value other than "<microseconds>:<fraction>" counts as an unused bucket."""
    limiter = make_limiter("10/minute")
    now = redis_time_us(redis_client)
    value = stored.format(future=now + 21_000_000, past=now - 1_000_000)
    key = f"{{{unique_prefix}:client}}:{limiter.policies[0].storage_id}"
    redis_client.set(key, value, px=60_000)
    assert limiter.check("client").remaining == remaining


def test_redis_unicode_key(make_limiter, redis_client, unique_prefix) -> None:
    limiter = make_limiter("2/minute")
    decisions = [limiter.check("клиент-ü") for _ in range(3)]
    key = f"{{{unique_prefix}:клиент-ü}}:{limiter.policies[0].storage_id}"
    assert [decision.allowed for decision in decisions] == [True, True, False]
    assert redis_client.exists(key.encode()) == 1


def test_redis_table_matches_acquire(make_limiter) -> None:
    """The single-policy fast path returns what the general path returns."""
    limiter = make_limiter("10/day")
    storage = limiter.storage
    policy = limiter.policies[0]
    for cost in [3, 5, 4, 0, 2]:
        fast = limiter.check("fast", cost=cost)
        allowed, [state] = storage.acquire(limiter.buckets("general"), cost)
        assert fast.allowed is allowed
        assert fast.remaining == state.remaining
        assert fast.retry_after == pytest.approx(state.retry_after, abs=0.01)
        assert fast.reset_after == pytest.approx(state.reset_after, abs=0.01)
        assert fast.policy is policy


def test_redis_many_distinct_costs(make_limiter) -> None:
    """Costs past the encoded-argument cache are encoded per call, with the same result."""
    limiter = make_limiter("100000/day")
    remaining = [limiter.check("client", cost=cost).remaining for cost in range(1, 101)]
    assert remaining == [100_000 - cost * (cost + 1) // 2 for cost in range(1, 101)]


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start a redis-server of this module's own, so tests may flush its scripts."""
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed, so a private Redis cannot be started")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis-private")
    server = subprocess.Popen(
        [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    _unavailable(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(
    ("policies", "use_async"),
    [("1/minute", False), ("1/minute; 10/hour", False), ("1/minute", True)],
)
def test_redis_script_reloaded_after_flush(
    policies: str, use_async: bool, private_redis: str, unique_prefix: str
) -> None:
    """After SCRIPT FLUSH the next check loads the script again and keeps the buckets."""
    limiter = RateLimiter(policies, storage=private_redis, key_prefix=unique_prefix, timeout=2.0)
    flusher = redis.Redis.from_url(private_redis)

    async def check_async() -> bool:
        return (await limiter.check_async("client")).allowed

    def check() -> bool:
        return asyncio.run(check_async()) if use_async else limiter.check("client").allowed

    try:
        first = check()
        flusher.script_flush()
        second = check()
        assert first is True
        assert second is False
        assert limiter.counters["storage_error"] == 0
    finally:
        flusher.close()
        limiter.close()
