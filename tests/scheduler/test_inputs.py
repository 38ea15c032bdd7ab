"""Validation of request parameters."""

from __future__ import annotations

import time

import pytest

from scheduler import inputs


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-01T00:00:00Z", 1893456000.0),
        ("2030-01-01T01:00:00+01:00", 1893456000.0),
        ("2030-01-01T00:00:00", 1893456000.0),
    ],
)
def test_parse_time(value: str, expected: float) -> None:
    assert inputs.parse_time(value, "run_at") == expected


@pytest.mark.parametrize("value", ["tomorrow", "", "2030-13-01", 5, None])
def test_parse_time_invalid(value: object) -> None:
    with pytest.raises(inputs.InvalidInput):
        inputs.parse_time(value, "run_at")


def test_schedule_none() -> None:
    assert inputs.parse_schedule({}) is None


def test_schedule_past_runs_now() -> None:
    assert inputs.parse_schedule({"run_at": "2000-01-01T00:00:00Z"}) == pytest.approx(
        time.time(), abs=1
    )


def test_schedule_delay() -> None:
    assert inputs.parse_schedule({"delay_seconds": "30"}) == pytest.approx(time.time() + 30, abs=1)


@pytest.mark.parametrize(
    "values",
    [
        {"delay_seconds": "-1"},
        {"delay_seconds": "NaN"},
        {"delay_seconds": True},
        {"delay_seconds": "1e12"},
        {"run_at": "2999-01-01T00:00:00Z"},
        {"run_at": "2030-01-01T00:00:00Z", "delay_seconds": 1},
    ],
)
def test_schedule_invalid(values: dict) -> None:
    with pytest.raises(inputs.InvalidInput):
        inputs.parse_schedule(values)


@pytest.mark.parametrize("value", ["x", "1.5", 2.5, True, "0", "5000"])
def test_parse_int_invalid(value: object) -> None:
    with pytest.raises(inputs.InvalidInput):
        inputs.parse_int(value, "height", 480, 16, 4320)


@pytest.mark.parametrize(("value", "expected"), [(None, 480), ("", 480), ("360", 360), (720, 720)])
def test_parse_int(value: object, expected: int) -> None:
    assert inputs.parse_int(value, "height", 480, 16, 4320) == expected


@pytest.mark.parametrize("key", ["", "a b", "x" * 201, "é"])
def test_idempotency_key_invalid(key: str) -> None:
    with pytest.raises(inputs.InvalidInput):
        inputs.parse_idempotency_key(key)


@pytest.mark.parametrize(
    "body",
    [
        {"recipients": ["a@example.com"] * 1001, "subject": "s", "body": "b"},
        {"recipients": ["a@example.com"], "subject": "", "body": "b"},
        {"recipients": ["a@example.com"], "subject": "s", "body": 3},
        {"recipients": ["a@example.com"], "subject": "s" * 999, "body": "b"},
    ],
)
def test_parse_emails_invalid(body: dict) -> None:
    with pytest.raises(inputs.InvalidInput):
        inputs.parse_emails(body)


def test_require_json_object_rejects_nan() -> None:
    with pytest.raises(inputs.InvalidInput):
        inputs.require_json_object({"x": float("nan")})
