"""Rate limits across producer processes: Redis shares one bucket, memory:// keeps one each."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import REDIS_HOST, REDIS_PORT

PRODUCERS = 4
REQUESTS_PER_PRODUCER = 15
CAPACITY = 10
# One token an hour: over the few seconds of the test, refill adds nothing.
POLICY = f"1/hour, burst {CAPACITY}"
EMAIL = {"recipients": ["ann@example.com"], "subject": "Hi", "body": "Text"}


def _post(base_url: str) -> int:
    return httpx.post(f"{base_url}/send-emails", json=EMAIL, timeout=30).status_code


@pytest.mark.parametrize(
    ("storage", "admitted"),
    [("redis", CAPACITY), ("memory", CAPACITY * PRODUCERS)],
)
def test_limit_across_producers(
    request: pytest.FixtureRequest,
    rabbit_env: dict[str, str],
    unique_prefix: str,
    start_producer,
    storage: str,
    admitted: int,
) -> None:
    if storage == "redis":
        request.getfixturevalue("redis_url")
        storage_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    else:
        storage_url = "memory://"
    env = {
        **rabbit_env,
        "SCHEDULER_POST_RATE_LIMIT": POLICY,
        "RATELIMIT_STORAGE_URL": storage_url,
        "SCHEDULER_RATE_LIMIT_KEY_PREFIX": f"{unique_prefix}:ratelimit",
    }
    producers = [start_producer(env, wait=False) for _ in range(PRODUCERS)]
    for producer in producers:
        producer.wait_ready()

    # Requests alternate between the producers and run eight at a time.
    targets = [p.base_url for _ in range(REQUESTS_PER_PRODUCER) for p in producers]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(_post, targets))

    logs = "".join(p.log() for p in producers)
    assert set(statuses) <= {202, 429}, logs
    assert statuses.count(202) == admitted
