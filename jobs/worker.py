"""ARQ worker: settings, startup/shutdown, and the jobs it runs."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, TypedDict

from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker

log = logging.getLogger("brandvx.worker")

HEARTBEAT_TTL_SECONDS = 30


class WorkerContext(TypedDict, total=False):
    redis: Any
    heartbeat_key: str
    worker_id: str


def heartbeat_key(key_prefix: str) -> str:
    return key_prefix + "worker:heartbeat"


async def heartbeat(ctx: WorkerContext) -> None:
    """Proves to /health that a worker is not only alive but executing jobs."""
    await ctx["redis"].set(
        ctx["heartbeat_key"], f"{ctx['worker_id']} {time.time():.0f}", ex=HEARTBEAT_TTL_SECONDS
    )


def build_worker(
    *, redis_url: str, queue_name: str, key_prefix: str, burst: bool = False, handle_signals: bool = True
) -> Worker:
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    async def startup(ctx: WorkerContext) -> None:
        ctx["heartbeat_key"] = heartbeat_key(key_prefix)
        ctx["worker_id"] = worker_id
        await heartbeat(ctx)
        log.info("worker %s listening on %s", worker_id, queue_name)

    return Worker(
        functions=[],
        cron_jobs=[
            cron(
                heartbeat,  # type: ignore[arg-type]
                name="heartbeat",
                second={0, 10, 20, 30, 40, 50},
                unique=False,
                run_at_startup=True,
                timeout=5,
            )
        ],
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=queue_name,
        on_startup=startup,  # type: ignore[arg-type]
        health_check_interval=10,
        handle_signals=handle_signals,
        burst=burst,
        job_timeout=300,
        max_jobs=10,
        keep_result=3600,
    )
