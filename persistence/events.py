"""Redis Streams as the transport for streamed replies and job progress.

PostgreSQL is the record; a stream per subject lets any API process replay what a worker produced
and then follow it live, so late and reconnecting subscribers miss nothing.

Both directions are shared per process, so their cost does not grow with every reply in flight:

* Writes go through one writer. Whatever was appended while its last round trip was in flight is
  sent as one pipeline (group commit), in order. With one reply streaming that is one round trip per
  entry, as before; with fifty, one round trip carries many of them. ``append`` does not wait for
  Redis unless a backlog builds up; ``close`` returns once the final entry, and so everything appended
  before it, is stored.
* Reads go through one reader, on a Redis connection of its own: one ``XREAD BLOCK`` over every
  stream followed in this process hands each batch of entries to the followers of that stream, so a
  thousand subscriptions hold one connection, not a thousand. A follower registers first, then
  replays the stream with ``XRANGE``, then takes live entries newer than the replay's last; the
  reader is woken for a newly followed stream by an entry in this process's own wake stream, which
  the blocked ``XREAD`` also watches (race-free, unlike ``CLIENT UNBLOCK``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from redis.asyncio import Redis

from domain.ai import ReplyEvent
from persistence.availability import OUTAGES, unavailable_dependency

__all__ = ["ChatReplyFeed", "Entry", "EventStreams", "JobEventFeed"]

log = logging.getLogger("brandvx.events")

MAXLEN: Final = 20_000
DONE_TTL_SECONDS: Final = 3600
OPEN_TTL_SECONDS: Final = 6 * 3600
# Appends wait for Redis only when this many entries are queued: backpressure, not per-entry latency.
BACKLOG: Final = 1_000
READ_COUNT: Final = 500  # entries per stream and XREAD
READ_BLOCK_MS: Final = 5_000  # the reader's longest wait before it looks at its streams again
WAKE_TTL_SECONDS: Final = 24 * 3600
_RETRY_SECONDS: Final = 0.5
READER_NAME: Final = "brandvx-event-reader"

Entry = tuple[str, dict[str, str]]  # stream entry id, fields


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(items: Any) -> list[Entry]:
    return [(_text(entry_id), {_text(k): _text(v) for k, v in fields.items()}) for entry_id, fields in items]


def _encodable(fields: Mapping[str, str]) -> dict[Any, Any]:
    return dict(fields)


def _order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


class _Batch:
    __slots__ = ("commands", "written")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.commands: list[tuple[str, dict[str, str], int | None]] = []
        self.written: asyncio.Future[None] = loop.create_future()


class _Reader:
    """The process's one XREAD loop, bound to the event loop it runs on."""

    def __init__(self, redis: Redis, wake_key: str, name: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.redis = redis
        self.wake_key = wake_key
        self.name = name
        self.queues: dict[str, set[asyncio.Queue[list[Entry]]]] = {}
        self.positions: dict[str, str] = {}  # streams being read, each with the last id handed out
        self.wake_position = "0-0"
        self.task: asyncio.Task[None] | None = None
        self.named = False

    def ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name="brandvx-event-reader")

    async def _run(self) -> None:
        connection = self.redis.client()  # one connection of its own: it spends its time blocked
        try:
            while True:
                try:
                    await self._read(connection)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Redis restarted or the connection dropped: read again from the same positions,
                    # so nothing is lost. Meanwhile followers see silence, and the callers check the
                    # record (a reply that finished is still delivered from PostgreSQL).
                    if unavailable_dependency(exc) == "redis":
                        OUTAGES["redis"].failed(exc)  # logged once per outage
                    else:
                        log.warning("event stream reader failed (%s); reading again", type(exc).__name__)
                    self.named = False  # a new connection has no name yet
                    await asyncio.sleep(_RETRY_SECONDS)
                    if not self.queues:
                        return  # nobody is following: the next follower starts a new reader
        finally:
            await connection.aclose()

    async def _read(self, connection: Redis) -> None:
        if not self.named:
            await connection.client_setname(self.name)  # visible in CLIENT LIST
            self.named = True
        streams: dict[Any, Any] = {self.wake_key: self.wake_position, **self.positions}
        response = await connection.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS)
        for raw_key, items in response or ():
            key = _text(raw_key)
            entries = _entries(items)
            if not entries:
                continue
            if key == self.wake_key:
                self.wake_position = entries[-1][0]
                continue
            if key not in self.positions:
                continue  # its last follower left while the read was in flight
            self.positions[key] = entries[-1][0]
            for queue in self.queues.get(key, ()):
                queue.put_nowait(entries)


