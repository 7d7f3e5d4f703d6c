"""Enqueueing ARQ jobs from the API (after commit) and from other jobs."""

from __future__ import annotations

import asyncio
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings


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

    async def enqueue(self, function: str, *args: Any, job_id: str | None = None) -> None:
        pool = await self._get_pool()
        await pool.enqueue_job(function, *args, _job_id=job_id)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
