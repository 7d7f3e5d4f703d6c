"""Finishing and restarting work from PostgreSQL (the record) when Redis lost part of it.

Real PostgreSQL and Redis: a reply whose stream has a gap is finished from the record without
repeating text; the rate limit falls back to memory when Redis is unreachable; the recover_work
cron re-enqueues what the record says is queued and ends what no worker runs any more.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from sqlalchemy import text

from brandvx.runtime import Runtime, worker_runtime
from brandvx.settings import Settings
from domain.ai import ReplyEvent, Usage
from domain.model import Actor, ChatMessageStatus, ChatRole, JobStatus, Role
from jobs.context import WorkerContext, WorkerRuntime
from jobs.recovery import REPLY_LOST, WORKER_LOST, recover_work, reply_job_id, strategy_job_id, sync_job_id
from persistence.ratelimit import FallbackCostBudget, MemoryCostBudget, RedisCostBudget
from resolvers.askvx_queries import follow_reply
from resolvers.context import Context
from tests.conftest import TenantFixture, free_port


def owner_context(runtime: Runtime, tenant: TenantFixture) -> Context:
    actor = Actor(user_id=tenant.owner.id, tenant_id=uuid.UUID(tenant.uuid), role=Role.OWNER_ADMIN)
    return Context(services=runtime.app_services, actor=actor)


def assert_continuous(events: list[ReplyEvent]) -> None:
    text = ""
    for event in events:
        assert event.text == text + event.delta, events
        text = event.text


async def test_a_reply_with_lost_deltas_is_finished_from_the_record_without_repeating_text(
    runtime: Runtime, tenant: TenantFixture
) -> None:
    reply = await _reply_row(runtime, uuid.UUID(tenant.uuid))
    key = runtime.events.chat_key(str(reply))
    events: list[ReplyEvent] = []
    first_two = asyncio.Event()

    async def subscriber() -> None:
        async for event in follow_reply(owner_context(runtime, tenant), reply):
            events.append(event)
            if event.text == "One two ":
                first_two.set()

    following = asyncio.create_task(subscriber())
    # A worker's entries: "three " (offset 8) never reached Redis, and "one " arrives twice.
    await runtime.events.append(key, {"d": "One ", "o": "0"})
    await runtime.events.append(key, {"d": "One ", "o": "0"})
    await runtime.events.append(key, {"d": "two ", "o": "4"})
    await asyncio.wait_for(first_two.wait(), 10)
    await runtime.events.append(key, {"d": "four.", "o": "14"})
    async with runtime.db.transaction(tenant_id=uuid.UUID(tenant.uuid), role="SYSTEM") as uow:
        await uow.chat.complete(reply, content="One two three four.", usage=Usage(3, 4), model="m")
    await runtime.events.close(key, {})
    await asyncio.wait_for(following, 10)

    assert_continuous(events)
    # Entries read together leave as one event; none is repeated, and the rest comes from the record.
    assert "".join(e.delta for e in events) == "One two three four."
    assert events[-1].delta == "three four."
    assert events[-1].done
    assert events[-1].text == "One two three four."


async def test_a_stream_that_lost_its_start_is_taken_from_the_record(
    runtime: Runtime, tenant: TenantFixture
) -> None:
    """Redis came back empty mid-reply: the stream starts at an offset past 0."""
    reply = await _reply_row(runtime, uuid.UUID(tenant.uuid))
    key = runtime.events.chat_key(str(reply))
    await runtime.events.append(key, {"d": "later text", "o": "20"})
    async with runtime.db.transaction(tenant_id=uuid.UUID(tenant.uuid), role="SYSTEM") as uow:
        await uow.chat.complete(reply, content="Twenty characters.. later text", usage=Usage(1, 1), model="m")
    await runtime.events.close(key, {})
    events = [e async for e in follow_reply(owner_context(runtime, tenant), reply)]
    assert_continuous(events)
    assert [(e.delta, e.done) for e in events] == [("Twenty characters.. later text", True)]


# ---------------------------------------------------------------- the rate limit without Redis


async def test_the_rate_limit_falls_back_to_memory_while_redis_is_unreachable(migrated: Settings) -> None:
    live = Redis.from_url(migrated.redis_url or "")
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    try:
        size = {"maximum": 50, "restore_rate": 1.0}
        prefix = f"test-fallback-{uuid.uuid4().hex[:8]}:"
        working = FallbackCostBudget(RedisCostBudget(live, prefix, **size), MemoryCostBudget(**size))
        assert (await working.spend("tenant:a", 30)).allowed
        assert not working.using_fallback
        assert await live.exists(f"{prefix}throttle:tenant:a")

        falling_back = FallbackCostBudget(RedisCostBudget(dead, prefix, **size), MemoryCostBudget(**size))
        first = await falling_back.spend("tenant:a", 30)
        assert first.allowed
        assert falling_back.using_fallback
        # Still a limit: the process's own bucket refuses what the budget cannot pay.
        refused = await falling_back.spend("tenant:a", 30)
        assert not refused.allowed
        assert refused.retry_after_seconds > 0
    finally:
        await live.aclose()
        await dead.aclose()


# ---------------------------------------------------------------- recover_work


@pytest.fixture
async def worker_rt(migrated: Settings) -> AsyncIterator[WorkerRuntime]:
    """A worker's clients on a queue of its own (nothing else reads it)."""
    settings = migrated.model_copy(update={"redis_namespace": f"test-recover-{uuid.uuid4().hex[:8]}"})
    rt = await worker_runtime(settings)
    yield rt
    redis = Redis.from_url(migrated.redis_url or "")
    async for key in redis.scan_iter(match=settings.key_prefix + "*"):
        await redis.delete(key)
    await redis.aclose()
    await rt.close()


