"""RateLimiter with memory storage: exact token-bucket arithmetic on a fake clock."""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import math
import random
import threading

import pytest

from ratelimiter import Policy, RateLimiter, RateLimitEvent, parse_policy
from ratelimiter.storage import MemoryStorage

from .conftest import FakeClock

# (seconds since start, allowed, remaining, retry_after) for "1/second, burst 3".
ONE_PER_SECOND_BURST_3 = [
    (0.0, True, 2, 0.0),
    (0.0, True, 1, 0.0),
    (0.0, True, 0, 0.0),
    (0.0, False, 0, 1.0),
    (0.5, False, 0, 0.5),
    (0.999999, False, 0, 0.000001),
    (1.0, True, 0, 0.0),
    (1.0, False, 0, 1.0),
    (2.5, True, 0, 0.0),
    (2.5, False, 0, 0.5),
    (3.0, True, 0, 0.0),
    (10.0, True, 2, 0.0),
]

# The same for "2/second" (capacity 2, one token every 0.5 s).
TWO_PER_SECOND = [
    (0.0, True, 1, 0.0),
    (0.0, True, 0, 0.0),
    (0.0, False, 0, 0.5),
    (0.25, False, 0, 0.25),
    (0.5, True, 0, 0.0),
    (0.5, False, 0, 0.5),
    (1.5, True, 1, 0.0),
    (1.5, True, 0, 0.0),
    (1.75, False, 0, 0.25),
    (60.0, True, 1, 0.0),
]

# "7/second": one token every 1/7 s, which no binary fraction represents exactly.
SEVEN_PER_SECOND = [
    (0.0, True, 6, 0.0),
    *[(0.0, True, remaining, 0.0) for remaining in range(5, -1, -1)],
    (0.0, False, 0, 1 / 7),
    (1 / 7, True, 0, 0.0),
    (2 / 7, True, 0, 0.0),
    (2 / 7, False, 0, 1 / 7),
    (1 + 2 / 7, True, 6, 0.0),
]


def make_limiter(policies, clock: FakeClock, **kwargs) -> RateLimiter:
    return RateLimiter(policies, storage=MemoryStorage(clock=clock), **kwargs)


@pytest.mark.parametrize(
    ("policy", "table"),
    [
        ("1/second, burst 3", ONE_PER_SECOND_BURST_3),
        ("2/second", TWO_PER_SECOND),
        ("7/second", SEVEN_PER_SECOND),
    ],
)
def test_check_arrival_table(policy: str, table: list, clock: FakeClock) -> None:
    limiter = make_limiter(policy, clock)
    for at, allowed, remaining, retry_after in table:
        clock.set(at)
        decision = limiter.check("client")
        assert decision.allowed is allowed, f"at {at}s"
        assert decision.remaining == remaining, f"at {at}s"
        assert decision.retry_after == pytest.approx(retry_after, abs=1e-9), f"at {at}s"


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(0.000001, 1), (0.5, 1), (1.0, 1), (1.000001, 2), (59.2, 60)],
)
def test_retry_after_header_rounding(retry_after: float, header: int, clock: FakeClock) -> None:
    limiter = make_limiter(Policy(1, retry_after), clock)
    limiter.check("client")
    decision = limiter.check("client")
    assert decision.retry_after_seconds == header


@pytest.mark.parametrize("seed", range(5))
def test_retry_at_header_admitted(seed: int, clock: FakeClock) -> None:
    rng = random.Random(seed)
    policies = [
        Policy(rng.randint(1, 50), rng.choice([0.7, 1.0, 3.0, 60.0]), rng.randint(1, 20))
        for _ in range(rng.randint(1, 3))
    ]
    limiter = make_limiter(policies, clock)
    capacity = min(policy.capacity for policy in policies)
    denials = 0
    for _ in range(300):
        cost = rng.randint(1, capacity)
        decision = limiter.check("client", cost=cost)
        if not decision.allowed:
            denials += 1
            clock.advance(decision.retry_after_seconds)
            assert limiter.check("client", cost=cost).allowed
        clock.advance(rng.random() * 0.01)
    assert denials > 0


