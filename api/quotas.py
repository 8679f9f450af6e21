"""What one client may consume: requests per key, and room in Redis for new jobs.

**Requests per key**: GCRA (the generic cell rate algorithm, a token bucket kept as one
timestamp per key) in a Lua script, so that every API replica shares each key's budget
and a check is one round trip. It is written here because the maintained Python limiters
either keep state per process or need a Redis client other than the redis.asyncio the
API runs on; the algorithm is the one of RFC-style limiters (redis-cell, Redis' own
rate-limiting pattern), a dozen lines.

**Room for new jobs**: new jobs are refused (503) once Redis' memory passes its
``maxmemory`` minus ``BGWORKER_REDIS_MEMORY_HEADROOM_PERCENT``, so that workers can still
record the outcomes of the jobs already queued: at ``maxmemory`` itself Redis refuses
every write (``noeviction``), outcomes included. Read from ``INFO memory`` at most once
a second per process.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from worker.auth import Principal
from worker.enqueue import BROKER_ERRORS
from worker.errors import QueueFull, RateLimited
from worker.jobs import KEY_PREFIX
from worker.settings import Settings

# KEYS: the key's theoretical arrival time.  ARGV: emission interval (µs), burst tolerance
# (µs).  Returns {allowed (1/0), wait before the next allowed request (µs), remaining}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return {0, wait, 0} end
local new_tat = tat + interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, 0, math.floor((tolerance - (new_tat - now)) / interval) + 1}
"""

MEMORY_CHECK_SECONDS = 1.0


def rate_key(key_id: str) -> str:
    return f"{KEY_PREFIX}rate:{key_id}"


class Quotas:
    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self._client = client
        self._rate = settings.rate_limit_per_second
        self._burst = settings.rate_limit_burst
        self._interval_us = 1_000_000 / self._rate
        self._tolerance_us = self._interval_us * (self._burst - 1)
        self._gcra = client.register_script(_GCRA)
        self._headroom = settings.redis_memory_headroom_percent / 100
        self._memory_checked = 0.0
        self._memory_full = False

    async def charge(self, principal: Principal) -> None:
        """Count one request of this key; 429 with Retry-After when it is over its rate."""
        reply: Any = await self._gcra(
            keys=[rate_key(principal.key_id)], args=[self._interval_us, self._tolerance_us]
        )
        allowed, wait_us = int(reply[0]), float(reply[1])
        if not allowed:
            raise RateLimited(
                f"the key {principal.name!r} sent more than {self._burst} requests at once or "
                f"{self._rate:g} a second on average (BGWORKER_RATE_LIMIT_PER_SECOND, "
                "_BURST); retry after the Retry-After seconds",
                retry_after=wait_us / 1_000_000,
            )

    async def check_memory(self) -> None:
        """503 for a new job while Redis is within the headroom of its maxmemory."""
        now = time.monotonic()
        if now - self._memory_checked >= MEMORY_CHECK_SECONDS:
            try:
                info: Any = await self._client.info("memory")
            except BROKER_ERRORS:
                return  # Redis away: the enqueue itself answers for that (503)
            limit = int(info.get("maxmemory") or 0)
            used = int(info.get("used_memory") or 0)
            self._memory_full = limit > 0 and used >= limit * (1 - self._headroom)
            self._memory_checked = now
        if self._memory_full:
            raise QueueFull(
                "the job broker is nearly full, so no new job is accepted (the rest is kept "
                "for the jobs already queued): retry later, once workers have drained the "
                "queues (operators: Redis is within BGWORKER_REDIS_MEMORY_HEADROOM_PERCENT "
                "of its maxmemory)"
            )
