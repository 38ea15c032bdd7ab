"""Instructions per call of the rate limiter's hot paths, counted by callgrind.

Run from the repository root, after ``bench/ratelimiter_bench.py`` has installed the comparison
packages once (valgrind must be on PATH):

    .venv/bin/python bench/ratelimiter_instructions.py

Each case runs in two fresh processes under ``valgrind --tool=callgrind``, one making
``--calls`` more calls than the other after the same set-up and warm-up, both with the same
hash seed and, through ``setarch -R``, without address randomization. The difference of
their main thread's instruction totals, divided by the extra calls, is the cost of one
call, including the calling loop (about 1,000 instructions). Instruction counts vary much
less with the machine's load than times do, and they miss the cost of cache misses and
branch mispredictions.

NOTE: the counts are not exact. Runs of unchanged code at other times have differed by up
to about 1,800 instructions per call, and by far more with 60 counted calls. Differences
between cases measured in one run are the reliable figure.

The cases mirror ``bench/ratelimiter_bench.py`` with one live key, for this package,
`limits`' moving window and the bare dict-plus-lock bucket. The admit cases check a
``1000/day`` policy with one token used (the benchmark's 100 tokens would run out during the
count), and the reject cases a ``1/day`` policy already used up. The Flask cases make one
request to the hello-world route without a limiter and with this package's extension.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CASES = (
    "ratelimiter admit",
    "ratelimiter reject",
    "limits admit",
    "limits reject",
    "bare admit",
    "bare reject",
    "flask no limiter",
    "flask ratelimiter",
)
WARM_UP_CALLS = 20


def make_call(case: str) -> tuple[Callable[[Any], object], Any]:
    """Set ``case`` up and return the function it counts with that function's argument."""
    import ratelimiter_bench as bench

    name, _, path = case.partition(" ")
    if name == "flask":
        # Without Flask-Limiter, whose memory storage runs a timer thread.
        app = bench.build_flask_apps(with_flask_limiter=False)[path].wsgi_app
        environ = bench.FLASK_ENVIRON

        def start_response(status, headers, exc_info=None):  # noqa: ANN001, ANN202
            return None

        def request(environ: dict[str, Any]) -> None:
            for _chunk in app(dict(environ), start_response):
                pass

        return request, environ

    # 1,000 tokens leave room for the warm-up and 600 counted admissions.
    capacity = 1000 if path == "admit" else 1
    if name == "ratelimiter":
        check = bench.RateLimiter(f"{capacity}/day", storage="memory://").check
    elif name == "limits":
        limiter = bench.limits.strategies.MovingWindowRateLimiter(
            bench.limits.storage.MemoryStorage()
        )
        check = functools.partial(limiter.hit, bench.limits.RateLimitItemPerDay(capacity))
    else:
        check = bench.BareTokenBucket(capacity / 86400, capacity).hit
    check("client-0")
    return check, "client-0"


def child(case: str, calls: int) -> None:
    call, argument = make_call(case)
    gc.collect()
    gc.disable()
    for _ in range(WARM_UP_CALLS + calls):
        call(argument)


def count_instructions(case: str, calls: int, directory: str) -> int:
    """Run ``case`` with ``calls`` calls under callgrind and return the main thread's total."""
    output = os.path.join(directory, f"callgrind.{calls}.out")
    # Without address randomization, set-up takes the same instructions in both processes.
    no_aslr = ["setarch", platform.machine(), "-R"] if shutil.which("setarch") else []
    subprocess.run(
        [
            *no_aslr,
            "valgrind",
            "--tool=callgrind",
            # Counted apart, so that a timer thread of `limits` adds nothing to the count.
            "--separate-threads=yes",
            f"--callgrind-out-file={output}",
            sys.executable,
            __file__,
            "--child",
            case,
            "--calls",
            str(calls),
        ],
        check=True,
        capture_output=True,
        # A fixed hash seed gives both processes the same dict layouts during set-up.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    with open(output + "-01") as file:
        match = re.search(r"^summary: (\d+)", file.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no summary line in {output}")
    return int(match[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", default=CASES, help=f"any of {', '.join(CASES)}")
    parser.add_argument(
        "--calls",
        type=int,
        default=600,
        help="extra calls counted (default 600, at most 900 to admit)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls)
        return

    unknown = [case for case in args.cases if case not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; use one of: {', '.join(CASES)}")
    print(f"Python {sys.version.split()[0]}, instructions per call")
    with tempfile.TemporaryDirectory() as directory:
        for case in args.cases:
            # Admit cases stay below their capacity of 1,000 tokens.
            calls = min(args.calls, 900) if case.endswith("admit") else args.calls
            # A run outside valgrind first writes any missing .pyc files, so that neither
            # counted run compiles source.
            child_command = [sys.executable, __file__, "--child", case, "--calls", "0"]
            subprocess.run(child_command, check=True, capture_output=True)
            base = count_instructions(case, 0, directory)
            more = count_instructions(case, calls, directory)
            print(f"  {case:<20} {(more - base) / calls:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