@pytest.mark.parametrize("seed", range(3))
def test_admitted_never_exceeds_bound(seed: int, clock: FakeClock) -> None:
    """Over any interval T at most capacity + rate * T units are admitted."""
    rng = random.Random(seed)
    policy = parse_policy("5/second, burst 10")
    limiter = make_limiter(policy, clock)
    admitted: list[tuple[int, int]] = []
    for _ in range(3000):
        clock.advance(rng.expovariate(40.0))
        cost = rng.choice([1, 1, 1, 2, 3])
        if limiter.check("client", cost=cost).allowed:
            admitted.append((clock.now_ns, cost))
    worst = 0.0
    for start in range(len(admitted)):
        total = 0
        for end in range(start, len(admitted)):
            total += admitted[end][1]
            span = (admitted[end][0] - admitted[start][0]) / 1e9
            worst = max(worst, total - (policy.capacity + policy.rate * span))
    assert worst <= 1e-9


def test_idle_key_refills_to_capacity(clock: FakeClock) -> None:
    limiter = make_limiter("10/minute, burst 5", clock)
    for _ in range(5):
        limiter.check("client")
    clock.advance(3600)
    assert limiter.check("client").remaining == 4


def test_idle_key_never_exceeds_capacity(clock: FakeClock) -> None:
    limiter = make_limiter("10/second, burst 5", clock)
    clock.advance(3600)
    admitted = sum(limiter.check("client").allowed for _ in range(20))
    assert admitted == 5


def test_cost_above_capacity_rejected(clock: FakeClock) -> None:
    limiter = make_limiter("10/second", clock)
    decision = limiter.check("client", cost=11)
    assert decision.allowed is False
    assert math.isinf(decision.retry_after)
    assert decision.retry_after_seconds is None


def test_cost_above_capacity_keeps_tokens(clock: FakeClock) -> None:
    limiter = make_limiter("10/second", clock)
    limiter.check("client", cost=11)
    assert limiter.check("client", cost=10).allowed


def test_cost_zero_allowed_when_empty(clock: FakeClock) -> None:
    limiter = make_limiter("1/minute", clock)
    limiter.check("client")
    decision = limiter.check("client", cost=0)
    assert decision.allowed is True
    assert decision.remaining == 0


def test_cost_zero_takes_nothing(clock: FakeClock) -> None:
    limiter = make_limiter("3/minute", clock)
    limiter.check("client", cost=0)
    assert limiter.check("client").remaining == 2


@pytest.mark.parametrize("cost", [-1, 1.5, True, "1", None])
def test_cost_invalid(cost, clock: FakeClock) -> None:
    limiter = make_limiter("3/minute", clock)
    with pytest.raises(ValueError, match="cost"):
        limiter.check("client", cost=cost)


def test_weighted_cost_drains_by_cost(clock: FakeClock) -> None:
    limiter = make_limiter("10/minute", clock)
    assert limiter.check("client", cost=4).remaining == 6
    assert limiter.check("client", cost=6).remaining == 0
    assert limiter.check("client", cost=1).allowed is False


def test_policies_rejected_takes_nothing(clock: FakeClock) -> None:
    limiter = make_limiter("10/second, burst 10; 3/minute", clock)
    for _ in range(3):
        limiter.check("client")
    for _ in range(5):
        decision = limiter.check("client")
        assert decision.allowed is False
        assert decision.states[0].remaining == 7


def test_policies_deciding_on_reject(clock: FakeClock) -> None:
    limiter = make_limiter("1/second; 2/minute", clock)
    limiter.check("client")
    decision = limiter.check("client")
    assert decision.policy == parse_policy("1/second")
    assert decision.retry_after == pytest.approx(1.0)


def test_policies_deciding_longest_retry(clock: FakeClock) -> None:
    limiter = make_limiter("1/second; 2/minute", clock)
    limiter.check("client")
    clock.advance(1)
    limiter.check("client")
    clock.advance(1)
    decision = limiter.check("client")
    assert decision.policy == parse_policy("2/minute")
    assert decision.retry_after == pytest.approx(28.0)


