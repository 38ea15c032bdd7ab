"""Redis storage (``redis://`` and ``rediss://``): one Lua script per check, Redis's clock.

Each check runs one script (``EVALSHA``, one round trip) that reads, decides and writes every
bucket of the call atomically, so processes and hosts sharing the server share the limit. The
script reads the time with ``TIME`` on the server, so application hosts with skewed clocks
still agree.

A bucket is a string ``"u:f"`` holding its theoretical arrival time (the moment it is full
again) as whole microseconds ``u`` plus ``f / count`` of a microsecond, written with one
``SET ... PX`` that also sets the TTL. Lua numbers are
doubles, exact for integers below 2**53; keeping the fraction apart keeps every step exact,
and the divisions happen in Python on unbounded integers. Each key expires when
its bucket is full again, so a key is never kept without a TTL and a full bucket is never kept.
The keys of one call share a ``{hash tag}``, so the script also works on Redis Cluster.

Every call has a deadline: socket connect and read timeouts of ``timeout`` seconds (default
0.1) and no client-side retries. After a connection failure or timeout, calls fail at once for
``failure_backoff`` seconds (default 0.5) instead of each waiting for Redis again. Failures
raise :class:`StorageError`, which the limiter turns into an admit or a reject according to
``on_storage_error``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Sequence

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..decision import BucketState
from .base import Bucket, StorageError, seconds_from

__all__ = ["RedisStorage"]

logger = logging.getLogger(__name__)

_US_PER_SECOND = 1_000_000

# KEYS: one bucket key per policy. ARGV: cost, then five integers per policy: count, the cost
# in microseconds split into whole microseconds and a remainder in 1/count units, and the
# tolerance (capacity x period / count, the backlog a full bucket absorbs) split the same way.
# Times are pairs {microseconds, remainder < count}, so the script only adds and compares
# integers below 2**53 whatever the policy, and Python does the divisions with exact integers.
# Returns {allowed, then per policy: backlog before the request, and backlog after it}, each
# as a pair relative to the server's current time.
ACQUIRE_SCRIPT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local cost = tonumber(ARGV[1])
local allowed = 1
local buckets = {}

for i = 1, #KEYS do
  local base = 5 * (i - 1) + 1
  local count = tonumber(ARGV[base + 1])
  local cost_us = tonumber(ARGV[base + 2])
  local cost_fraction = tonumber(ARGV[base + 3])
  local tolerance_us = tonumber(ARGV[base + 4])
  local tolerance_fraction = tonumber(ARGV[base + 5])

  local tat = nil
  local tat_fraction = 0
  local stored = redis.call('GET', KEYS[i])
  if stored then
    local separator = string.find(stored, ':', 1, true)
    if separator then
      tat = tonumber(string.sub(stored, 1, separator - 1))
      tat_fraction = tonumber(string.sub(stored, separator + 1)) or 0
    end
  end
  if tat == nil or tat < now then
    tat = now
    tat_fraction = 0
  end

  local new_tat = tat + cost_us
  local new_fraction = tat_fraction + cost_fraction
  if new_fraction >= count then
    new_fraction = new_fraction - count
    new_tat = new_tat + 1
  end
  local new_backlog = new_tat - now
  if new_backlog > tolerance_us
      or (new_backlog == tolerance_us and new_fraction > tolerance_fraction) then
    allowed = 0
  end
  buckets[i] = {tat - now, tat_fraction, new_backlog, new_fraction, new_tat}
end

local result = {allowed}
for i, bucket in ipairs(buckets) do
  if allowed == 1 and cost > 0 then
    -- The key expires, in whole milliseconds rounded up, when the bucket is full again.
    local backlog_us = bucket[3]
    if bucket[4] > 0 then
      backlog_us = backlog_us + 1
    end
    -- '%.0f' prints every integer below 2**53 exactly; tostring() would round to 14 digits.
    local value = string.format('%.0f:%.0f', bucket[5], bucket[4])
    redis.call('SET', KEYS[i], value, 'PX', math.ceil(backlog_us / 1000))
  end
  for j = 1, 4 do
    result[#result + 1] = bucket[j]
  end
end
return result
"""


