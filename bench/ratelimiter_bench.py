"""Benchmark of the rate limiter, side by side with `limits` and Flask-Limiter.

Run from the repository root:

    .venv/bin/python bench/ratelimiter_bench.py

The first run installs the pinned comparison packages (bench/requirements-ratelimiter.txt)
into bench/.deps-ratelimiter, outside the project's .venv, so the application never depends on
them. Redis figures need a Redis server on 127.0.0.1:6379 (``--redis-url`` to change it); the
benchmark uses keys under its own prefix and deletes them afterwards.

Measured, each in one process run:

1. Per-check cost of the memory backend (median and p99 of single timed calls, and the
   median of 50-call batches, in microseconds) on the admit and reject paths, with 1, 1,000
   and 100,000 live keys, for this package, `limits`' MemoryStorage moving window, and a
   bare dict-plus-lock token bucket.
2. Redis per-check cost as a ratio to a bare ``PING`` on the same connection.
3. Requests per second of a hello-world Flask route called through WSGI without a limiter,
   with this package's extension, and with Flask-Limiter.
4. Resident memory of one million distinct keys in the memory backend (in a child process).
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.metadata
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPS = ROOT / "bench" / ".deps-ratelimiter"
REQUIREMENTS = ROOT / "bench" / "requirements-ratelimiter.txt"


def ensure_comparison_packages() -> None:
    """Install limits and Flask-Limiter into DEPS once, and put DEPS last on sys.path."""
    if not (DEPS / "limits").exists() or not (DEPS / "flask_limiter").exists():
        print(f"installing {REQUIREMENTS.name} into {DEPS.relative_to(ROOT)}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                str(DEPS),
                "-r",
                str(REQUIREMENTS),
            ],
            check=True,
        )
    # Appended, so packages the project already has (Flask, Werkzeug) keep their versions.
    sys.path.append(str(DEPS))


ensure_comparison_packages()
sys.path.insert(0, str(ROOT))

import flask  # noqa: E402
import flask_limiter  # noqa: E402
import limits  # noqa: E402
import limits.storage  # noqa: E402
import limits.strategies  # noqa: E402
import redis  # noqa: E402
from flask_limiter.util import get_remote_address  # noqa: E402

from ratelimiter import RateLimiter  # noqa: E402
from ratelimiter.flask import Limiter  # noqa: E402

SAMPLES = 20_000


class BareTokenBucket:
    """The reference: a float token bucket in a dict behind one lock, and nothing else."""

    def __init__(self, rate: float, capacity: int) -> None:
        self.rate = rate
        self.capacity = capacity
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def hit(self, key: str) -> bool:
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self.buckets[key] = (tokens - 1, now)
                return True
            self.buckets[key] = (tokens, now)
            return False


def time_calls(call: Callable[[str], object], keys: list[str]) -> list[float]:
    """Time each call individually, in microseconds."""
    timer = time.perf_counter_ns
    samples = []
    gc.disable()
    try:
        for key in keys:
            started = timer()
            call(key)
            samples.append((timer() - started) / 1000)
    finally:
        gc.enable()
    return samples


def time_batches(call: Callable[[str], object], keys: list[str], size: int = 50) -> list[float]:
    """Time ``size`` calls at a time; return the mean microseconds per call of each batch.

    Unlike time_calls, the timer's own cost is spread over the batch instead of added to
    every sample, so the result is the per-call cost that timeit would report.
    """
    timer = time.perf_counter_ns
    samples = []
    gc.disable()
    try:
        for start in range(0, len(keys), size):
            batch = keys[start : start + size]
            started = timer()
            for key in batch:
                call(key)
            samples.append((timer() - started) / 1000 / len(batch))
    finally:
        gc.enable()
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered), 3),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1], 3),
    }


def timer_overhead() -> dict[str, float]:
    return summary(time_calls(lambda key: None, ["k"] * SAMPLES))


def memory_contenders(capacity: int) -> dict[str, tuple[Callable[[str], object], Callable]]:
    """Return name -> (check function, reset function) for one capacity per day."""
    ours = RateLimiter(f"{capacity}/day", storage="memory://")

    storage = limits.storage.MemoryStorage()
    moving = limits.strategies.MovingWindowRateLimiter(storage)
    item = limits.RateLimitItemPerDay(capacity)

    bare = BareTokenBucket(capacity / 86400, capacity)

    def reset_ours() -> None:
        ours.storage.close()

    def reset_limits() -> None:
        storage.reset()

    def reset_bare() -> None:
        bare.buckets.clear()

    return {
        "ratelimiter": (ours.check, reset_ours),
        # A partial, not a lambda, so that limits pays for no extra Python frame.
        "limits moving window": (functools.partial(moving.hit, item), reset_limits),
        "bare dict+lock bucket": (bare.hit, reset_bare),
    }


def bench_memory() -> list[dict]:
    results = []
    rng = random.Random(7)
    for live_keys in (1, 1_000, 100_000):
        keys = [f"client-{index}" for index in range(live_keys)]

        # Admit path: capacity 100 per key; every key starts with one token used. With one live
        # key the storage is reset outside the timing every 90 calls, so no bucket runs dry.
        for name, (check, reset) in memory_contenders(100).items():
            samples: list[float] = []
            batch_samples: list[float] = []
            while len(samples) < SAMPLES:
                batch = min(SAMPLES - len(samples), 90 * live_keys, SAMPLES)
                order = [keys[rng.randrange(live_keys)] for _ in range(batch)]
                if live_keys == 1:
                    order = keys * batch
                # Per reset, a key takes one token here and about batch / live_keys below (90
                # with one key), fewer than its 100.
                reset()
                for key in keys:
                    check(key)
                half = (batch + 1) // 2
                samples += time_calls(check, order[:half])
                batch_samples += time_batches(check, order[half:])
            results.append(
                {
                    "path": "admit",
                    "live_keys": live_keys,
                    "impl": name,
                    **summary(samples),
                    "batch_median_us": round(statistics.median(batch_samples), 3),
                }
            )

        # Reject path: capacity 1 per key, and every key has used it.
        for name, (check, reset) in memory_contenders(1).items():
            reset()
            for key in keys:
                check(key)
            order = [keys[rng.randrange(live_keys)] for _ in range(SAMPLES)]
            samples = time_calls(check, order)
            batch_samples = time_batches(check, order)
            results.append(
                {
                    "path": "reject",
                    "live_keys": live_keys,
                    "impl": name,
                    **summary(samples),
                    "batch_median_us": round(statistics.median(batch_samples), 3),
                }
            )
        print(f"memory backend, {live_keys} live keys: done", flush=True)
    return results


def bench_redis(url: str) -> dict | None:
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        print(f"Redis at {url} is not reachable ({error}); skipping the Redis figures")
        return None
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter("1000000000/day", storage=url, key_prefix=prefix, timeout=2.0)
    connection_client = limiter.storage._client
    try:
        for _ in range(500):
            limiter.check("client")
            connection_client.ping()
        check_samples: list[float] = []
        ping_samples: list[float] = []
        for _ in range(10):
            check_samples += time_calls(limiter.check, ["client"] * 500)
            ping_samples += time_calls(lambda key: connection_client.ping(), ["client"] * 500)
        check_stats = summary(check_samples)
        ping_stats = summary(ping_samples)
        return {
            "check": check_stats,
            "ping": ping_stats,
            "ratio_median": round(check_stats["median_us"] / ping_stats["median_us"], 3),
        }
    finally:
        for key in client.scan_iter(f"{{{prefix}*"):
            client.delete(key)
        limiter.close()
        client.close()


# The request of the Flask benchmark: a GET of "/" from one client, with no body.
FLASK_ENVIRON = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/",
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "SERVER_NAME": "localhost",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "198.51.100.7",
    "wsgi.url_scheme": "http",
    "wsgi.input": None,
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    "wsgi.version": (1, 0),
}


def build_flask_apps(with_flask_limiter: bool = True) -> dict[str, flask.Flask]:
    """Build the hello-world apps: without a limiter, with ours, and with Flask-Limiter."""

    def hello() -> str:
        return "hello"

    plain = flask.Flask("plain")
    plain.add_url_rule("/", "hello", hello)

    ours = flask.Flask("ratelimiter")
    ours.add_url_rule("/", "hello", hello)
    Limiter(ours, default_limits="1000000000/day", storage="memory://")

    if not with_flask_limiter:
        return {"no limiter": plain, "ratelimiter": ours}

    theirs = flask.Flask("flask_limiter")
    theirs.add_url_rule("/", "hello", hello)
    flask_limiter.Limiter(
        get_remote_address,
        app=theirs,
        default_limits=["1000000000 per day"],
        storage_uri="memory://",
        strategy="moving-window",
        headers_enabled=True,
    )
    return {"no limiter": plain, "ratelimiter": ours, "flask-limiter (moving window)": theirs}


def bench_flask() -> list[dict]:
    def start_response(status, headers, exc_info=None):
        return None

    apps = build_flask_apps()
    rounds: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(15):
        for name, app in apps.items():
            wsgi = app.wsgi_app
            started = time.perf_counter()
            for _ in range(1000):
                for _chunk in wsgi(dict(FLASK_ENVIRON), start_response):
                    pass
            rounds[name].append((time.perf_counter() - started) / 1000 * 1e6)
    baseline = statistics.median(rounds["no limiter"])
    results = []
    for name, values in rounds.items():
        median = statistics.median(values)
        results.append(
            {
                "app": name,
                "median_us_per_request": round(median, 2),
                "overhead_vs_no_limiter": round(median / baseline - 1, 4),
            }
        )
    return results


MEMORY_CHILD = """
import gc, os, sys
sys.path.insert(0, {root!r})
from ratelimiter import RateLimiter

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

