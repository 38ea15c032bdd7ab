"""Memory of the memory backend with one million distinct live keys."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# The documented bound: at most 250 bytes of resident memory per live key whose client key
# is about 20 characters (CPython 3.11, 64-bit). Measured: about 175 bytes per key.
BYTES_PER_KEY_BOUND = 250
KEYS = 1_000_000

CHILD = textwrap.dedent(
    """
    import gc, os
    from ratelimiter import RateLimiter

    def rss():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    limiter = RateLimiter("10/hour", storage="memory://")
    keys = [f"2001:db8:{i >> 16:x}:{i & 0xffff:x}::/64" for i in range({keys})]
    gc.collect()
    before = rss()
    check = limiter.check
    admitted = sum(check(key).allowed for key in keys)
    gc.collect()
    print(rss() - before, len(limiter.storage), admitted)
    """
)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_million_keys_within_bound() -> None:
    output = subprocess.run(
        [sys.executable, "-c", CHILD.replace("{keys}", str(KEYS))],
        check=True,
        capture_output=True,
        text=True,
        timeout=230,
    ).stdout.split()
    growth, live, admitted = (int(value) for value in output)
    assert live == KEYS
    assert admitted == KEYS
    assert growth / KEYS <= BYTES_PER_KEY_BOUND
