"""Enqueueing ARQ jobs from the API (after commit) and from other jobs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from redis.exceptions import RedisError

log = logging.getLogger("brandvx.jobs.queue")

WAKE_BACKLOG = 1_000  # wake-ups kept for workers that are busy or down; the queue itself keeps the jobs


def wake_key(queue_name: str) -> str:
    """A list of job ids just enqueued: idle workers BLPOP it and start the job at once."""
    return f"{queue_name}:wake"


class ArqQueue:
    """Implements domain.jobs.JobQueue. The pool is made on first use, inside the running loop."""

    def __init__(self, redis_url: str, queue_name: str) -> None:
        self._settings = RedisSettings.from_dsn(redis_url)
        self._queue_name = queue_name
        self._pool: ArqRedis | None = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> ArqRedis:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(self._settings, default_queue_name=self._queue_name)
            return self._pool

    async def enqueue(self, function: str, *args: Any, job_id: str | None = None) -> bool:
        """False when ARQ already has a job with this id (queued, running, or its result kept)."""
        pool = await self._get_pool()
        job = await pool.enqueue_job(function, *args, _job_id=job_id)
        if job is None:
            return False
        # Workers poll the queue every half second; a wake-up lets an idle one start now (an AskVX
        # reply's first token waited for that poll). Lost or late wake-ups only cost the poll delay.
        try:
            async with pool.pipeline(transaction=False) as pipe:
                pipe.rpush(wake_key(self._queue_name), job.job_id)  # BLPOP takes the oldest first
                pipe.ltrim(wake_key(self._queue_name), -WAKE_BACKLOG, -1)
                await pipe.execute()
        except RedisError as exc:  # the job is queued: without the wake-up it starts at the next poll
            log.warning("could not announce job %s (%s)", job.job_id, type(exc).__name__)
        return True

    async def forget(self, job_id: str) -> None:
        """Drop what ARQ keeps of a job whose worker is gone (its in-progress mark, retry count and
        result), so that the same id can be enqueued again now rather than after its timeout."""
        pool = await self._get_pool()
        await pool.delete(
            job_key_prefix + job_id,
            in_progress_key_prefix + job_id,
            retry_key_prefix + job_id,
            result_key_prefix + job_id,
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
