"""Single-use nonces in Redis (signed connection links): ``domain.connect.NonceStore``."""

from __future__ import annotations

from redis.asyncio import Redis


class RedisNonces:
    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{key_prefix}oauth:nonce:"

    async def remember(self, nonce: str, ttl_seconds: int) -> None:
        await self._redis.set(self._prefix + nonce, "1", ex=ttl_seconds)

    async def exists(self, nonce: str) -> bool:
        return bool(await self._redis.exists(self._prefix + nonce))

    async def take(self, nonce: str) -> bool:
        # DEL answers how many keys it removed: of two racing callers, only one gets 1.
        return bool(await self._redis.delete(self._prefix + nonce))
