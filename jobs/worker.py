"""ARQ worker: settings, startup/shutdown, the functions and cron jobs it runs."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

from arq import cron, func
from arq.connections import RedisSettings
from arq.worker import Worker

from jobs.askvx import askvx_reply, askvx_retention, askvx_sweep, generate_strategy
from jobs.context import WorkerContext, WorkerRuntime
from jobs.syncs import MAX_TRIES, jobs_sweep, sync_calendar, sync_inventory

log = logging.getLogger("brandvx.worker")

HEARTBEAT_TTL_SECONDS = 30
REPLY_TIMEOUT_SECONDS = 300
SYNC_TIMEOUT_SECONDS = 1800
EVERY_5_MIN = set(range(0, 60, 5))
POLL_DELAY_SECONDS = 0.05


def heartbeat_key(key_prefix: str) -> str:
    return key_prefix + "worker:heartbeat"


async def heartbeat(ctx: WorkerContext) -> None:
    """Proves to /health that a worker is not only alive but executing jobs."""
    await ctx["redis"].set(
        ctx["heartbeat_key"], f"{ctx['worker_id']} {time.time():.0f}", ex=HEARTBEAT_TTL_SECONDS
    )


def build_worker(
    *,
    redis_url: str,
    queue_name: str,
    key_prefix: str,
    make_runtime: Callable[[], Awaitable[WorkerRuntime]],
    burst: bool = False,
    handle_signals: bool = True,
    sync_timeout_seconds: int = SYNC_TIMEOUT_SECONDS,
    reply_timeout_seconds: int = REPLY_TIMEOUT_SECONDS,
) -> Worker:
    """ARQ hands a job whose worker died to another worker after the longest function timeout + 10 s,
    so the timeouts are kept to what the work needs."""
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    cron_timeout = max(5, min(60, sync_timeout_seconds, reply_timeout_seconds))

    async def startup(ctx: WorkerContext) -> None:
        ctx["runtime"] = await make_runtime()
        ctx["heartbeat_key"] = heartbeat_key(key_prefix)
        ctx["worker_id"] = worker_id
        await heartbeat(ctx)
        log.info("worker %s listening on %s", worker_id, queue_name)

    async def shutdown(ctx: WorkerContext) -> None:
        runtime = ctx.get("runtime")
        if runtime is not None:
            await runtime.close()

    return Worker(
        functions=[
            # A reply is not retried: a second run after a partial stream would repeat text. A reply
            # whose worker died is failed by the sweep, and the operator asks again.
            func(askvx_reply, name="askvx_reply", max_tries=1, timeout=reply_timeout_seconds),  # type: ignore[arg-type]
            func(generate_strategy, name="generate_strategy", max_tries=1, timeout=reply_timeout_seconds),  # type: ignore[arg-type]
            # Syncs are idempotent (upserts keyed by provider + external id): a worker killed mid-sync
            # hands the job to the next worker after its timeout, and transient errors retry with backoff.
            func(sync_calendar, name="sync_calendar", max_tries=MAX_TRIES, timeout=sync_timeout_seconds),  # type: ignore[arg-type]
            func(sync_inventory, name="sync_inventory", max_tries=MAX_TRIES, timeout=sync_timeout_seconds),  # type: ignore[arg-type]
        ],
        cron_jobs=[
            cron(
                heartbeat,  # type: ignore[arg-type]
                name="heartbeat",
                second={0, 10, 20, 30, 40, 50},
                unique=False,
                run_at_startup=True,
                timeout=5,
            ),
            # ARQ re-delivers a killed worker's jobs after the longest timeout of ANY function (cron
            # included) + 10 s: crons stay within the job timeouts; retention deletes in batches.
            cron(askvx_sweep, name="askvx_sweep", minute=EVERY_5_MIN, second=7, timeout=cron_timeout),  # type: ignore[arg-type]
            cron(jobs_sweep, name="jobs_sweep", minute=EVERY_5_MIN, second=37, timeout=cron_timeout),  # type: ignore[arg-type]
            cron(askvx_retention, name="askvx_retention", minute={17}, second=0, timeout=cron_timeout),  # type: ignore[arg-type]
        ],
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=queue_name,
        on_startup=startup,  # type: ignore[arg-type]
        on_shutdown=shutdown,  # type: ignore[arg-type]
        health_check_interval=10,
        handle_signals=handle_signals,
        burst=burst,
        job_timeout=reply_timeout_seconds,
        max_jobs=50,
        # ARQ looks for new jobs every poll_delay (default 0.5 s): an AskVX reply waited up to that
        # long before its first token. One ZRANGEBYSCORE every 50 ms costs Redis next to nothing.
        poll_delay=POLL_DELAY_SECONDS,
        keep_result=3600,
    )
