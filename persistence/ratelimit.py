"""A leaky bucket per key in Redis, updated atomically by one Lua script with Redis's own clock, so
every API replica shares one budget per tenant and clock skew between replicas does not matter."""

from __future__ import annotations

import math
from typing import Final

from redis.asyncio import Redis

from domain.throttle import Throttle

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
