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

This module encodes the command itself, not redis-py. The ``EVALSHA`` header and each
policy's arguments are RESP bytes built once per policy and cost, so a check encodes only its
key. It sends the bytes on a connection taken from redis-py's pool and returned to it. A
single-policy check goes through :meth:`RedisStorage.table`, the same fast path as the memory
backend's, without building a :class:`~ratelimiter.decision.BucketState`.

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
from collections.abc import Callable, Sequence

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..decision import BucketState
from ..policy import Policy
from .base import Bucket, StorageError, seconds_from

__all__ = ["RedisStorage"]

logger = logging.getLogger(__name__)

_US_PER_SECOND = 1_000_000

# KEYS: one bucket key per policy. ARGV[1]: the cost, then five integers per policy: count, the
# cost in microseconds split into whole microseconds and a remainder in 1/count units, and the
# tolerance (capacity x period / count, the backlog a full bucket absorbs) split the same way.
# Times are pairs {microseconds, remainder < count}, so the script only adds and compares
# integers below 2**53 whatever the policy, and Python does the divisions with exact integers.
# Returns {allowed, then per policy the backlog before the request as such a pair}, relative
# to the server's current time. Python adds the cost to it.
#
# Adding 0 converts an ARGV string to a number without a tonumber() call. The backlogs go
# straight into the reply, which is the only table the script itself creates.
ACQUIRE_SCRIPT = """
local call = redis.call
local time = call('TIME')
local now = time[1] * 1000000 + time[2]
local reply = {1}

for i = 1, #KEYS do
  local a = 5 * i - 3
  local tat, tat_fraction = now, 0
  local stored = call('GET', KEYS[i])
  if stored then
    local us, fraction = string.match(stored, '^(%d+):(%d+)$')
    if us and us + 0 >= now then
      tat, tat_fraction = us + 0, fraction + 0
    end
  end
  local new_tat = tat + ARGV[a + 1]
  local new_fraction = tat_fraction + ARGV[a + 2]
  if new_fraction >= ARGV[a] + 0 then
    new_fraction = new_fraction - ARGV[a]
    new_tat = new_tat + 1
  end
  local backlog = new_tat - now
  local tolerance = ARGV[a + 3] + 0
  if backlog > tolerance or (backlog == tolerance and new_fraction > ARGV[a + 4] + 0) then
    reply[1] = 0
  end
  reply[2 * i] = tat - now
  reply[2 * i + 1] = tat_fraction
end

if reply[1] == 1 and ARGV[1] ~= '0' then
  for i = 1, #KEYS do
    local a = 5 * i - 3
    local new_tat = now + reply[2 * i] + ARGV[a + 1]
    local new_fraction = reply[2 * i + 1] + ARGV[a + 2]
    if new_fraction >= ARGV[a] + 0 then
      new_fraction = new_fraction - ARGV[a]
      new_tat = new_tat + 1
    end
    -- The key expires, in whole milliseconds rounded up, when the bucket is full again.
    local backlog_us = new_tat - now
    if new_fraction > 0 then
      backlog_us = backlog_us + 1
    end
    -- '%d' prints every integer below 2**53 exactly, but tostring() rounds to 14 digits.
    call('SET', KEYS[i], string.format('%d:%d', new_tat, new_fraction),
      'PX', string.format('%d', math.ceil(backlog_us / 1000)))
  end
end
return reply
"""

_SCRIPT_SHA = hashlib.sha1(ACQUIRE_SCRIPT.encode()).hexdigest().encode()
# Costs whose encoded arguments each policy keeps; requests of other costs encode them anew.
_CACHED_COSTS = 64


