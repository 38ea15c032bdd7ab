"""Policy strings and Policy validation."""

from __future__ import annotations

import pytest

from ratelimiter import Policy, parse_policies, parse_policy


@pytest.mark.parametrize(
    ("text", "count", "period", "capacity"),
    [
        ("10/second, burst 20", 10, 1.0, 20),
        ("100/minute", 100, 60.0, 100),
        ("1000/hour", 1000, 3600.0, 1000),
        ("5/day", 5, 86400.0, 5),
        ("5 per minute", 5, 60.0, 5),
        ("5/30s", 5, 30.0, 5),
        ("7/12 hours", 7, 43200.0, 7),
        ("3/1.5 seconds, burst 6", 3, 1.5, 6),
        ("  10 / Second ,  BURST 1 ", 10, 1.0, 1),
        ("1/s", 1, 1.0, 1),
        ("2/m", 2, 60.0, 2),
    ],
)
def test_parse_policy_valid(text: str, count: int, period: float, capacity: int) -> None:
    policy = parse_policy(text)
    assert policy.count == count
    assert policy.period == period
    assert policy.capacity == capacity


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10",
        "ten/second",
        "10/fortnight",
        "10/second burst 20",
        "10/second, burst",
        "0/second",
        "10/second, burst 0",
        "-1/second",
        "10/0 seconds",
        "10/second, burst 20, burst 30",
        "10//second",
    ],
)
def test_parse_policy_invalid(text: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_policy(text)
    assert repr(text) in str(error.value)


def test_parse_policies_several() -> None:
    policies = parse_policies("5/second, burst 10; 1000/hour")
    assert [(p.count, p.period, p.capacity) for p in policies] == [
        (5, 1.0, 10),
        (1000, 3600.0, 1000),
    ]


def test_parse_policies_mixed_list() -> None:
    policy = Policy(count=3, period=2.0)
    assert parse_policies(["1/second", policy]) == [parse_policy("1/second"), policy]


@pytest.mark.parametrize("spec", ["", ";", " ; ", [], ()])
def test_parse_policies_empty(spec) -> None:
    with pytest.raises(ValueError, match="no rate-limit policy"):
        parse_policies(spec)


def test_parse_policies_names_bad_part() -> None:
    with pytest.raises(ValueError, match="'1000/hr0'"):
        parse_policies("5/second; 1000/hr0")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0, "period": 1.0}, "count"),
        ({"count": 1, "period": 0}, "period"),
        ({"count": 1, "period": -5}, "period"),
        ({"count": 1, "period": 1e-9}, "microsecond"),
        ({"count": 1, "period": 1.0, "burst": 0}, "burst"),
        ({"count": 1.5, "period": 1.0}, "count"),
        ({"count": 1, "period": 86400.0 * 365 * 100, "burst": 1}, "71 years"),
        ({"count": 2**41, "period": 1.0}, "at most"),
    ],
)
def test_policy_invalid(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy(**kwargs)


@pytest.mark.parametrize(
    ("policy", "name"),
    [
        (Policy(10, 1.0, 20), "10/1s;burst=20"),
        (Policy(100, 60.0), "100/60s"),
        (Policy(3, 1.5), "3/1.5s"),
        (Policy(1, 1.0, name="login"), "login"),
    ],
)
def test_policy_name(policy: Policy, name: str) -> None:
    assert policy.name == name


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ("300/minute, burst 100", "300 per minute, burst 100"),
        ("5/30s", "5 per 30 seconds"),
        ("10/second", "10 per second"),
        ("1000/12 hours", "1000 per 12 hours"),
        ("7/day", "7 per day"),
        ("3/1.5s", "3 per 1.5 seconds"),
    ],
)
def test_policy_description(text: str, description: str) -> None:
    assert parse_policy(text).description == description


def test_policy_derived_name_flag() -> None:
    assert parse_policy("300/minute, burst 100").has_derived_name
    assert not Policy(300, 60.0, 100, name="editor").has_derived_name


def test_policy_rate_and_refill() -> None:
    policy = parse_policy("5/second, burst 10")
    assert policy.rate == 5.0
    assert policy.refill_seconds == 2.0
