"""The outbox's guarantees, on the real database and the real ARQ queue in Redis.

A crash between a commit and its relay is reproduced by the state it leaves: the row is committed
and the writer's after-commit relay never ran (a relay whose fast path does nothing stands for the
process that died there); a restarted relay must then hand it on, once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import text

from brandvx.runtime import Runtime
from domain.jobs import JobQueue
from persistence.outbox import OutboxItem, OutboxRelay

PROBE = "outbox_probe"  # no worker knows this function: nothing runs it


class Recording:
    """The real ARQ queue, with a record of every enqueue it answered."""

    def __init__(self, inner: JobQueue) -> None:
        self._inner = inner
        self.answers: list[tuple[str | None, bool]] = []

    async def enqueue(self, function: str, *args: Any, job_id: str | None = None) -> bool:
        answer = await self._inner.enqueue(function, *args, job_id=job_id)
        self.answers.append((job_id, answer))
        return answer

    def queued(self, key: str) -> int:
        return sum(1 for job_id, answer in self.answers if job_id == key and answer)


class Broken:
    async def enqueue(self, function: str, *args: Any, job_id: str | None = None) -> bool:
        raise ConnectionError("queue unreachable")


class DiesBeforeRelay(OutboxRelay):
    """The writer's fast path that never runs: its process died right after the commit."""

    async def relay_now(self, items: Sequence[OutboxItem]) -> None:
        return None


@pytest.fixture
def rt(standalone_runtime: Runtime) -> Runtime:
    return standalone_runtime


@pytest.fixture
def key() -> str:
    return f"outbox-test:{uuid.uuid4()}"


@pytest.fixture
async def cleanup(rt: Runtime, key: str) -> AsyncIterator[None]:
    yield
    queue_name = rt.settings.arq_queue
    await rt.redis.delete(f"arq:job:{key}", f"arq:result:{key}")
    await rt.redis.zrem(queue_name, key)


async def in_arq(rt: Runtime, key: str) -> bool:
    """ARQ holds the job: queued (its job key) or already taken by a worker of this queue, which
    cannot run the probe and keeps a failed result under the same id."""
    return bool(await rt.redis.exists(f"arq:job:{key}", f"arq:result:{key}"))


async def row_of(rt: Runtime, key: str) -> Any:
    async with rt.db.engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT attempts, relayed_at FROM outbox WHERE idempotency_key = :k"), {"k": key}
            )
        ).one_or_none()


async def write_after_crash(rt: Runtime, key: str) -> None:
    """Commit an outbox row whose writer dies before relaying it."""
    live = rt.db.relay
    assert live is not None
    rt.db.relay = DiesBeforeRelay(rt.db.engine, rt.queue, queue_name=live.queue_name)
    try:
        async with rt.db.transaction() as uow:
            assert await uow.outbox.enqueue_job(PROBE, "tenant", "job", key=key)
    finally:
        rt.db.relay = live


def restarted(rt: Runtime, queue: JobQueue, **kwargs: Any) -> OutboxRelay:
    return OutboxRelay(rt.db.engine, queue, queue_name=rt.settings.arq_queue, **kwargs)


@pytest.mark.usefixtures("cleanup")
async def test_rollback_relays_nothing(rt: Runtime, key: str) -> None:
    class Boom(Exception):
        pass

    async def write_then_fail() -> None:
        async with rt.db.transaction() as uow:
            assert await uow.outbox.enqueue_job(PROBE, "tenant", "job", key=key)
            raise Boom

    with pytest.raises(Boom):
        await write_then_fail()
    assert await row_of(rt, key) is None
    queue = Recording(rt.queue)
    await restarted(rt, queue).relay_once(ahead_seconds=3600)
    assert queue.queued(key) == 0
    assert not await in_arq(rt, key)


@pytest.mark.usefixtures("cleanup")
async def test_commit_then_crash_is_relayed_once_on_restart(rt: Runtime, key: str) -> None:
    await write_after_crash(rt, key)
    row = await row_of(rt, key)
    assert row is not None
    assert row.relayed_at is None
    assert not await in_arq(rt, key)  # nothing reached ARQ before the "crash"

    queue = Recording(rt.queue)
    relay = restarted(rt, queue)
    await relay.relay_once(ahead_seconds=3600)  # the row waits out the fast path's grace otherwise
    await relay.relay_once(ahead_seconds=3600)
    assert queue.queued(key) == 1
    assert await in_arq(rt, key)
    row = await row_of(rt, key)
    assert row is not None
    assert row.relayed_at is not None
    assert row.attempts == 1


@pytest.mark.usefixtures("cleanup")
async def test_relayed_twice_is_queued_once(rt: Runtime, key: str) -> None:
    await write_after_crash(rt, key)
    queue = Recording(rt.queue)
    first, second = restarted(rt, queue), restarted(rt, queue)
    async with rt.db.engine.connect() as conn:
        row_id = (
            await conn.execute(text("SELECT id FROM outbox WHERE idempotency_key = :k"), {"k": key})
        ).scalar_one()
    # The fast path and two relay loops all hand on the same row at once.
    await asyncio.gather(
        first.relay_now([OutboxItem(row_id, PROBE, ["tenant", "job"], key)]),
        first.relay_once(ahead_seconds=3600),
        second.relay_once(ahead_seconds=3600),
    )
    attempts = [answer for job_id, answer in queue.answers if job_id == key]
    assert attempts.count(True) == 1, attempts  # ARQ's job id is the row's key: a repeat is refused
    assert await in_arq(rt, key)


@pytest.mark.usefixtures("cleanup")
async def test_final_failure_is_a_dead_letter(rt: Runtime, key: str) -> None:
    await write_after_crash(rt, key)
    relay = restarted(rt, Broken(), max_attempts=2)
    await relay.relay_once(ahead_seconds=3600)
    row = await row_of(rt, key)
    assert row is not None
    assert (row.attempts, row.relayed_at) == (1, None)  # retried later, with backoff
    await relay.relay_once(ahead_seconds=3600)
    assert await row_of(rt, key) is None
    async with rt.db.engine.connect() as conn:
        dead = (
            await conn.execute(
                text("SELECT kind, attempts, reason FROM dead_letters WHERE idempotency_key = :k"), {"k": key}
            )
        ).one()
    assert (dead.kind, dead.attempts) == (PROBE, 2)
    assert "enqueue failed: ConnectionError" in dead.reason
