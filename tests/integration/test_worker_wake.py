"""A worker starts a job as soon as it is enqueued, not at its next poll of the queue."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from arq import create_pool
from arq.connections import RedisSettings
from arq.jobs import Job, JobStatus

from brandvx.runtime import worker_runtime
from brandvx.settings import Settings
from jobs.queue import ArqQueue
from jobs.worker import BrandvxWorker, build_worker


def make_worker(settings: Settings, queue_name: str, *, poll_delay_seconds: float = 0.5) -> BrandvxWorker:
    assert settings.redis_url
    return build_worker(
        redis_url=settings.redis_url,
        queue_name=queue_name,
        key_prefix=f"test-wake-{uuid.uuid4().hex[:8]}:",
        make_runtime=lambda: worker_runtime(settings),
        handle_signals=False,
        poll_delay_seconds=poll_delay_seconds,
    )


async def test_an_enqueued_job_starts_without_waiting_for_a_poll(migrated: Settings) -> None:
    assert migrated.redis_url
    queue_name = f"test-wake-{uuid.uuid4().hex[:8]}:queue"
    # Polls an hour apart: after the first one (at startup), only a wake-up can start a job.
    worker = make_worker(migrated, queue_name, poll_delay_seconds=3600)
    pool = await create_pool(RedisSettings.from_dsn(migrated.redis_url), default_queue_name=queue_name)
    queue = ArqQueue(migrated.redis_url, queue_name)
    running = asyncio.create_task(worker.async_run())
    try:
        for _ in range(300):  # the first poll has run once ARQ wrote its health check
            if await pool.exists(f"{queue_name}:health-check"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the worker did not start")

        # A reply for a message that does not exist: the job runs and finds nothing to do.
        tenant, message = str(uuid.uuid4()), str(uuid.uuid4())
        unannounced = await pool.enqueue_job("askvx_reply", tenant, str(uuid.uuid4()))
        assert unannounced is not None
        await queue.enqueue("askvx_reply", tenant, message, job_id=f"reply-{message}")

        announced = Job(f"reply-{message}", pool, _queue_name=queue_name)
        assert await announced.result(timeout=60, poll_delay=0.05) == "already answered"
        # The job enqueued without a wake-up still waits for a poll: it was the wake-up that worked.
        assert await unannounced.status() is JobStatus.queued
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.close()
        await queue.aclose()
        async for key in pool.scan_iter(match=f"{queue_name}*"):
            await pool.delete(key)
        await pool.aclose()


async def test_the_wake_task_ends_with_the_worker(migrated: Settings) -> None:
    """An inline worker is stopped by cancelling it: its wake task must not outlive it and start
    jobs for a worker that is gone."""
    worker = make_worker(migrated, f"test-wake-{uuid.uuid4().hex[:8]}:queue")
    running = asyncio.create_task(worker.async_run())
    await asyncio.wait_for(worker.ready.wait(), 60)
    assert [t for t in asyncio.all_tasks() if t.get_name() == "arq-wake" and not t.done()]
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    await worker.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "arq-wake" and not t.done()]