def _bulk(data: bytes) -> bytes:
    """Encode one RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _command_head(key_count: int) -> bytes:
    """Encode ``EVALSHA <sha> <key_count>`` as the start of a RESP array with its length."""
    return b"*%d\r\n$7\r\nEVALSHA\r\n%b%b" % (
        4 + 6 * key_count,
        _bulk(_SCRIPT_SHA),
        _bulk(b"%d" % key_count),
    )


class _Table:
    """The Redis buckets of one policy: its encoded script arguments and its fast path.

    It is also the :class:`~ratelimiter.decision.RetrySource` of the decisions of
    single-policy checks. A backlog is the time until the bucket is full, in units of
    ``1 / count`` microsecond.
    """

    __slots__ = ("policy", "interval", "tolerance", "units_per_second", "take", "_arguments")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        #: Units one token lasts: the policy's period in microseconds.
        self.interval = policy.period_us
        #: Units a full bucket covers.
        self.tolerance = policy.capacity * policy.period_us
        self.units_per_second = policy.count * _US_PER_SECOND
        #: ``take(key, cost) -> (allowed, remaining, reset_after, backlog)``, set by
        #: ``RedisStorage.table``.
        self.take: Callable[[str, int], tuple[bool, int, float, int]]
        # cost -> this policy's five ARGV values, encoded.
        self._arguments: dict[int, bytes] = {}

    def arguments(self, cost: int) -> bytes:
        """Return this policy's script arguments for ``cost``, encoded as RESP bulk strings."""
        encoded = self._arguments.get(cost)
        if encoded is None:
            count = self.policy.count
            cost_us, cost_fraction = divmod(cost * self.interval, count)
            tolerance_us, tolerance_fraction = divmod(self.tolerance, count)
            values = (count, cost_us, cost_fraction, tolerance_us, tolerance_fraction)
            encoded = b"".join(_bulk(b"%d" % value) for value in values)
            if len(self._arguments) < _CACHED_COSTS:
                self._arguments[cost] = encoded
        return encoded

    def retry_after(self, backlog: int, cost: int) -> float:
        """Seconds until a bucket with ``backlog`` admits ``cost``, never rounded down."""
        if cost * self.interval > self.tolerance:
            return math.inf
        # The bucket admits ``cost`` once the backlog has drained to tolerance - cost tokens.
        wait = backlog + cost * self.interval - self.tolerance
        return seconds_from(wait, self.units_per_second) if wait > 0 else 0.0


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
        self._pool = self._client.connection_pool
        # storage_id -> the table of that policy.
        self._tables: dict[str, _Table] = {}
        self._async_options = options
        self._async_client: redis.asyncio.Redis | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None

    def acquire(self, buckets: Sequence[Bucket], cost: int) -> tuple[bool, list[BucketState]]:
        """Take ``cost`` tokens from every bucket, or from none, in one script call."""
        tables = [self.table(policy) for _, policy in buckets]
        reply = self._execute(_command(buckets, tables, cost))
        return _parse_reply(tables, cost, reply)

    async def acquire_async(
        self, buckets: Sequence[Bucket], cost: int
    ) -> tuple[bool, list[BucketState]]:
        """The same as ``acquire`` on the asyncio client, so the event loop never blocks."""
        if self._retry_at:
            self._check_backoff()
        tables = [self.table(policy) for _, policy in buckets]
        command = _command(buckets, tables, cost)
        pool = self._async_pool_for_loop()
        try:
            reply = await asyncio.wait_for(_execute_async(pool, command), self.timeout * 2)
        except (TimeoutError, redis.RedisError, OSError) as error:
            raise self._failure(error) from error
        self._retry_at = 0.0
        return _parse_reply(tables, cost, reply)

    def table(self, policy: Policy) -> _Table:
        """Return the buckets of ``policy``: the fast path of single-policy checks.

        ``table(policy).take(key, cost)`` runs the script on the one bucket of ``key`` and
        returns whether it took the tokens, the whole tokens left, the seconds until the
        bucket is full, and the bucket's backlog. The backlog is the one after the request
        when admitted and before it when rejected, and
        ``table(policy).retry_after(backlog, cost)`` turns it into the retry time. The
        results equal those of :meth:`acquire` with the one bucket, and it raises
        :class:`StorageError` in the same cases.
        """
        table = self._tables.get(policy.storage_id)
        if table is None:
            table = _Table(policy)
            table.take = self._take_function(table)
            # Two threads may build the same table at once, and both then use the first one.
            table = self._tables.setdefault(policy.storage_id, table)
        return table

    def _take_function(self, table: _Table) -> Callable[[str, int], tuple[bool, int, float, int]]:
        """Build ``table.take``, with everything it reads bound to local names."""
        execute = self._execute
        head = _command_head(1)
        # The key "{<key>}:<storage_id>" is encoded as "$<length>\r\n{" + key + key_end.
        key_end = b"}:%b\r\n" % table.policy.storage_id.encode()
        key_extra = len(key_end) - 1
        tails: dict[int, bytes] = {}
        count = table.policy.count
        interval = table.interval
        tolerance = table.tolerance
        units_per_second = table.units_per_second

        def take(key: str, cost: int) -> tuple[bool, int, float, int]:
            tail = tails.get(cost)
            if tail is None:
                tail = _bulk(b"%d" % cost) + table.arguments(cost)
                if len(tails) < _CACHED_COSTS:
                    tails[cost] = tail
            encoded_key = key.encode()
            allowed, backlog_us, backlog_fraction = execute(
                b"%b$%d\r\n{%b%b%b"
                % (head, len(encoded_key) + key_extra, encoded_key, key_end, tail)
            )
            backlog = backlog_us * count + backlog_fraction
            if allowed:
                backlog += cost * interval
            return (
                allowed == 1,
                (tolerance - backlog) // interval,
                seconds_from(backlog, units_per_second),
                backlog,
            )

        return take

    def _execute(self, command: bytes) -> list[int]:
        """Send one encoded ``EVALSHA`` on a pooled connection and return the script's reply.

        Loads the script and sends the command again when the server does not have it.
        Raises StorageError when Redis fails, and during the failure backoff.
        """
        if self._retry_at:
            self._check_backoff()
        pool = self._pool
        try:
            connection = pool.get_connection()
        except (redis.RedisError, OSError) as error:
            raise self._failure(error) from error
        try:
            # redis-py closes the connection itself when sending or reading fails.
            connection.send_packed_command([command])
            try:
                reply = connection.read_response()
            except redis.exceptions.NoScriptError:
                # The server restarted or ran SCRIPT FLUSH: load the script and send again.
                connection.send_command("SCRIPT", "LOAD", ACQUIRE_SCRIPT)
                connection.read_response()
                connection.send_packed_command([command])
                reply = connection.read_response()
        except (redis.RedisError, OSError) as error:
            raise self._failure(error) from error
        finally:
            pool.release(connection)
        self._retry_at = 0.0
        return reply

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

    def _async_pool_for_loop(self) -> redis.asyncio.ConnectionPool:
        loop = asyncio.get_running_loop()
        if self._async_client is None or self._async_loop is not loop:
            # An asyncio connection belongs to the loop that opened it.
            self._async_client = redis.asyncio.Redis.from_url(
                self.url,
                retry=AsyncRetry(NoBackoff(), 0),
                **self._async_options,
            )
            self._async_loop = loop
        return self._async_client.connection_pool

    def _safe_url(self) -> str:
        kwargs = self._pool.connection_kwargs
        if "path" in kwargs:
            return f"unix://{kwargs['path']}"
        return f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"


