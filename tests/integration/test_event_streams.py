"""Redis Streams transport on a real Redis: one writer and one reader per process, nothing lost."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from brandvx.settings import Settings
from persistence.events import ChatReplyFeed, Entry, EventStreams


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    assert settings.redis_url
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def streams(redis: Redis) -> AsyncIterator[EventStreams]:
    events = EventStreams(redis, f"test-events-{uuid.uuid4().hex[:8]}:")
    yield events
    await events.aclose()


async def stored(redis: Redis, key: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in await redis.xrange(key)]


async def collect(streams: EventStreams, key: str, *, idle: float = 5.0) -> list[dict[str, str]]:
    """Every entry until the final one; fails on a silence of ``idle`` seconds."""
    seen: list[Entry] = []
    async for entries in streams.follow(key, idle_seconds=idle):
        assert entries is not None, f"silence after {len(seen)} entries"
        seen.extend(entries)
        if seen[-1][1].get("done") == "1":
            break
    ids = [entry_id for entry_id, _ in seen]
    assert len(ids) == len(set(ids)), "an entry was handed out twice"
    return [fields for _, fields in seen]


async def test_concurrent_appends_land_in_order_and_close_waits_for_them(
    streams: EventStreams, redis: Redis
) -> None:
    keys = [streams.chat_key(f"m{i}") for i in range(20)]

    async def reply(key: str) -> None:
        for n in range(30):
            await streams.append(key, {"d": f"{n} "})
            await asyncio.sleep(0)  # interleave with the other replies, as concurrent jobs do
        await streams.close(key, {})

    await asyncio.gather(*(reply(key) for key in keys))
    # close() returned, so every entry before it is stored, in order, for every reply.
    for key in keys:
        assert await stored(redis, key) == [{"d": f"{n} "} for n in range(30)] + [{"done": "1"}]
        assert 0 < await redis.ttl(key) <= 3600


async def test_open_streams_expire_so_an_abandoned_one_goes_away(streams: EventStreams, redis: Redis) -> None:
    key = streams.job_key("abandoned")
    await streams.append(key, {"progress": "0.1"})
    await streams.flush()
    assert await stored(redis, key) == [{"progress": "0.1"}]
    assert 3600 < await redis.ttl(key) <= 6 * 3600


async def blocked_readers(redis: Redis) -> int:
    """Connections whose last command was XREAD: a reader per follower would add one each. Other
    clients of a shared server (workers polling, other suites) come and go and are not counted."""
    return sum(1 for client in await redis.client_list() if client.get("cmd") == "xread")


async def test_many_followers_share_one_redis_connection(streams: EventStreams, redis: Redis) -> None:
    before = await blocked_readers(redis)
    keys = [streams.chat_key(f"f{i}") for i in range(30)]
    followers = [asyncio.create_task(collect(streams, key)) for key in keys]
    await asyncio.sleep(0.3)  # all registered and blocked in the shared read
    during = await blocked_readers(redis)
    for n in range(3):
        for key in keys:
            await streams.append(key, {"d": str(n)})
    for key in keys:
        await streams.close(key, {})
    results = await asyncio.gather(*followers)
    assert all(result == [{"d": "0"}, {"d": "1"}, {"d": "2"}, {"done": "1"}] for result in results)
    # One blocking reader for thirty followers (a connection per follower would add thirty).
    assert during - before <= 3
    assert [c["name"] for c in await redis.client_list()].count(streams.reader_name) == 1


async def test_a_late_follower_gets_the_replay_then_the_rest(streams: EventStreams) -> None:
    key = streams.chat_key("late")
    first = asyncio.create_task(collect(streams, key))
    for n in range(5):
        await streams.append(key, {"d": str(n)})
    await streams.flush()
    await asyncio.sleep(0.1)  # the first follower has read them: the stream is followed already
    second = asyncio.create_task(collect(streams, key))
    for n in range(5, 10):
        await streams.append(key, {"d": str(n)})
        await asyncio.sleep(0.01)
    await streams.close(key, {"error": "none"})
    expected = [{"d": str(n)} for n in range(10)] + [{"done": "1", "error": "none"}]
    assert await first == expected
    assert await second == expected


async def test_a_follower_reports_silence(streams: EventStreams) -> None:
    key = streams.chat_key("quiet")
    events = streams.follow(key, idle_seconds=0.2)
    assert await anext(events) is None
    await streams.append(key, {"d": "x"})
    assert [fields for _, fields in (await anext(events) or [])] == [{"d": "x"}]
    await events.aclose()


async def test_the_reader_survives_a_dropped_connection(streams: EventStreams, redis: Redis) -> None:
    key = streams.chat_key("dropped")
    follower = asyncio.create_task(collect(streams, key, idle=10))
    await streams.append(key, {"d": "before"})
    await asyncio.sleep(0.3)
    [reader] = [c for c in await redis.client_list() if c["name"] == streams.reader_name]
    assert await redis.client_kill_filter(_id=reader["id"]) == 1
    await streams.append(key, {"d": "after"})
    await streams.close(key, {})
    assert await follower == [{"d": "before"}, {"d": "after"}, {"done": "1"}]


async def test_a_follower_paused_in_its_replay_misses_nothing(streams: EventStreams) -> None:
    """A second follower of the same stream starts the reader from the end of its own replay,
    past what the first (still paused in its replay) has seen: the first reads the gap itself."""
    key = streams.chat_key("paused")
    for n in range(3):
        await streams.append(key, {"d": str(n)})
    await streams.flush()
    slow = streams.follow(key, idle_seconds=5)
    seen_slow = [fields["d"] for _, fields in (await anext(slow) or [])]  # the replay; then busy
    for n in range(3, 6):
        await streams.append(key, {"d": str(n)})
    await streams.flush()
    fast = asyncio.create_task(collect(streams, key))
    await asyncio.sleep(0.2)  # the fast follower replayed 0..5 and set the reader going from 5
    for n in range(6, 9):
        await streams.append(key, {"d": str(n)})
    await streams.close(key, {})
    async for entries in slow:
        assert entries is not None
        seen_slow += [fields.get("d", "done") for _, fields in entries]
        if seen_slow[-1] == "done":
            break
    await slow.aclose()
    assert seen_slow == [str(n) for n in range(9)] + ["done"]
    assert [fields.get("d", "done") for fields in await fast] == [str(n) for n in range(9)] + ["done"]


async def test_entries_that_could_not_be_written_make_the_final_one_say_resync(
    streams: EventStreams, redis: Redis
) -> None:
    key = streams.chat_key("blip")
    await redis.set(key, "not a stream")  # XADD fails with WRONGTYPE: a real Redis error
    await streams.append(key, {"d": "Hello, "})
    await streams.flush()
    await redis.delete(key)
    await streams.append(key, {"d": "world"})
    await streams.flush()
    # The stream's expiry went out with the failed batch: it is sent again with the next entry.
    assert 3600 < await redis.ttl(key) <= 6 * 3600
    await streams.close(key, {})
    assert await stored(redis, key) == [{"d": "world"}, {"done": "1", "resync": "1"}]

    # A reply feed hands over to the record (None: the caller reads it) instead of a holed text.
    events = [event async for event in ChatReplyFeed(streams).follow("blip", idle_seconds=5)]
    assert [e.delta if e else None for e in events] == ["world", None]