def test_policies_deciding_on_admit_fewest_left(clock: FakeClock) -> None:
    limiter = make_limiter("10/second; 3/minute", clock)
    decision = limiter.check("client")
    assert decision.policy == parse_policy("3/minute")
    assert decision.remaining == 2
    assert [state.remaining for state in decision.states] == [9, 2]


def test_keys_are_independent(clock: FakeClock) -> None:
    limiter = make_limiter("1/minute", clock)
    limiter.check("a")
    assert limiter.check("b").allowed


def test_decision_reset_after(clock: FakeClock) -> None:
    limiter = make_limiter("1/second, burst 4", clock)
    limiter.check("client", cost=3)
    assert limiter.check("client").reset_after == pytest.approx(4.0)


def test_dry_run_lets_limited_through(clock: FakeClock) -> None:
    limiter = make_limiter("2/minute", clock, dry_run=True)
    decisions = [limiter.check("client") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert decisions[2].limited is True
    assert decisions[2].dry_run is True
    assert limiter.counters["dry_run"] == 1


def test_on_event_receives_every_check(clock: FakeClock) -> None:
    events: list[RateLimitEvent] = []
    limiter = make_limiter("1/minute", clock, on_event=events.append)
    limiter.check("client")
    limiter.check("client")
    assert [event.kind for event in events] == ["allowed", "limited"]
    assert limiter.counters == {"allowed": 1, "limited": 1, "dry_run": 0, "storage_error": 0}


def test_on_event_error_ignored(clock: FakeClock) -> None:
    def fail(event: RateLimitEvent) -> None:
        raise RuntimeError("callback bug")

    limiter = make_limiter("1/minute", clock, on_event=fail)
    assert limiter.check("client").allowed


def test_check_async_memory(clock: FakeClock) -> None:
    limiter = make_limiter("1/minute", clock)
    first = asyncio.run(limiter.check_async("client"))
    second = asyncio.run(limiter.check_async("client"))
    assert (first.allowed, second.allowed) == (True, False)


def test_guard_socketio_style_key(clock: FakeClock) -> None:
    limiter = make_limiter("20/second, burst 20", clock)
    admitted = sum(limiter.check("sio:abc123").allowed for _ in range(25))
    assert admitted == 20


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_storage_error": "maybe"}, "on_storage_error"),
        ({"timeout": 0}, "timeout"),
        ({"storage": "mongodb://x"}, "not supported"),
        ({"storage": "memory://?max_keys=lots"}, "max_keys"),
        ({"storage_retry_after": 0}, "storage_retry_after"),
    ],
)
def test_limiter_invalid_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter("1/second", **kwargs)


def test_limiter_without_policies_check() -> None:
    with pytest.raises(ValueError, match="no policies"):
        RateLimiter(None).check("client")


def test_memory_threads_admit_capacity() -> None:
    """32 threads x 200 requests on one key with capacity 100 admit exactly 100."""
    limiter = RateLimiter(Policy(1, 86400.0, burst=100))
    admitted = itertools.count()
    start = threading.Barrier(32)

    def worker() -> None:
        start.wait()
        for _ in range(200):
            if limiter.check("shared").allowed:
                next(admitted)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert next(admitted) == 100


def test_memory_sweep_drops_full_buckets(clock: FakeClock) -> None:
    storage = MemoryStorage(clock=clock)
    limiter = RateLimiter("10/second", storage=storage)
    for index in range(1000):
        limiter.check(f"old-{index}")
    clock.advance(2)
    for index in range(1000):
        limiter.check(f"new-{index}")
    assert len(storage) <= 1100


def test_memory_sweep_keeps_limited_buckets(clock: FakeClock) -> None:
    storage = MemoryStorage(clock=clock)
    limiter = RateLimiter("1/hour", storage=storage)
    for index in range(100):
        limiter.check(f"old-{index}")
    for index in range(1000):
        limiter.check(f"new-{index}")
    assert all(not limiter.check(f"old-{index}").allowed for index in range(100))


