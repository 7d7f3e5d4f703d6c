"""ARQ worker: settings, startup/shutdown, the functions and cron jobs it runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from arq import create_pool, cron, func
from arq.connections import RedisSettings
from arq.worker import Worker
from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs.askvx import askvx_reply, askvx_retention, askvx_sweep, generate_strategy
from jobs.context import WorkerContext, WorkerRuntime
from jobs.queue import wake_key
from jobs.recovery import recover_work
from jobs.syncs import MAX_TRIES, jobs_sweep, sync_calendar, sync_inventory
from persistence.availability import OUTAGES, unavailable_dependency

log = logging.getLogger("brandvx.worker")

HEARTBEAT_TTL_SECONDS = 30
REPLY_TIMEOUT_SECONDS = 300
SYNC_TIMEOUT_SECONDS = 1800
EVERY_5_MIN = set(range(0, 60, 5))
POLL_DELAY_SECONDS = 0.5
MAX_JOBS = 50
WAKE_WAIT_SECONDS = 5
WAKE_BUSY_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 5.0

REDIS_AVAILABLE = Gauge("worker_redis_available", "1 while the worker's last poll of Redis worked")


def heartbeat_key(key_prefix: str) -> str:
    return key_prefix + "worker:heartbeat"


async def heartbeat(ctx: WorkerContext) -> None:
    """Proves to /health that a worker is not only alive but executing jobs."""
    await ctx["redis"].set(
        ctx["heartbeat_key"], f"{ctx['worker_id']} {time.time():.0f}", ex=HEARTBEAT_TTL_SECONDS
    )


class BrandvxWorker(Worker):
    """ARQ's worker, plus: jobs start as they are enqueued, and polls skip its own running jobs."""

    def __init__(self, *args: Any, wake_redis_url: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wake_redis_url = wake_redis_url
        self.wake_key = wake_key(self.queue_name)
        self.ready = asyncio.Event()  # set by on_startup: no job may start before its context exists
        self.redis_failures = 0  # polls failed in a row because Redis was unreachable

    async def main(self) -> None:
        # The wake task lives exactly as long as ARQ's main loop: a signal, a cancelled inline
        # worker or close() all end it here, before ARQ winds down the jobs it started.
        await self._connect()
        waker = asyncio.create_task(self._wake_on_enqueue(), name="arq-wake")
        try:
            await super().main()
        finally:
            waker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waker

    async def _connect(self) -> None:
        """ARQ gives up after a few tries when Redis is down at start: keep trying, with backoff."""
        failures = 0
        while self._pool is None:
            try:
                self._pool = await create_pool(
                    self.redis_settings,
                    job_deserializer=self.job_deserializer,
                    job_serializer=self.job_serializer,
                    default_queue_name=self.queue_name,
                    expires_extra_ms=self.expires_extra_ms,
                )
            except Exception as exc:
                if unavailable_dependency(exc) is None:
                    raise
                OUTAGES["redis"].failed(exc)
                REDIS_AVAILABLE.set(0)
                failures += 1
                await asyncio.sleep(min(MAX_BACKOFF_SECONDS, POLL_DELAY_SECONDS * 2**failures))
        REDIS_AVAILABLE.set(1)

    async def _poll_iteration(self) -> None:
        # ARQ lets a Redis error in its poll escape main(), and the process exits (code 1) whenever
        # Redis restarts. Ride it out instead: the next poll reconnects, after a growing pause.
        try:
            await super()._poll_iteration()
        except Exception as exc:
            if unavailable_dependency(exc) is None:
                raise
            OUTAGES["redis"].failed(exc)
            REDIS_AVAILABLE.set(0)
            self.redis_failures += 1
            await asyncio.sleep(min(MAX_BACKOFF_SECONDS, POLL_DELAY_SECONDS * 2**self.redis_failures))
            return
        if self.redis_failures:
            self.redis_failures = 0
            REDIS_AVAILABLE.set(1)
            OUTAGES["redis"].recovered()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # Running jobs stay in ARQ's queue until they finish, and every poll re-checks each of them
        # with a WATCH transaction (3-4 round trips a job): a burst every half second, growing with
        # the jobs in flight. This worker knows its own running ones.
        running = {job_id for job_id, task in self.tasks.items() if not task.done()}
        await super().start_jobs([job_id for job_id in job_ids if job_id.decode() not in running])

    def _stopping(self) -> bool:
        main = self.main_task
        return main is not None and (main.done() or main.cancelling() > 0)

    async def _wake_on_enqueue(self) -> None:
        """Start jobs as ArqQueue announces them instead of at the next poll.

        ``start_jobs`` is ARQ's own start path: it skips a job another worker started, a deferred
        one, or one already done, so a wake-up is only ever a hint; a lost one costs a poll delay.
        """
        await self.ready.wait()
        redis = Redis.from_url(self.wake_redis_url)
        try:
            while not self._stopping():
                if self.job_counter >= self.max_jobs:
                    await asyncio.sleep(WAKE_BUSY_SECONDS)  # leave the wake-ups to workers with room
                    continue
                try:
                    woken = await redis.blpop([self.wake_key], timeout=WAKE_WAIT_SECONDS)
                    if woken is not None and not self._stopping():
                        await self.start_jobs([woken[1]])
                except RedisError as exc:
                    log.warning("wake-ups unavailable (%s); relying on polls", type(exc).__name__)
                    await asyncio.sleep(WAKE_WAIT_SECONDS)
        finally:
            await redis.aclose()


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
    poll_delay_seconds: float = POLL_DELAY_SECONDS,
) -> BrandvxWorker:
    """ARQ hands a job whose worker died to another worker after the longest function timeout + 10 s,
    so the timeouts are kept to what the work needs."""
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def unique_cron(name: str) -> str:
        # ARQ runs a unique cron once per tick under the job id "<name>:<tick>", and its job keys are
        # not per queue: workers of another namespace on the same Redis took every tick of a plain
        # name, and this namespace's cron never ran. The namespace in the name keeps them apart.
        return f"{name}@{key_prefix}"

    cron_timeout = max(5, min(60, sync_timeout_seconds, reply_timeout_seconds))

    async def startup(ctx: WorkerContext) -> None:
        ctx["runtime"] = await make_runtime()
        relay = ctx["runtime"].db.relay
        if relay is not None:  # the outbox's safety net: relays what no fast path handed on
            ctx["relay_task"] = asyncio.create_task(relay.run(), name="outbox-relay")
        ctx["heartbeat_key"] = heartbeat_key(key_prefix)
        ctx["worker_id"] = worker_id
        await heartbeat(ctx)
        worker.ready.set()
        log.info("worker %s listening on %s", worker_id, queue_name)

    async def shutdown(ctx: WorkerContext) -> None:
        relay_task = ctx.get("relay_task")
        if relay_task is not None:
            relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay_task
        runtime = ctx.get("runtime")
        if runtime is not None:
            await runtime.close()

    worker = BrandvxWorker(
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
            cron(
                askvx_sweep,  # type: ignore[arg-type]
                name=unique_cron("askvx_sweep"),
                minute=EVERY_5_MIN,
                second=7,
                timeout=cron_timeout,
            ),
            # Lost work (Redis came back empty, a worker or job died) is started again from the record.
            cron(
                recover_work,  # type: ignore[arg-type]
                name=unique_cron("recover_work"),
                second={3, 18, 33, 48},
                timeout=cron_timeout,
            ),
            cron(
                jobs_sweep,  # type: ignore[arg-type]
                name=unique_cron("jobs_sweep"),
                minute=EVERY_5_MIN,
                second=37,
                timeout=cron_timeout,
            ),
            cron(
                askvx_retention,  # type: ignore[arg-type]
                name=unique_cron("askvx_retention"),
                minute={17},
                second=0,
                timeout=cron_timeout,
            ),
        ],
        redis_settings=RedisSettings.from_dsn(redis_url),
        queue_name=queue_name,
        on_startup=startup,
        on_shutdown=shutdown,
        health_check_interval=10,
        handle_signals=handle_signals,
        burst=burst,
        job_timeout=reply_timeout_seconds,
        max_jobs=MAX_JOBS,
        # Each poll re-checks every queued job that is still running (a few round trips each), so
        # polls stay ARQ's half second; new jobs start at once through wake_on_enqueue instead.
        poll_delay=poll_delay_seconds,
        keep_result=3600,
        wake_redis_url=redis_url,
    )
    return worker
