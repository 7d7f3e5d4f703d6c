"""Redis Streams as the transport for streamed replies and job progress.

PostgreSQL is the record; a stream per subject lets any API process replay what a worker produced
and then follow it live (XREAD BLOCK), so late and reconnecting subscribers miss nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from redis.asyncio import Redis

from domain.ai import ReplyEvent

MAXLEN = 20_000
DONE_TTL_SECONDS = 3600
OPEN_TTL_SECONDS = 6 * 3600


def _encodable(fields: Mapping[str, str]) -> dict[Any, Any]:
    return dict(fields)


class EventStreams:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._expiring: set[str] = set()

    def chat_key(self, message_id: str) -> str:
        return f"{self._prefix}stream:chat:{message_id}"

    def job_key(self, job_id: str) -> str:
        return f"{self._prefix}stream:job:{job_id}"

    async def append(self, key: str, fields: Mapping[str, str]) -> None:
        await self._redis.xadd(key, _encodable(fields), maxlen=MAXLEN, approximate=True)
        if key not in self._expiring:
            # Once per stream and process, not per delta: an abandoned stream (worker died) still goes away.
            if len(self._expiring) > 10_000:
                self._expiring.clear()
            self._expiring.add(key)
            await self._redis.expire(key, OPEN_TTL_SECONDS)

    async def close(self, key: str, fields: Mapping[str, str]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, _encodable({**fields, "done": "1"}), maxlen=MAXLEN, approximate=True)
            pipe.expire(key, DONE_TTL_SECONDS)
            await pipe.execute()

    async def entries(
        self, key: str, *, after: str, block_ms: int, count: int = 500
    ) -> list[tuple[str, dict[str, str]]]:
        response = await self._redis.xread({key: after}, count=count, block=block_ms)
        out: list[tuple[str, dict[str, str]]] = []
        for _stream, items in response or ():
            for entry_id, fields in items:
                out.append(
                    (
                        entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
                        {
                            (k.decode() if isinstance(k, bytes) else k): (
                                v.decode() if isinstance(v, bytes) else v
                            )
                            for k, v in fields.items()
                        },
                    )
                )
        return out


class ChatReplyFeed:
    """Implements domain.ai.ReplyFeed over EventStreams."""

    def __init__(self, streams: EventStreams) -> None:
        self._streams = streams

    async def follow(self, message_id: str, *, idle_seconds: float) -> AsyncIterator[ReplyEvent | None]:
        key = self._streams.chat_key(message_id)
        last = "0-0"
        text = ""
        while True:
            entries = await self._streams.entries(key, after=last, block_ms=int(idle_seconds * 1000))
            if not entries:
                yield None  # silence: the caller checks the record, then keeps waiting or stops
                continue
            for entry_id, fields in entries:
                last = entry_id
                delta = fields.get("d", "")
                text += delta
                done = fields.get("done") == "1"
                if delta or done:
                    yield ReplyEvent(delta=delta, text=text, done=done, error=fields.get("error") or None)
                if done:
                    return


class JobEventFeed:
    """Implements domain.jobs.JobEvents: change notices for a job, read from its stream."""

    def __init__(self, streams: EventStreams) -> None:
        self._streams = streams

    async def follow(self, job_id: str, *, idle_seconds: float) -> AsyncIterator[bool]:
        key = self._streams.job_key(job_id)
        last = "0-0"
        while True:
            entries = await self._streams.entries(key, after=last, block_ms=int(idle_seconds * 1000))
            if not entries:
                yield False
                continue
            last = entries[-1][0]
            yield True
            if any(fields.get("done") == "1" for _, fields in entries):
                return
