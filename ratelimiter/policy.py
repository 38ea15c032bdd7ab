"""Rate-limit policies: a token bucket's refill rate and capacity, and the string syntax for them.

A policy ``"10/second, burst 20"`` is a bucket that holds at most 20 tokens (the burst, or
capacity) and refills at 10 tokens per second. Without ``burst`` the capacity equals the count,
so ``"100/minute"`` holds 100 tokens and refills them over one minute. Several policies are
joined with ``;``: ``"5/second, burst 10; 1000/hour"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Policy", "parse_policies", "parse_policy"]

# Largest refill time of a bucket, in microseconds (about 71 years), and largest count and
# burst. The Redis script adds microsecond timestamps (about 2**51 today) to these on Lua
# doubles, which are exact only below 2**53.
MAX_REFILL_US = 2**51
MAX_TOKENS = 2**40

_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}

_POLICY_RE = re.compile(
    r"""^\s*
    (?P<count>\d+)\s*
    (?:/|\bper\b)\s*
    (?P<multiplier>\d+(?:\.\d+)?)?\s*
    (?P<unit>[a-z]+)\s*
    (?:,\s*burst\s*(?P<burst>\d+)\s*)?
    $""",
    re.IGNORECASE | re.VERBOSE,
)

_EXPECTED_FORM = (
    "expected '<count>/<period>[, burst <capacity>]', for example '10/second, burst 20', "
    "'100/minute' or '1000/12 hours'; separate several policies with ';'"
)


@dataclass(frozen=True, slots=True)
class Policy:
    """One token bucket: ``count`` tokens refill every ``period`` seconds, up to ``burst``.

    :param count: tokens added per period; the refill rate is ``count / period`` per second.
    :param period: the period in seconds; it is rounded to whole microseconds.
    :param burst: the capacity of the bucket. ``None`` (the default) means ``count``.
    :param name: the identifier shown in the ``RateLimit`` headers and log lines. The default
        is derived from the numbers, such as ``"10/1s;burst=20"``.
    :raises ValueError: when a number is not positive, when ``count`` or ``burst`` exceeds
        2**40, or when an empty bucket would take more than 2**51 microseconds (about 71
        years) to refill.
    """

    count: int
    period: float
    burst: int | None = None
    name: str = ""
    # Derived, exact integer forms used by the storage backends.
    period_us: int = field(init=False, repr=False, compare=False)
    capacity: int = field(init=False, repr=False, compare=False)
    #: Part of the storage key, so a changed policy never reuses an old policy's state.
    storage_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise ValueError(f"policy count {self.count!r} is invalid; use an integer >= 1")
        if not isinstance(self.period, int | float) or not self.period > 0:
            raise ValueError(f"policy period {self.period!r} is invalid; use seconds > 0")
        period_us = round(self.period * 1_000_000)
        if period_us < 1:
            raise ValueError(f"policy period {self.period!r} is below one microsecond")
        burst = self.count if self.burst is None else self.burst
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
            raise ValueError(f"policy burst {self.burst!r} is invalid; use an integer >= 1")
        if self.count > MAX_TOKENS or burst > MAX_TOKENS:
            raise ValueError(f"policy count and burst must be at most {MAX_TOKENS}")
        if burst * period_us > MAX_REFILL_US * self.count:
            raise ValueError(
                f"policy burst {burst} refills over more than 71 years at {self.count} per "
                f"{self.period}s; lower the burst or the period"
            )
        object.__setattr__(self, "period_us", period_us)
        object.__setattr__(self, "capacity", burst)
        object.__setattr__(self, "storage_id", f"{self.count}-{period_us}-{burst}")
        if not self.name:
            object.__setattr__(self, "name", _derived_name(self.count, period_us, burst))

    @property
    def rate(self) -> float:
        """Refill rate in tokens per second."""
        return self.count / (self.period_us / 1_000_000)

    @property
    def refill_seconds(self) -> float:
        """Seconds an empty bucket takes to refill to full capacity."""
        return self.capacity * self.period_us / self.count / 1_000_000

    @property
    def description(self) -> str:
        """The policy in words, such as ``"300 per minute, burst 100"``, for messages."""
        text = f"{self.count} per {_describe_period(self.period_us)}"
        if self.capacity != self.count:
            text += f", burst {self.capacity}"
        return text

    @property
    def has_derived_name(self) -> bool:
        """Whether :attr:`name` was derived from the numbers rather than given."""
        return self.name == _derived_name(self.count, self.period_us, self.capacity)

    def __str__(self) -> str:
        return self.name


def _derived_name(count: int, period_us: int, burst: int) -> str:
    name = f"{count}/{_format_seconds(period_us)}"
    return name if burst == count else f"{name};burst={burst}"


# Units for periods in words, largest first.
_PERIOD_UNITS = ((86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second"))


def _describe_period(period_us: int) -> str:
    for seconds, unit in _PERIOD_UNITS:
        quotient, remainder = divmod(period_us, seconds * 1_000_000)
        if remainder == 0:
            return unit if quotient == 1 else f"{quotient} {unit}s"
    return f"{period_us / 1_000_000:g} seconds"


def _format_seconds(period_us: int) -> str:
    if period_us % 1_000_000 == 0:
        return f"{period_us // 1_000_000}s"
    return f"{period_us / 1_000_000:g}s"


def parse_policy(text: str) -> Policy:
    """Parse one policy such as ``"10/second, burst 20"``, ``"100 per minute"`` or ``"5/30s"``.

    :raises ValueError: naming ``text`` and the expected form when it does not parse.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid rate-limit policy {text!r}: {_EXPECTED_FORM}")
    match = _POLICY_RE.match(text)
    if match is None:
        raise ValueError(f"invalid rate-limit policy {text!r}: {_EXPECTED_FORM}")

    unit = match["unit"].lower()
    if unit not in _UNIT_SECONDS:
        raise ValueError(
            f"invalid rate-limit policy {text!r}: unknown time unit {match['unit']!r}; "
            "use second, minute, hour or day (or s, m, h, d)"
        )
    multiplier = float(match["multiplier"]) if match["multiplier"] else 1.0
    if multiplier <= 0:
        raise ValueError(f"invalid rate-limit policy {text!r}: the period must be above 0")
    count = int(match["count"])
    burst = int(match["burst"]) if match["burst"] else None
    if count < 1 or (burst is not None and burst < 1):
        raise ValueError(f"invalid rate-limit policy {text!r}: counts must be at least 1")
    try:
        return Policy(count=count, period=multiplier * _UNIT_SECONDS[unit], burst=burst)
    except ValueError as error:
        raise ValueError(f"invalid rate-limit policy {text!r}: {error}") from None


def parse_policies(
    spec: str | Policy | list[str | Policy] | tuple[str | Policy, ...],
) -> list[Policy]:
    """Parse ``;``-separated policies, such as ``"5/second, burst 10; 1000/hour"``.

    Also accepts a single :class:`Policy` or a list mixing strings and policies.

    :raises ValueError: naming the malformed part and the expected form, also when ``spec``
        holds no policy at all.
    """
    if isinstance(spec, Policy):
        return [spec]
    if isinstance(spec, list | tuple):
        policies: list[Policy] = []
        for item in spec:
            policies.extend(parse_policies(item))
        if not policies:
            raise ValueError(f"no rate-limit policy given in {spec!r}: {_EXPECTED_FORM}")
        return policies
    if not isinstance(spec, str):
        raise ValueError(f"invalid rate-limit policy {spec!r}: {_EXPECTED_FORM}")
    parts = [part for part in spec.split(";") if part.strip()]
    if not parts:
        raise ValueError(f"no rate-limit policy given in {spec!r}: {_EXPECTED_FORM}")
    return [parse_policy(part.strip()) for part in parts]
