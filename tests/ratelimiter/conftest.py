"""Fixtures for the rate-limiter tests: a fake clock and limiters built on it."""

from __future__ import annotations

import pytest


class FakeClock:
    """A monotonic clock in integer nanoseconds that moves only when a test advances it."""

    def __init__(self, start_ns: int = 1_000_000_000_000) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``, rounded to whole nanoseconds."""
        self.now_ns += round(seconds * 1_000_000_000)

    def set(self, seconds: float, start_ns: int = 1_000_000_000_000) -> None:
        """Move the clock to ``seconds`` after ``start_ns``."""
        self.now_ns = start_ns + round(seconds * 1_000_000_000)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock that starts at an arbitrary non-zero time."""
    return FakeClock()
