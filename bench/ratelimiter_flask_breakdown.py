"""Breakdown of the Flask extension's overhead, with its parts added to the route one by one.

Run from the repository root:

    .venv/bin/python bench/ratelimiter_flask_breakdown.py

Each variant is the hello-world app of ``bench/ratelimiter_bench.py`` called through WSGI. The
variants take turns in 31 rounds of 2,000 requests, and each prints its median microseconds
per request and its difference to the plain app:

- ``plain``: no limiter.
- ``wrappers``: the extension installed with ``enabled=False``, so only its two wrappers run.
- ``one check``: no extension, a ``preprocess_request`` wrapper that makes one memory check.
- ``two checks``: the same wrapper making two checks of the same key in a row.
- ``headers``: a wrapper that formats the rate-limit headers of a stored decision.
- ``extension``: the extension with its defaults, as in the main benchmark.

The second check of ``two checks`` costs what a check costs in a tight loop. The first costs
more, because the request before it has pushed the check's code and data out of the CPU caches.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flask  # noqa: E402
from ratelimiter_bench import FLASK_ENVIRON  # noqa: E402

from ratelimiter.flask import Limiter  # noqa: E402
from ratelimiter.responses import rate_limit_headers  # noqa: E402

ROUNDS = 31
REQUESTS = 2000
POLICY = "1000000000/day"
KEY = "198.51.100.7"
STORAGE_KEY = "ratelimit:default:" + KEY


def hello() -> str:
    return "hello"


def new_app() -> flask.Flask:
    app = flask.Flask("breakdown")
    app.add_url_rule("/", "hello", hello)
    return app


def with_wrapper(work: Callable[[], object]) -> flask.Flask:
    """Return the app with ``work`` run in a wrapper around ``app.preprocess_request``."""
    app = new_app()
    preprocess_request = app.preprocess_request

    def preprocess_request_after_work() -> Any:
        work()
        return preprocess_request()

    app.preprocess_request = preprocess_request_after_work  # type: ignore[method-assign]
    return app


def build_variants() -> dict[str, flask.Flask]:
    check = Limiter(default_limits=POLICY)._check_default
    assert check is not None
    decision = check(STORAGE_KEY, 1, KEY)

    def two_checks() -> None:
        check(STORAGE_KEY, 1, KEY)
        check(STORAGE_KEY, 1, KEY)

    wrappers = new_app()
    Limiter(wrappers, default_limits=POLICY, enabled=False)
    extension = new_app()
    Limiter(extension, default_limits=POLICY)
    return {
        "plain": new_app(),
        "wrappers": wrappers,
        "one check": with_wrapper(lambda: check(STORAGE_KEY, 1, KEY)),
        "two checks": with_wrapper(two_checks),
        "headers": with_wrapper(lambda: rate_limit_headers(decision)),
        "extension": extension,
    }


def main() -> None:
    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        return None

    variants = build_variants()
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, app in variants.items():
            wsgi_app = app.wsgi_app
            started = time.perf_counter()
            for _ in range(REQUESTS):
                for _chunk in wsgi_app(dict(FLASK_ENVIRON), start_response):
                    pass
            rounds[name].append((time.perf_counter() - started) / REQUESTS * 1e6)

    plain = statistics.median(rounds["plain"])
    print(f"Python {sys.version.split()[0]}, {ROUNDS} rounds of {REQUESTS} requests")
    print(f"{'variant':<12} {'µs/request':>10} {'added µs':>9} {'added':>7}")
    for name, times in rounds.items():
        median = statistics.median(times)
        share = 100 * (median / plain - 1)
        print(f"{name:<12} {median:>10.2f} {median - plain:>+9.2f} {share:>+6.1f}%")


if __name__ == "__main__":
    main()