limiter = RateLimiter("10/hour", storage="memory://?max_keys=2000000")
keys = [f"198.51.{{i >> 8 & 255}}.{{i & 255}}-{{i}}" for i in range(1_000_000)]
gc.collect()
before = rss()
for key in keys:
    limiter.check(key)
gc.collect()
print(rss() - before, len(limiter.storage), sum(len(k) for k in keys) // len(keys))
"""


def bench_key_memory() -> dict:
    output = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD.format(root=str(ROOT))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    delta, live, key_length = (int(value) for value in output)
    return {
        "keys": live,
        "mean_key_length": key_length,
        "rss_growth_mb": round(delta / 2**20, 1),
        "bytes_per_key": round(delta / live),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    args = parser.parse_args()

    environment = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpus": os.cpu_count(),
        "limits": limits.__version__,
        "flask_limiter": flask_limiter.__version__,
        "flask": importlib.metadata.version("flask"),
        "redis_py": redis.__version__,
    }
    print(json.dumps(environment))
    results = {
        "environment": environment,
        "timer_overhead": timer_overhead(),
        "memory": bench_memory(),
        "redis": bench_redis(args.redis_url),
        "flask": bench_flask(),
        "key_memory": bench_key_memory(),
    }
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_report(results: dict) -> None:
    print(f"\ntimer overhead per sample: {results['timer_overhead']}")
    print("\nmemory backend, microseconds per check")
    print("(median and p99 of single timed calls; median of 50-call batches per call)")
    print(
        f"{'path':<7} {'live keys':>9}  {'implementation':<24} {'median':>8} {'p99':>8} "
        f"{'batched':>8}"
    )
    for row in results["memory"]:
        print(
            f"{row['path']:<7} {row['live_keys']:>9}  {row['impl']:<24} "
            f"{row['median_us']:>8.2f} {row['p99_us']:>8.2f} {row['batch_median_us']:>8.2f}"
        )
    for column, label in (("median_us", "single-call"), ("batch_median_us", "batched")):
        print(f"\nratios of {label} medians (limits / ratelimiter, ratelimiter / bare)")
        by_case: dict[tuple, dict[str, float]] = {}
        for row in results["memory"]:
            by_case.setdefault((row["path"], row["live_keys"]), {})[row["impl"]] = row[column]
        for (path, live_keys), values in by_case.items():
            ours = values["ratelimiter"]
            print(
                f"{path:<7} {live_keys:>9}  "
                f"limits/ours {values['limits moving window'] / ours:5.2f}x"
                f"   ours/bare {ours / values['bare dict+lock bucket']:5.2f}x"
            )
    if results["redis"]:
        redis_result = results["redis"]
        print(
            f"\nRedis: check {redis_result['check']}  PING {redis_result['ping']}  "
            f"ratio of medians {redis_result['ratio_median']}"
        )
    print("\nFlask hello-world through WSGI")
    for row in results["flask"]:
        print(
            f"  {row['app']:<32} {row['median_us_per_request']:>8.2f} us/request  "
            f"overhead {row['overhead_vs_no_limiter']:+.1%}"
        )
    print(f"\none million keys in memory: {results['key_memory']}")


if __name__ == "__main__":
    main()