def test_memory_cap_keeps_limited_keys(clock: FakeClock) -> None:
    storage = MemoryStorage(max_keys=10, clock=clock)
    limiter = RateLimiter("1/hour", storage=storage)
    for index in range(10):
        limiter.check(f"client-{index}")
    decision = limiter.check("newcomer")
    assert decision.storage_error is True
    assert all(not limiter.check(f"client-{index}").allowed for index in range(10))


def test_memory_cap_deny_rejects_newcomer(clock: FakeClock) -> None:
    storage = MemoryStorage(max_keys=10, clock=clock)
    limiter = RateLimiter("1/hour", storage=storage, on_storage_error="deny")
    for index in range(10):
        limiter.check(f"client-{index}")
    assert limiter.check("newcomer").allowed is False


def test_memory_cap_evicts_unlimited_key(clock: FakeClock) -> None:
    storage = MemoryStorage(max_keys=10, clock=clock)
    limiter = RateLimiter("5/hour", storage=storage)
    for index in range(10):
        limiter.check(f"client-{index}")
    assert limiter.check("newcomer").allowed is True
    assert len(storage) == 10
    assert storage.evictions == 1


def test_memory_cap_prefers_full_buckets(clock: FakeClock) -> None:
    storage = MemoryStorage(max_keys=10, clock=clock)
    limiter = RateLimiter("5/second", storage=storage)
    for index in range(10):
        limiter.check(f"client-{index}")
    clock.advance(5)
    assert limiter.check("newcomer").allowed is True
    assert storage.evictions == 0


def test_policies_admitting_bucket_no_retry(clock: FakeClock) -> None:
    limiter = make_limiter("10/second; 1/minute", clock)
    limiter.check("client")
    decision = limiter.check("client")
    assert [state.retry_after for state in decision.states][0] == 0.0


class GeneralPathStorage(MemoryStorage):
    """MemoryStorage without its single-bucket fast path, so every check calls acquire()."""

    check_function = None


# (policy, [(seconds since start, cost), ...]) replayed through the fast and general paths.
FAST_PATH_CASES = [
    ("1/second, burst 3", [(0.0, 1), (0.0, 1), (0.0, 1), (0.0, 1), (0.5, 1), (1.0, 1)]),
    ("7/second", [(0.0, 3), (0.0, 4), (0.0, 1), (1 / 7, 1), (0.2, 1), (0.3, 2)]),
    ("10/minute, burst 5", [(0.0, 5), (0.0, 0), (0.0, 1), (6.0, 1), (3600.0, 2)]),
    ("2/second", [(0.0, 3), (0.0, 2), (0.0, 2), (0.1, 0), (0.75, 1), (5.0, 2)]),
    ("3/1.5 seconds, burst 4", [(0.0, 4), (0.0, 1), (0.499999, 1), (0.5, 1), (1.7, 3)]),
    ("1000000/day", [(0.0, 1000000), (0.0, 1), (0.0864, 1), (0.0865, 1)]),
]


def decision_fields(decision) -> tuple:
    return (
        decision.allowed,
        decision.limited,
        decision.remaining,
        decision.retry_after,
        decision.reset_after,
        decision.retry_after_seconds,
        decision.policy,
        decision.key,
        decision.cost,
        decision.storage_error,
        decision.dry_run,
        decision.states,
    )


@pytest.mark.parametrize(("policy", "arrivals"), FAST_PATH_CASES)
@pytest.mark.parametrize("dry_run", [False, True])
def test_fast_path_equals_general(policy: str, arrivals: list, dry_run: bool) -> None:
    fast_clock, general_clock = FakeClock(), FakeClock()
    fast = make_limiter(policy, fast_clock, dry_run=dry_run)
    general = RateLimiter(policy, storage=GeneralPathStorage(clock=general_clock), dry_run=dry_run)
    for at, cost in arrivals:
        fast_clock.set(at)
        general_clock.set(at)
        expected = decision_fields(general.check("client", cost=cost))
        assert decision_fields(fast.check("client", cost=cost)) == expected, f"at {at}s"
    assert fast.counters == general.counters