async def _job(
    rt: WorkerRuntime, tenant: uuid.UUID, kind: str, args: dict[str, Any], **ages: str
) -> uuid.UUID:
    """A jobs row, aged: ``status`` and SQL intervals for created_at / heartbeat_at."""
    job_id = uuid.uuid4()
    async with rt.db.transaction(tenant_id=tenant, role="SYSTEM") as uow:
        await uow.jobs.add(job_id, tenant_id=tenant, kind=kind, dedupe_key=None, args=args)
        await uow.connection.execute(
            text(
                "UPDATE jobs SET status = :status, attempts = :attempts, "
                "created_at = now() - CAST(CAST(:created AS text) AS interval), "
                "updated_at = now() - CAST(CAST(:created AS text) AS interval), "
                "heartbeat_at = now() - CAST(CAST(:beat AS text) AS interval) WHERE id = :id"
            ),
            {
                "status": ages.get("status", "PENDING"),
                "attempts": int(ages.get("attempts", "0")),
                "created": ages.get("created", "1 minute"),
                "beat": ages.get("beat", "1 minute"),
                "id": job_id,
            },
        )
    return job_id


async def _reply_row(rt: WorkerRuntime | Runtime, tenant: uuid.UUID) -> uuid.UUID:
    """A reply STREAMING in the record that was never enqueued anywhere (Redis lost it): made here,
    not through the API, so that no worker of another test's stack runs it meanwhile."""
    async with rt.db.transaction(tenant_id=tenant, role="SYSTEM") as uow:
        session = await uow.chat.add_session(uuid.uuid4(), tenant_id=tenant, user_id="u", title="t")
        reply = await uow.chat.add_message(
            uuid.uuid4(),
            session_id=session.id,
            role=ChatRole.ASSISTANT,
            content="",
            status=ChatMessageStatus.STREAMING,
        )
    return reply.id


async def _queued(rt: WorkerRuntime, arq_id: str) -> bool:
    pool = await rt.queue._get_pool()  # type: ignore[attr-defined]
    return await pool.zscore(rt.queue._queue_name, arq_id) is not None  # type: ignore[attr-defined]