class RedisStorage:
    """Token buckets in Redis, shared by every process that uses the same server.

    :param url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS, or
        ``unix:///path/to/socket``.
    :param timeout: seconds each call may take to connect and to read the reply (default 0.1).
    :param max_connections: connections per pool (default 50 per process; the asyncio pool is
        separate).
    :param failure_backoff: seconds after a connection failure or timeout during which calls
        fail at once instead of trying Redis (default 0.5; 0 turns this off). While Redis
        hangs, this spares each request the full ``timeout``; after the backoff the next call
        tries Redis again.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 0.1,
        max_connections: int = 50,
        failure_backoff: float = 0.5,
    ) -> None:
        if failure_backoff < 0:
            raise ValueError(f"failure_backoff={failure_backoff!r} is negative; use seconds >= 0")
        self.url = url
        self.timeout = timeout
        self.failure_backoff = failure_backoff
        self._retry_at = 0.0
        options = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "max_connections": max_connections,
            "health_check_interval": 0,
        }
        try:
            self._client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)
        except ValueError as error:
            raise ValueError(f"storage URL {url!r} is invalid: {error}") from None
        self._sha = hashlib.sha1(ACQUIRE_SCRIPT.encode()).hexdigest()
        self._async_options = options
        self._async_client: redis.asyncio.Redis | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._async_script = None

    def acquire(self, buckets: Sequence[Bucket], cost: int) -> tuple[bool, list[BucketState]]:
        """Take ``cost`` tokens from every bucket, or from none, in one script call."""
        self._check_backoff()
        keys, args = _script_input(buckets, cost)
        try:
            try:
                reply = self._client.evalsha(self._sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                # The server restarted or ran SCRIPT FLUSH: load the script and retry once.
                self._sha = self._client.script_load(ACQUIRE_SCRIPT)
                reply = self._client.evalsha(self._sha, len(keys), *keys, *args)
        except (redis.RedisError, OSError) as error:
            raise self._failure(error) from error
        self._retry_at = 0.0
        return _parse_reply(buckets, cost, reply)

    async def acquire_async(
        self, buckets: Sequence[Bucket], cost: int
    ) -> tuple[bool, list[BucketState]]:
        """The same as ``acquire`` on the asyncio client, so the event loop never blocks."""
        self._check_backoff()
        keys, args = _script_input(buckets, cost)
        script = self._script_for_loop()
        try:
            reply = await asyncio.wait_for(script(keys=keys, args=args), self.timeout * 2)
        except (TimeoutError, redis.RedisError, OSError) as error:
            raise self._failure(error) from error
        self._retry_at = 0.0
        return _parse_reply(buckets, cost, reply)

    def _check_backoff(self) -> None:
        """Raise StorageError without a network call while the failure backoff lasts."""
        if self._retry_at and time.monotonic() < self._retry_at:
            raise StorageError(
                f"Redis at {self._safe_url()} failed recently; skipping it until the "
                f"{self.failure_backoff} s backoff ends"
            )

    def _failure(self, error: BaseException) -> StorageError:
        """Start the backoff after a connection failure or timeout, and wrap the error."""
        if isinstance(error, TimeoutError | OSError | redis.ConnectionError | redis.TimeoutError):
            self._retry_at = time.monotonic() + self.failure_backoff
        return StorageError(f"Redis at {self._safe_url()} failed: {_describe(error)}")

    def close(self) -> None:
        """Close the synchronous pool; the asyncio pool closes with :meth:`aclose`."""
        self._client.close()

    async def aclose(self) -> None:
        """Close the asyncio pool."""
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    def _script_for_loop(self):
        loop = asyncio.get_running_loop()
        if self._async_client is None or self._async_loop is not loop:
            # An asyncio connection belongs to the loop that opened it.
            self._async_client = redis.asyncio.Redis.from_url(
                self.url,
                retry=AsyncRetry(NoBackoff(), 0),
                **self._async_options,
            )
            self._async_loop = loop
            self._async_script = self._async_client.register_script(ACQUIRE_SCRIPT)
        return self._async_script

    def _safe_url(self) -> str:
        kwargs = self._client.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix://{kwargs['path']}"
        return f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError | redis.TimeoutError):
        return f"timed out ({type(error).__name__}: {error})" if str(error) else "timed out"
    return f"{type(error).__name__}: {error}"


def _script_input(buckets: Sequence[Bucket], cost: int) -> tuple[list[str], list[int]]:
    keys = []
    args = [cost]
    for key, policy in buckets:
        keys.append(f"{{{key}}}:{policy.storage_id}")
        cost_us, cost_fraction = divmod(cost * policy.period_us, policy.count)
        tolerance_us, tolerance_fraction = divmod(policy.capacity * policy.period_us, policy.count)
        args += (policy.count, cost_us, cost_fraction, tolerance_us, tolerance_fraction)
    return keys, args


def _parse_reply(
    buckets: Sequence[Bucket], cost: int, reply: list[int]
) -> tuple[bool, list[BucketState]]:
    """Turn the script's backlogs into bucket states, in units of 1/count microsecond."""
    allowed = bool(reply[0])
    states = []
    for index, (_, policy) in enumerate(buckets):
        backlog_us, backlog_fraction, new_us, new_fraction = reply[4 * index + 1 : 4 * index + 5]
        count = policy.count
        interval = policy.period_us
        tolerance = policy.capacity * interval
        backlog = backlog_us * count + backlog_fraction
        new_backlog = new_us * count + new_fraction
        units_per_second = count * _US_PER_SECOND

        if allowed:
            backlog = new_backlog
            retry = 0.0
        elif cost * interval > tolerance:
            retry = math.inf
        elif new_backlog > tolerance:
            retry = seconds_from(new_backlog - tolerance, units_per_second)
        else:
            retry = 0.0
        states.append(
            BucketState(
                policy,
                (tolerance - backlog) // interval,
                seconds_from(backlog, units_per_second),
                retry,
            )
        )
    return allowed, states
