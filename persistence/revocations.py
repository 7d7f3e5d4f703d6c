"""API key revocations, published to every API process through Redis pub/sub.

The database is the record (a revoked key never authenticates again); this channel only tells the
processes that hold WebSockets opened with the key to close them now. A message is fire-and-forget:
a process that is reconnecting to Redis at that moment misses it, so it re-reads nothing and the
socket lives until its client disconnects — the price of not polling the database per socket.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

from redis.asyncio import Redis

log = logging.getLogger("brandvx.revocations")

_RETRY_SECONDS: Final = 0.5


class RedisKeyRevocations:
    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self._redis = redis
        self.channel = f"{key_prefix}api-key-revoked"

    async def announce(self, key_id: uuid.UUID) -> None:
        try:
            await self._redis.publish(self.channel, str(key_id))
        except Exception as exc:  # the revocation itself is committed; only the push failed
            log.warning("could not announce an API key revocation (%s)", type(exc).__name__)

    async def listen(
        self, on_revoked: Callable[[uuid.UUID], Awaitable[object]], *, subscribed: asyncio.Event | None = None
    ) -> None:
        """Calls ``on_revoked`` for each announced key until cancelled; sets ``subscribed`` once
        the subscription is active (so a revocation right after start-up is not missed)."""
        failing = False
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                failing = False
                if subscribed is not None:
                    subscribed.set()
                async for message in pubsub.listen():
                    data = message.get("data")
                    try:
                        key_id = uuid.UUID(data.decode() if isinstance(data, bytes) else str(data))
                    except ValueError:
                        continue
                    await on_revoked(key_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Logged once per outage, not on every retry.
                level = logging.DEBUG if failing else logging.WARNING
                log.log(
                    level, "API key revocation listener failed (%s); subscribing again", type(exc).__name__
                )
                failing = True
                await asyncio.sleep(_RETRY_SECONDS)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
