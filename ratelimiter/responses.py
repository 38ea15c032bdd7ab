"""HTTP headers and rejection bodies, computed from one Decision and nothing else.

Allowed and limited responses carry the ``RateLimit-Policy`` and ``RateLimit`` fields of the
IETF draft "RateLimit header fields for HTTP" (draft-ietf-httpapi-ratelimit-headers-10), in
Structured Field syntax: a list with one member per policy, named by a quoted string::

    RateLimit-Policy: "5/1s;burst=10";q=10;w=2, "1000/3600s";q=1000;w=3600
    RateLimit: "5/1s;burst=10";r=7;t=1, "1000/3600s";r=997;t=11

``q`` is the capacity, ``w`` the seconds an empty bucket takes to refill, ``r`` the tokens
left and ``t`` the seconds until the bucket is full again (both rounded up).

``Retry-After`` and ``Cache-Control: no-store`` appear only on 429 and 503 responses.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from .decision import BacklogDecision, Decision, policy_source_backlog, several_states
from .policy import Policy

__all__ = ["Rejection", "rate_limit_headers", "rejection"]


def _sf_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    printable = "".join(char if " " <= char <= "~" else "?" for char in escaped)
    return f'"{printable}"'


# id(policy) -> (policy, quoted name, RateLimit-Policy member). The policy itself is kept so
# that its id cannot be reused by another object while the entry exists.
_policy_fields: dict[int, tuple[Policy, str, str]] = {}


def _fields_of(policy: Policy) -> tuple[Policy, str, str]:
    entry = _policy_fields.get(id(policy))
    if entry is None or entry[0] is not policy:
        name = _sf_string(policy.name)
        window = max(1, math.ceil(policy.refill_seconds))
        entry = (policy, name, f"{name};q={policy.capacity};w={window}")
        if len(_policy_fields) > 10_000:
            _policy_fields.clear()
        _policy_fields[id(policy)] = entry
    return entry


def rate_limit_headers(decision: Decision) -> list[tuple[str, str]]:
    """Return the ``RateLimit-Policy`` and ``RateLimit`` headers of a decision.

    Empty when storage failed, because the bucket state is then unknown.
    """
    if decision.__class__ is BacklogDecision:
        # BacklogDecision.policy, .remaining and .reset_after, without four Python-level calls.
        policy, source, backlog = policy_source_backlog(decision)
        entry = _policy_fields.get(id(policy))
        if entry is None or entry[0] is not policy:
            entry = _fields_of(policy)
        _, name, policy_member = entry
        remaining = (source.tolerance - backlog) // source.interval
        reset = math.ceil(backlog / source.units_per_second)
        return [
            ("RateLimit-Policy", policy_member),
            ("RateLimit", f"{name};r={remaining};t={reset}"),
        ]
    policy = decision.policy
    if policy is None:
        return []
    states = several_states(decision)
    if states is None:
        _, name, policy_member = _fields_of(policy)
        remaining = decision.remaining
        return [
            ("RateLimit-Policy", policy_member),
            (
                "RateLimit",
                f"{name};r={remaining if remaining > 0 else 0};t={math.ceil(decision.reset_after)}",
            ),
        ]
    policies = []
    current = []
    for state in states:
        _, name, policy_member = _fields_of(state.policy)
        policies.append(policy_member)
        current.append(f"{name};r={max(0, state.remaining)};t={math.ceil(state.reset_after)}")
    return [("RateLimit-Policy", ", ".join(policies)), ("RateLimit", ", ".join(current))]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A complete rejection response: status, headers and JSON body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status_line(self) -> str:
        """The WSGI status line, such as ``"429 Too Many Requests"``."""
        reason = "Too Many Requests" if self.status == 429 else "Service Unavailable"
        return f"{self.status} {reason}"


def rejection(decision: Decision, include_rate_limit_headers: bool = True) -> Rejection:
    """Build the 429 (limited) or 503 (storage failed, ``on_storage_error="deny"``) response."""
    retry_after = decision.retry_after_seconds
    if decision.storage_error:
        status = 503
        message = f"rate-limit storage is unavailable; retry in {retry_after} s"
    elif retry_after is None:
        status = 429
        limit = _describe_limit(decision.policy)
        message = (
            f"request cost {decision.cost} exceeds the capacity {decision.policy.capacity} of the "
            f"{limit}; it can never be admitted, so lower the cost"
        )
    else:
        status = 429
        limit = _describe_limit(decision.policy)
        message = f"{limit} exceeded; retry in {retry_after} s"

    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    if include_rate_limit_headers:
        headers.extend(rate_limit_headers(decision))
    body = json.dumps(
        {"error": message, "retry_after": retry_after}, separators=(",", ":")
    ).encode()
    headers.append(("Content-Length", str(len(body))))
    return Rejection(status, headers, body)


def _describe_limit(policy: Policy) -> str:
    if policy.has_derived_name:
        return f"rate limit of {policy.description}"
    return f"rate limit {policy.name} ({policy.description})"