async def test_recover_work_restarts_what_the_record_says_is_queued_or_dead(
    worker_rt: WorkerRuntime, runtime: Runtime, tenant: TenantFixture
) -> None:
    rt, tid = worker_rt, uuid.UUID(tenant.uuid)
    queued_sync = await _job(rt, tid, "calendar_sync", {"providers": ["SQUARE"]})
    fresh_sync = await _job(rt, tid, "inventory_sync", {"providers": ["SQUARE"]}, created="1 second")
    queued_strategy = await _job(rt, tid, "strategy", {"goals": "More rebookings"})
    dead_sync = await _job(
        rt, tid, "calendar_sync", {"providers": ["GOOGLE"]}, status="RUNNING", attempts="1"
    )
    spent_sync = await _job(
        rt, tid, "calendar_sync", {"providers": ["APPLE"]}, status="RUNNING", attempts="5"
    )
    live_sync = await _job(
        rt, tid, "calendar_sync", {"providers": ["ACUITY"]}, status="RUNNING", beat="5 seconds"
    )
    dead_strategy = await _job(rt, tid, "strategy", {"goals": None}, status="RUNNING", attempts="1")
    # The dead run's ARQ job is still marked in progress (its worker was killed).
    pool = await rt.queue._get_pool()  # type: ignore[attr-defined]
    await pool.set(in_progress_key_prefix + sync_job_id(dead_sync), b"1", ex=600)

    never_started = await _reply_row(rt, tid)
    silent_reply = await _reply_row(rt, tid)
    async with rt.db.transaction(tenant_id=tid, role="SYSTEM") as uow:
        await uow.connection.execute(
            text("UPDATE askvx_messages SET created_at = now() - interval '1 minute' WHERE id = ANY(:ids)"),
            {"ids": [never_started, silent_reply]},
        )
        await uow.connection.execute(
            text("UPDATE askvx_messages SET heartbeat_at = now() - interval '1 minute' WHERE id = :id"),
            {"id": silent_reply},
        )

    ctx: WorkerContext = {"runtime": rt}
    await recover_work(ctx)

    assert await _queued(rt, sync_job_id(queued_sync))
    assert await _queued(rt, strategy_job_id(queued_strategy))
    assert await _queued(rt, sync_job_id(dead_sync))
    assert await _queued(rt, reply_job_id(never_started))
    assert not await _queued(rt, sync_job_id(fresh_sync))  # the API enqueues it itself
    assert not await _queued(rt, sync_job_id(live_sync))
    assert not await _queued(rt, reply_job_id(silent_reply))  # a second run would repeat text
    assert not await pool.exists(in_progress_key_prefix + sync_job_id(dead_sync))

    async with rt.db.transaction(tenant_id=tid, role="SYSTEM") as uow:
        retried, spent, live, strategy = [
            await uow.jobs.get(j) for j in (dead_sync, spent_sync, live_sync, dead_strategy)
        ]
        silent = await uow.chat.message(silent_reply)
    assert retried is not None
    assert retried.status is JobStatus.PENDING
    assert retried.message == f"{WORKER_LOST}; retrying (attempt 2 of 5)"
    assert spent is not None
    assert spent.status is JobStatus.FAILED
    assert live is not None
    assert live.status is JobStatus.RUNNING
    assert strategy is not None
    assert strategy.status is JobStatus.FAILED
    assert silent is not None
    assert silent.status is ChatMessageStatus.FAILED
    assert silent.error == REPLY_LOST

    # Subscribers hear it: the failed job's stream and the failed reply's stream are closed.
    redis = Redis.from_url(runtime.settings.redis_url or "")
    try:
        [(_, job_end)] = await redis.xrange(rt.events.job_key(str(dead_strategy)))
        assert job_end[b"done"] == b"1"
        assert job_end[b"status"] == b"FAILED"
        [(_, reply_end)] = await redis.xrange(rt.events.chat_key(str(silent_reply)))
        assert reply_end[b"done"] == b"1"
        assert reply_end[b"error"] == REPLY_LOST.encode()
    finally:
        await redis.aclose()

    # Idempotent: a second pass adds nothing to the queue (ARQ ids are deterministic).
    before = await pool.zcard(rt.queue._queue_name)  # type: ignore[attr-defined]
    await recover_work(ctx)
    assert await pool.zcard(rt.queue._queue_name) == before  # type: ignore[attr-defined]

    # Leave nothing for other stacks' reconcilers (they share this database): end the work, and
    # drop ARQ's job keys, which are not under this test's namespace.
    async with rt.db.transaction(tenant_id=tid, role="SYSTEM") as uow:
        await uow.connection.execute(
            text("UPDATE jobs SET status = 'CANCELLED' WHERE status IN ('PENDING', 'RUNNING')")
        )
        await uow.connection.execute(
            text("UPDATE askvx_messages SET status = 'FAILED' WHERE status = 'STREAMING'")
        )
    for arq_id in (
        sync_job_id(queued_sync),
        strategy_job_id(queued_strategy),
        sync_job_id(dead_sync),
        reply_job_id(never_started),
    ):
        await rt.queue.forget(arq_id)