async def _execute_async(pool: redis.asyncio.ConnectionPool, command: bytes) -> list[int]:
    """Send one encoded ``EVALSHA`` on an asyncio pool and return the script's reply.

    Loads the script and sends the command again when the server does not have it. The caller
    wraps errors and runs the failure backoff.
    """
    connection = await pool.get_connection()
    try:
        await connection.send_packed_command(command)
        try:
            return await connection.read_response()
        except redis.exceptions.NoScriptError:
            await connection.send_command("SCRIPT", "LOAD", ACQUIRE_SCRIPT)
            await connection.read_response()
            await connection.send_packed_command(command)
            return await connection.read_response()
    finally:
        await pool.release(connection)


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError | redis.TimeoutError):
        return f"timed out ({type(error).__name__}: {error})" if str(error) else "timed out"
    return f"{type(error).__name__}: {error}"


def _command(buckets: Sequence[Bucket], tables: Sequence[_Table], cost: int) -> bytes:
    """Encode the ``EVALSHA`` of a check of several buckets."""
    parts = [_command_head(len(buckets))]
    for key, policy in buckets:
        parts.append(_bulk(f"{{{key}}}:{policy.storage_id}".encode()))
    parts.append(_bulk(b"%d" % cost))
    parts += [table.arguments(cost) for table in tables]
    return b"".join(parts)


def _parse_reply(
    tables: Sequence[_Table], cost: int, reply: list[int]
) -> tuple[bool, list[BucketState]]:
    """Turn the script's backlogs into bucket states, in units of 1/count microsecond."""
    allowed = reply[0] == 1
    states = []
    for index, table in enumerate(tables):
        policy = table.policy
        interval = table.interval
        tolerance = table.tolerance
        backlog = reply[2 * index + 1] * policy.count + reply[2 * index + 2]
        new_backlog = backlog + cost * interval

        if allowed:
            backlog = new_backlog
            retry = 0.0
        elif cost * interval > tolerance:
            retry = math.inf
        elif new_backlog > tolerance:
            retry = seconds_from(new_backlog - tolerance, table.units_per_second)
        else:
            retry = 0.0
        states.append(
            BucketState(
                policy,
                (tolerance - backlog) // interval,
                seconds_from(backlog, table.units_per_second),
                retry,
            )
        )
    return allowed, states
