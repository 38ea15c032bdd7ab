"""Validation of request parameters, with messages that name the bad value and the fix.

Every function raises :class:`InvalidInput`, which the producer turns into a JSON error with
its ``status``. Nothing here touches Flask, so the rules can be tested on plain values.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_DELAY_SECONDS = 366 * 86400
MAX_RECIPIENTS = 1000
MAX_SUBJECT_LENGTH = 998
MAX_BODY_LENGTH = 1_000_000
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


class InvalidInput(Exception):
    """A request parameter is missing or invalid."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def parse_time(value: object, name: str) -> float:
    """Parse an ISO 8601 date-time into a Unix timestamp; a value without offset is UTC."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be an ISO 8601 string such as 2030-01-31T18:00:00Z")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(
            f"{name}={value!r} is not an ISO 8601 date-time; use a form like 2030-01-31T18:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_schedule(values: Mapping[str, Any]) -> float | None:
    """Return the Unix time at which to run from ``run_at`` or ``delay_seconds``, or ``None``.

    A ``run_at`` in the past runs at once. Either field may be given, not both.
    """
    run_at = values.get("run_at")
    delay = values.get("delay_seconds")
    if run_at in (None, "") and delay in (None, ""):
        return None
    if run_at not in (None, "") and delay not in (None, ""):
        raise InvalidInput("give either run_at or delay_seconds, not both")
    now = time.time()
    if run_at not in (None, ""):
        when = parse_time(run_at, "run_at")
        if when - now > MAX_DELAY_SECONDS:
            raise InvalidInput(f"run_at={run_at!r} is more than a year ahead; pick an earlier time")
        return max(when, now)
    seconds = parse_number(delay, "delay_seconds")
    if not 0 <= seconds <= MAX_DELAY_SECONDS:
        raise InvalidInput(
            f"delay_seconds={delay!r} is out of range; use 0 to {MAX_DELAY_SECONDS} seconds"
        )
    return now + seconds


def parse_number(value: object, name: str) -> float:
    """Parse a finite number given as JSON number or as a string."""
    if isinstance(value, bool):
        raise InvalidInput(f"{name}={value!r} is not a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidInput(f"{name}={value!r} is not a finite number")
    return number


def parse_int(value: object, name: str, default: int, minimum: int, maximum: int) -> int:
    """Parse an optional integer field within ``[minimum, maximum]``."""
    if value in (None, ""):
        return default
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise InvalidInput(f"{name}={value!r} is not a whole number")
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise InvalidInput(f"{name}={value!r} is not a whole number") from None
    if not minimum <= number <= maximum:
        raise InvalidInput(f"{name}={number} is out of range; use {minimum} to {maximum}")
    return number


def parse_idempotency_key(value: str | None) -> str | None:
    """Check an ``Idempotency-Key`` header: 1 to 200 printable ASCII characters, no spaces."""
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise InvalidInput(
            "Idempotency-Key must be 1 to 200 printable ASCII characters without spaces,"
            " for example a UUID"
        )
    return value


def parse_json_object(data: bytes, mimetype: str, example: str) -> dict[str, Any]:
    """Parse a request body that must be a JSON object of plain JSON values.

    :param data: the raw body.
    :param mimetype: the request's content type without parameters; only
        ``application/json`` is accepted.
    :param example: a short valid body of the route, quoted when the body is not an object.
    :raises InvalidInput: 415 for another content type, 400 for a body that is not valid
        JSON or not an object.
    """
    if mimetype != "application/json":
        raise InvalidInput(
            f"the request body must be JSON sent with Content-Type: application/json,"
            f" not {mimetype or 'no content type'!r}; with curl, add"
            " -H 'Content-Type: application/json'",
            415,
        )
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    return require_json_object(body, example)


def require_json_object(body: object, example: str = "{}") -> dict[str, Any]:
    """Check that a parsed JSON body is an object whose values are plain JSON.

    ``NaN`` and ``Infinity`` are accepted by Python's parser but are not JSON, and the task
    store and the broker would reject them later, so they are rejected here.
    """
    if not isinstance(body, dict):
        raise InvalidInput(f"the request body must be a JSON object, e.g. {example}")
    try:
        json.dumps(body, allow_nan=False)
    except ValueError as exc:
        raise InvalidInput(f"the JSON body is not serialisable as strict JSON: {exc}") from None
    return body


@dataclass(frozen=True)
class ReportRequest:
    """Validated parameters of ``POST /generate-report``."""

    since: float | None
    until: float | None


def parse_report(body: dict[str, Any]) -> ReportRequest:
    """Validate ``{"since", "until"}``; both optional ISO 8601 date-times."""
    since = parse_time(body["since"], "since") if body.get("since") is not None else None
    until = parse_time(body["until"], "until") if body.get("until") is not None else None
    if since is not None and until is not None and since >= until:
        raise InvalidInput("since must be earlier than until")
    return ReportRequest(since=since, until=until)


@dataclass(frozen=True)
class EmailRequest:
    """Validated parameters of ``POST /send-emails``.

    The recipients are only checked to be strings: each invalid address is reported in the
    task result, so one typo never fails the batch.
    """

    recipients: list[str]
    subject: str
    body: str


def parse_emails(body: dict[str, Any]) -> EmailRequest:
    """Validate ``{"recipients": [...], "subject", "body"}``."""
    recipients = body.get("recipients")
    if not isinstance(recipients, list) or not recipients:
        raise InvalidInput("recipients must be a non-empty list of e-mail addresses")
    if len(recipients) > MAX_RECIPIENTS:
        raise InvalidInput(
            f"{len(recipients)} recipients is more than {MAX_RECIPIENTS}; split the batch"
        )
    for index, recipient in enumerate(recipients):
        if not isinstance(recipient, str):
            raise InvalidInput(f"recipients[{index}]={recipient!r} is not a string")
    subject = body.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidInput("subject must be a non-empty string")
    if len(subject) > MAX_SUBJECT_LENGTH or "\r" in subject or "\n" in subject:
        raise InvalidInput(f"subject must be one line of at most {MAX_SUBJECT_LENGTH} characters")
    text = body.get("body")
    if not isinstance(text, str):
        raise InvalidInput("body must be a string")
    if len(text) > MAX_BODY_LENGTH:
        raise InvalidInput(f"body is longer than {MAX_BODY_LENGTH} characters")
    return EmailRequest(recipients=recipients, subject=subject, body=text)