@pytest.mark.parametrize(("policy", "arrivals"), FAST_PATH_CASES)
def test_fast_path_buckets_equal_general(policy: str, arrivals: list) -> None:
    """check_buckets() with one bucket, as the Flask and WSGI integrations call it."""
    fast_clock, general_clock = FakeClock(), FakeClock()
    fast = make_limiter(None, fast_clock)
    general = RateLimiter(None, storage=GeneralPathStorage(clock=general_clock))
    policies = [parse_policy(policy)]
    for at, cost in arrivals:
        fast_clock.set(at)
        general_clock.set(at)
        fast_decision = fast.check_buckets(fast.buckets("client", "route", policies), "c", cost)
        general_decision = general.check_buckets(
            general.buckets("client", "route", policies), "c", cost
        )
        assert decision_fields(fast_decision) == decision_fields(general_decision), f"at {at}s"


def test_fast_path_on_event_same_decision(clock: FakeClock) -> None:
    events: list[RateLimitEvent] = []
    limiter = make_limiter("1/minute", clock, on_event=events.append)
    plain = make_limiter("1/minute", FakeClock())
    for _ in range(2):
        decision = limiter.check("client")
        assert decision_fields(decision) == decision_fields(plain.check("client"))
    assert [event.decision for event in events][1].retry_after == pytest.approx(60.0)


def test_fast_path_decision_fixed_after_later_checks(clock: FakeClock) -> None:
    limiter = make_limiter("1/second, burst 3", clock)
    decision = limiter.check("client")
    before = decision_fields(decision)
    limiter.check("client", cost=2)
    clock.advance(0.5)
    limiter.check("client")
    assert decision_fields(decision) == before


@pytest.mark.parametrize("field", ["allowed", "remaining", "retry_after", "policy", "key"])
def test_decision_read_only(field: str, clock: FakeClock) -> None:
    decision = make_limiter("1/second", clock).check("client")
    with pytest.raises(AttributeError):
        setattr(decision, field, None)


def test_decision_copy_equal_fields(clock: FakeClock) -> None:
    limiter = make_limiter("1/second", clock)
    limiter.check("client")
    decision = limiter.check("client")
    assert decision_fields(copy.copy(decision)) == decision_fields(decision)


def test_dry_run_set_later(clock: FakeClock) -> None:
    limiter = make_limiter("1/minute", clock)
    limiter.check("client")
    limiter.dry_run = True
    decision = limiter.check("client")
    assert (decision.allowed, decision.limited, decision.dry_run) == (True, True, True)


def test_on_event_set_later(clock: FakeClock) -> None:
    events: list[RateLimitEvent] = []
    limiter = make_limiter("1/minute", clock)
    limiter.on_event = events.append
    limiter.check("client")
    assert [event.kind for event in events] == ["allowed"]


@pytest.mark.parametrize("policies", ["1/second, burst 2", "1/second, burst 2; 3/minute"])
def test_bucket_check_function_equals_general(policies: str, clock: FakeClock) -> None:
    fast = make_limiter(None, clock)
    general = make_limiter(None, FakeClock())
    parsed = RateLimiter(policies).policies
    check = fast.bucket_check_function(parsed)
    for _ in range(4):
        expected = general.check_buckets([("key", policy) for policy in parsed], "label", 1)
        assert decision_fields(check("key", 1, "label")) == decision_fields(expected)


def test_rejection_log_throttled(clock: FakeClock, caplog) -> None:
    limiter = make_limiter("1/hour", clock)
    with caplog.at_level(logging.INFO, logger="ratelimiter"):
        for _ in range(5):
            limiter.check("client")
    lines = [record.getMessage() for record in caplog.records if "rejected" in record.getMessage()]
    assert len(lines) == 1
    limiter._reject_log.next_at = 0.0
    with caplog.at_level(logging.INFO, logger="ratelimiter"):
        limiter.check("client")
    assert "(3 more since the last such line)" in caplog.records[-1].getMessage()