class EventStreams:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._expiring: set[str] = set()
        self._batch: _Batch | None = None
        self._writer: asyncio.Task[None] | None = None
        self._lost: set[str] = set()  # streams with entries that could not be written
        self._inflight: _Batch | None = None
        self._reader: _Reader | None = None
        process = uuid.uuid4().hex
        self._wake_key = f"{prefix}stream:wake:{process}"
        self.reader_name = f"{READER_NAME}-{process[:12]}"

    def chat_key(self, message_id: str) -> str:
        return f"{self._prefix}stream:chat:{message_id}"

    def job_key(self, job_id: str) -> str:
        return f"{self._prefix}stream:job:{job_id}"

    # ------------------------------------------------------------------------------------- writing

    async def append(self, key: str, fields: Mapping[str, str]) -> None:
        """Queue an entry. It is written in order with this process's other entries, soon after."""
        ttl: int | None = None
        if key not in self._expiring:
            # Once per stream and process, not per entry: an abandoned stream (worker died) still goes away.
            if len(self._expiring) > 10_000:
                self._expiring.clear()
            self._expiring.add(key)
            ttl = OPEN_TTL_SECONDS
        batch = self._enqueue(key, dict(fields), ttl)
        if len(batch.commands) >= BACKLOG:
            await asyncio.shield(batch.written)

    async def close(self, key: str, fields: Mapping[str, str]) -> None:
        """Write the final entry (``done``); returns once it is stored, and with it every entry
        appended before it that could be. If some could not (Redis failed meanwhile), the final
        entry says so (``resync``), and followers take the text from the record instead."""
        self._expiring.discard(key)
        batch = self._enqueue(key, {**fields, "done": "1"}, DONE_TTL_SECONDS)
        await asyncio.shield(batch.written)

    async def flush(self) -> None:
        """Wait until everything appended so far is stored (or has failed and been logged)."""
        last = self._batch or self._inflight  # batches are written in order: the last one is enough
        if last is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(last.written)

    def _enqueue(self, key: str, fields: dict[str, str], ttl: int | None) -> _Batch:
        loop = asyncio.get_running_loop()
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(loop)
        batch.commands.append((key, fields, ttl))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_batches(), name="brandvx-event-writer")
        return batch

    async def _write_batches(self) -> None:
        while (batch := self._batch) is not None:
            self._batch = None  # what is appended from now on waits for the next round trip
            self._inflight = batch
            for key, fields, _ttl in batch.commands:
                if fields.get("done") == "1" and key in self._lost:
                    # Batches go in order, so an earlier failure for this stream is known by now.
                    self._lost.discard(key)
                    fields["resync"] = "1"
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, fields, ttl in batch.commands:
                        pipe.xadd(key, _encodable(fields), maxlen=MAXLEN, approximate=True)
                        if ttl is not None:
                            pipe.expire(key, ttl)
                    await pipe.execute()
            except Exception as exc:
                if unavailable_dependency(exc) == "redis":
                    OUTAGES["redis"].failed(exc)
                else:
                    log.warning(
                        "%d stream entries could not be written (%s)", len(batch.commands), type(exc).__name__
                    )
                for key, _fields, _ttl in batch.commands:
                    self._lost.add(key)
                    self._expiring.discard(key)  # its EXPIRE may have been in this batch
                if len(self._lost) > 10_000:
                    self._lost.clear()
                batch.written.set_exception(exc)
                batch.written.exception()  # retrieved: an append nobody waits for must not log it again
            else:
                batch.written.set_result(None)
            finally:
                self._inflight = None

    # ------------------------------------------------------------------------------------- reading

    async def follow(self, key: str, *, idle_seconds: float) -> AsyncIterator[list[Entry] | None]:
        """Every entry of the stream, in order and in batches, from its first; ``None`` after
        ``idle_seconds`` without one (the caller decides whether to keep waiting). Never ends by
        itself. A Redis failure while replaying is raised; while following, the shared reader
        reads again from where it was."""
        reader = self._reader_for_loop()
        queue: asyncio.Queue[list[Entry]] = asyncio.Queue()
        reader.queues.setdefault(key, set()).add(queue)
        try:
            last = (0, 0)
            replayed = "0-0"
            async for entries in self._replay(key):
                replayed = entries[-1][0]
                last = _order(replayed)
                yield entries
            if key not in reader.positions:
                reader.positions[key] = replayed
                await self._wake()
            else:
                # Another follower of this stream set the reader going from the end of its own
                # replay, which may be past ours (we were paused in a yield meanwhile): what lies
                # between never reaches our queue, so read it here. Later entries do.
                async for entries in self._replay(key, after=replayed):
                    fresh = [entry for entry in entries if _order(entry[0]) > last]
                    if fresh:
                        last = _order(fresh[-1][0])
                        yield fresh
            reader.ensure_running()
            while True:
                try:
                    async with asyncio.timeout(idle_seconds):
                        item = await queue.get()
                except TimeoutError:
                    yield None
                    continue
                fresh = [entry for entry in item if _order(entry[0]) > last]
                if fresh:
                    last = _order(fresh[-1][0])
                    yield fresh
        finally:
            queues = reader.queues.get(key)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del reader.queues[key]
                    reader.positions.pop(key, None)

    async def _replay(self, key: str, *, after: str | None = None) -> AsyncIterator[list[Entry]]:
        start = "-" if after is None else "(" + after
        while True:
            entries = _entries(await self._redis.xrange(key, min=start, max="+", count=READ_COUNT))
            if not entries:
                return
            yield entries
            if len(entries) < READ_COUNT:
                return
            start = "(" + entries[-1][0]

    async def _wake(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=16, approximate=False)
            pipe.expire(self._wake_key, WAKE_TTL_SECONDS)
            await pipe.execute()

    def _reader_for_loop(self) -> _Reader:
        loop = asyncio.get_running_loop()
        if self._reader is None or self._reader.loop is not loop:
            self._reader = _Reader(self._redis, self._wake_key, self.reader_name)
        return self._reader

    async def aclose(self) -> None:
        """Write what is queued and stop the reader (before the Redis client is closed)."""
        await self.flush()
        reader, self._reader = self._reader, None
        if reader is not None and reader.task is not None and reader.loop is asyncio.get_running_loop():
            reader.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader.task


