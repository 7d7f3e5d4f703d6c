"""A leaky bucket per key in Redis, updated atomically by one Lua script with Redis's own clock, so
every API replica shares one budget per tenant and clock skew between replicas does not matter."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any, Final

from redis.asyncio import Redis

from domain.throttle import Throttle
from persistence.availability import OUTAGES, unavailable_dependency

# KEYS[1]: the bucket. ARGV: capacity, restore rate (points/s), cost. Returns {allowed, level}.
_SPEND: Final = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(state[1]) or 0
local at = tonumber(state[2]) or now
level = math.max(0, level - (now - at) / 1000 * rate)
local allowed = 0
if level + cost <= capacity then
  level = level + cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, tostring(level)}
"""


class RedisCostBudget:
    """Implements domain.throttle.CostBudget."""

    def __init__(self, redis: Redis, prefix: str, *, maximum: int, restore_rate: float) -> None:
        if maximum <= 0 or restore_rate <= 0:
            raise ValueError("a budget needs a positive size and restore rate")
        self._redis = redis
        self._prefix = prefix
        self._maximum = maximum
        self._rate = restore_rate
        self._script = redis.register_script(_SPEND)

    @property
    def maximum(self) -> int:
        return self._maximum

    async def spend(self, key: str, cost: int) -> Throttle:
        allowed, level = await self._script(
            keys=[f"{self._prefix}throttle:{key}"], args=[self._maximum, self._rate, cost]
        )
        used = float(level)
        available = max(0.0, self._maximum - used)
        wait = 0.0 if allowed else max(0.0, cost - available) / self._rate
        return Throttle(
            allowed=bool(allowed),
            maximum=self._maximum,
            available=available,
            restore_rate=self._rate,
            retry_after_seconds=math.ceil(wait * 10) / 10,
        )


class MemoryCostBudget:
    """The same leaky bucket, in this process's memory: the fallback while Redis is unreachable.

    Each process counts only what it serves itself, so with N replicas a tenant may spend up to N
    budgets during an outage. At most ``max_keys`` buckets are kept (least recently used go first:
    a forgotten bucket is a full one, which errs on the side of serving)."""

    def __init__(
        self, *, maximum: int, restore_rate: float, max_keys: int = 10_000, clock: Any = time.monotonic
    ) -> None:
        if maximum <= 0 or restore_rate <= 0 or max_keys <= 0:
            raise ValueError("a budget needs a positive size, restore rate and key limit")
        self._maximum = maximum
        self._rate = restore_rate
        self._max_keys = max_keys
        self._clock = clock
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (level, at)

    @property
    def maximum(self) -> int:
        return self._maximum

    def __len__(self) -> int:
        return len(self._levels)

    async def spend(self, key: str, cost: int) -> Throttle:
        now = self._clock()
        level, at = self._levels.pop(key, (0.0, now))
        level = max(0.0, level - (now - at) * self._rate)
        allowed = level + cost <= self._maximum
        if allowed:
            level += cost
        self._levels[key] = (level, now)
        while len(self._levels) > self._max_keys:
            self._levels.popitem(last=False)
        available = max(0.0, self._maximum - level)
        wait = 0.0 if allowed else max(0.0, cost - available) / self._rate
        return Throttle(
            allowed=allowed,
            maximum=self._maximum,
            available=available,
            restore_rate=self._rate,
            retry_after_seconds=math.ceil(wait * 10) / 10,
        )


class FallbackCostBudget:
    """Redis's shared budget while Redis answers; this process's own while it does not, so queries
    and mutations keep working through a Redis outage. Redis is tried again at most once a second."""

    def __init__(
        self, shared: RedisCostBudget, local: MemoryCostBudget, *, probe_seconds: float = 1.0
    ) -> None:
        self._shared = shared
        self._local = local
        self._probe_seconds = probe_seconds
        self._down_until = 0.0

    @property
    def maximum(self) -> int:
        return self._shared.maximum

    @property
    def using_fallback(self) -> bool:
        return self._down_until > 0

    async def spend(self, key: str, cost: int) -> Throttle:
        if time.monotonic() >= self._down_until:
            try:
                throttle = await self._shared.spend(key, cost)
            except Exception as exc:
                if unavailable_dependency(exc) != "redis":
                    raise
                OUTAGES["redis"].failed(exc)
                self._down_until = time.monotonic() + self._probe_seconds
            else:
                if self._down_until:
                    self._down_until = 0.0
                    OUTAGES["redis"].recovered()
                return throttle
        return await self._local.spend(key, cost)
