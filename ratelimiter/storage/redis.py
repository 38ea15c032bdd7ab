"""Redis storage (``redis://`` and ``rediss://``): one Lua script per check, Redis's clock.

Each check runs one script (``EVALSHA``, one round trip) that reads, decides and writes every
bucket of the call atomically, so processes and hosts sharing the server share the limit. The
script reads the time with ``TIME`` on the server, so application hosts with skewed clocks
still agree.

A bucket is a hash ``{u, f}`` holding its theoretical arrival time (the moment it is full
again) as whole microseconds ``u`` plus ``f / count`` of a microsecond. Lua numbers are
doubles, exact for integers below 2**53; keeping the fraction apart keeps every step exact
(the policy bound ``capacity x period_us <= 2**51`` leaves the headroom). Each key expires when
its bucket is full again, so a key is never kept without a TTL and a full bucket is never kept.
The keys of one call share a ``{hash tag}``, so the script also works on Redis Cluster.

Every call has a deadline: socket connect and read timeouts of ``timeout`` seconds (default
0.1) and no client-side retries. Failures raise :class:`StorageError`, which the limiter
turns into an admit or a reject according to ``on_storage_error``.
"""

from __future__ import annotations

import asyncio
import logging
import math
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

# KEYS: one bucket key per policy. ARGV: cost, then count, period_us and capacity per policy.
# Returns {allowed, then remaining, reset_us, retry_us per policy}; retry_us is -1 when the
# cost exceeds the capacity, so no wait can ever admit it.
ACQUIRE_SCRIPT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local cost = tonumber(ARGV[1])
local allowed = 1
local buckets = {}

for i = 1, #KEYS do
  local count = tonumber(ARGV[3 * i - 1])
  local period = tonumber(ARGV[3 * i])
  local capacity = tonumber(ARGV[3 * i + 1])
  local step = math.floor(period / count)
  local step_fraction = period - step * count

  local stored = redis.call('HMGET', KEYS[i], 'u', 'f')
  local tat = tonumber(stored[1])
  local tat_fraction = tonumber(stored[2]) or 0
  if tat == nil or tat < now then
    tat = now
    tat_fraction = 0
  end
  -- Backlogs are in units of 1/count microsecond, where one token lasts 'period' units.
  local carried = tat_fraction + cost * step_fraction
  local bucket = {
    count = count,
    period = period,
    tolerance = capacity * period,
    backlog = (tat - now) * count + tat_fraction,
    new_tat = tat + cost * step + math.floor(carried / count),
    new_fraction = carried % count,
  }
  bucket.new_backlog = (bucket.new_tat - now) * count + bucket.new_fraction
  if bucket.new_backlog > bucket.tolerance then
    allowed = 0
  end
  buckets[i] = bucket
end

local result = {allowed}
for i, bucket in ipairs(buckets) do
  local backlog = bucket.backlog
  local retry = 0
  if allowed == 1 then
    backlog = bucket.new_backlog
    if cost > 0 then
      redis.call('HSET', KEYS[i], 'u', bucket.new_tat, 'f', bucket.new_fraction)
      -- The key expires, in whole milliseconds rounded up, when the bucket is full again.
      redis.call('PEXPIRE', KEYS[i], math.ceil(backlog / (bucket.count * 1000)))
    end
  elseif cost * bucket.period > bucket.tolerance then
    retry = -1
  elseif bucket.new_backlog > bucket.tolerance then
    retry = math.ceil((bucket.new_backlog - bucket.tolerance) / bucket.count)
  end
  result[3 * i - 1] = math.floor((bucket.tolerance - backlog) / bucket.period)
  result[3 * i] = math.ceil(backlog / bucket.count)
  result[3 * i + 1] = retry
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
    """

    def __init__(self, url: str, timeout: float = 0.1, max_connections: int = 50) -> None:
        self.url = url
        self.timeout = timeout
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
        self._script = self._client.register_script(ACQUIRE_SCRIPT)
        self._async_options = options
        self._async_client: redis.asyncio.Redis | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._async_script = None

    def acquire(self, buckets: Sequence[Bucket], cost: int) -> tuple[bool, list[BucketState]]:
        """Take ``cost`` tokens from every bucket, or from none, in one script call."""
        keys, args = _script_input(buckets, cost)
        try:
            reply = self._script(keys=keys, args=args)
        except (redis.RedisError, OSError) as error:
            raise StorageError(f"Redis at {self._safe_url()} failed: {_describe(error)}") from error
        return _parse_reply(buckets, reply)

    async def acquire_async(
        self, buckets: Sequence[Bucket], cost: int
    ) -> tuple[bool, list[BucketState]]:
        """The same as ``acquire`` on the asyncio client, so the event loop never blocks."""
        keys, args = _script_input(buckets, cost)
        script = self._script_for_loop()
        try:
            reply = await asyncio.wait_for(script(keys=keys, args=args), self.timeout * 2)
        except (TimeoutError, redis.RedisError, OSError) as error:
            raise StorageError(f"Redis at {self._safe_url()} failed: {_describe(error)}") from error
        return _parse_reply(buckets, reply)

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
        args.extend((policy.count, policy.period_us, policy.capacity))
    return keys, args


def _parse_reply(buckets: Sequence[Bucket], reply: list[int]) -> tuple[bool, list[BucketState]]:
    allowed = bool(reply[0])
    states = []
    for index, (_, policy) in enumerate(buckets):
        remaining, reset_us, retry_us = reply[3 * index + 1 : 3 * index + 4]
        if retry_us < 0:
            retry = math.inf
        elif retry_us == 0:
            retry = 0.0
        else:
            retry = seconds_from(retry_us, _US_PER_SECOND)
        states.append(
            BucketState(policy, int(remaining), seconds_from(reset_us, _US_PER_SECOND), retry)
        )
    return allowed, states