class ChatReplyFeed:
    """Implements domain.ai.ReplyFeed over EventStreams.

    Every event it yields continues the last: ``text == previous text + delta``. Delta entries carry
    their offset in the reply (``o``); when one starts past the text so far, entries were lost
    (written while Redis was unreachable, or Redis came back empty), and the feed stops taking
    deltas: it yields ``None`` (the caller finishes the reply from the record, from the offset the
    subscriber already has) and keeps following only to learn when the reply ends."""

    def __init__(self, streams: EventStreams) -> None:
        self._streams = streams

    async def follow(self, message_id: str, *, idle_seconds: float) -> AsyncIterator[ReplyEvent | None]:
        text = ""
        gap = False
        key = self._streams.chat_key(message_id)
        async for entries in self._streams.follow(key, idle_seconds=idle_seconds):
            if entries is None:
                yield None  # silence: the caller checks the record, then keeps waiting or stops
                continue
            # Entries that arrived together leave as one event: under load that is fewer, not later, events.
            # The final entry still leaves as an event of its own, so "done" always looks the same.
            delta = ""
            had_gap = gap
            for _entry_id, fields in entries:
                done = fields.get("done") == "1"
                if not gap:
                    piece = _continuation(fields, len(text) + len(delta))
                    if piece is None:
                        gap = True
                    elif not done:
                        delta += piece
                        continue
                if not done:
                    continue
                if delta:
                    text += delta
                    yield ReplyEvent(delta=delta, text=text, done=False, error=None)
                if gap or fields.get("resync") == "1":
                    # Some deltas never reached the stream: the caller finishes from the record.
                    yield None
                    return
                final = fields.get("d", "")
                text += final
                yield ReplyEvent(delta=final, text=text, done=True, error=fields.get("error") or None)
                return
            if delta:
                text += delta
                yield ReplyEvent(delta=delta, text=text, done=False, error=None)
            if gap and not had_gap:
                log.info(
                    "reply %s: stream entries were lost; it will be finished from the record", message_id
                )
                yield None


def _continuation(fields: Mapping[str, str], length: int) -> str | None:
    """The part of an entry's delta that continues a text of ``length`` characters; None if the
    entry starts past it (a gap). Entries without an offset (older workers) are taken as they come."""
    piece = fields.get("d", "")
    offset = fields.get("o")
    if offset is None or not offset.isdigit():
        return piece
    start = int(offset)
    if start > length:
        return None
    return piece[length - start :]  # an entry written twice adds only what is new


class JobEventFeed:
    """Implements domain.jobs.JobEvents: change notices for a job, read from its stream."""

    def __init__(self, streams: EventStreams) -> None:
        self._streams = streams

    async def follow(self, job_id: str, *, idle_seconds: float) -> AsyncIterator[bool]:
        key = self._streams.job_key(job_id)
        async for entries in self._streams.follow(key, idle_seconds=idle_seconds):
            if entries is None:
                yield False
                continue
            yield True
            if any(fields.get("done") == "1" for _, fields in entries):
                return
