"""Keeping work alive through Redis and PostgreSQL restarts.

* ``heartbeat``: a running job or reply writes a heartbeat to its row every few seconds, so a dead
  one (worker killed, job crashed on a lost connection) is noticed within about a minute.
* ``db_retry``: a job step retried while PostgreSQL is unreachable or restarting, instead of
  failing the whole job (the pool renews dead connections: ``pool_pre_ping``).
* ``recover_work``: a cron every 15 s that reads the record and starts again whatever it says is
  queued or running but no worker has: jobs PENDING (Redis came back empty), syncs whose worker went
  silent (retried, within their tries), and replies never started. Enqueueing is idempotent (ARQ
  job ids are deterministic: a job still in the queue is not doubled). A strategy or a reply whose
  worker went silent is failed instead: running it again would repeat text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, TypeVar

from domain import jobs
from domain.model import JobStatus
from jobs.context import WorkerContext, WorkerRuntime
from persistence.askvx_repos import tenant_ids
from persistence.availability import OUTAGES, unavailable_dependency
from persistence.recovery import RecoveryRepo, UnfinishedJob

log = logging.getLogger("brandvx.jobs.recovery")

HEARTBEAT_SECONDS: Final = 10.0
SILENT_AFTER: Final = timedelta(seconds=45)  # 4 missed heartbeats: the worker is gone
QUEUED_GRACE: Final = timedelta(seconds=10)  # the API enqueues right after its commit
DB_RETRY_DELAYS: Final = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # about half a minute in all
SYSTEM_ROLE: Final = "SYSTEM"
SYNC_KINDS: Final = {"calendar_sync": "sync_calendar", "inventory_sync": "sync_inventory"}
STRATEGY_KIND: Final = "strategy"
MAX_SYNC_TRIES: Final = 5
WORKER_LOST: Final = "The worker running this job stopped"
REPLY_LOST: Final = "The reply was interrupted. Ask again."

T = TypeVar("T")


def sync_job_id(job_id: uuid.UUID | str) -> str:
    return f"sync:{job_id}"


def strategy_job_id(job_id: uuid.UUID | str) -> str:
    return f"strategy:{job_id}"


def reply_job_id(message_id: uuid.UUID | str) -> str:
    return f"askvx-reply:{message_id}"


async def db_retry(step: Callable[[], Awaitable[T]], *, delays: tuple[float, ...] = DB_RETRY_DELAYS) -> T:
    """Run ``step`` (which opens its own transaction), again after a pause while PostgreSQL is
    unreachable; any other error, or the last one, is raised."""
    for delay in delays:
        try:
            return await step()
        except Exception as exc:
            if unavailable_dependency(exc) != "database":
                raise
            OUTAGES["database"].failed(exc)
        await asyncio.sleep(delay)
    return await step()


@contextlib.asynccontextmanager
async def heartbeat(beat: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Call ``beat`` every HEARTBEAT_SECONDS while the block runs (a missed beat is only logged)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await beat()
            except Exception as exc:
                if unavailable_dependency(exc) is None:
                    log.warning("heartbeat failed (%s)", type(exc).__name__)
                else:
                    OUTAGES["database"].failed(exc)

    task = asyncio.create_task(loop(), name="job-heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def job_heartbeat(
    rt: WorkerRuntime, tenant: uuid.UUID, job_id: uuid.UUID
) -> contextlib.AbstractAsyncContextManager[None]:
    return _row_heartbeat(rt, tenant, lambda repo: repo.beat_job(job_id))


def reply_heartbeat(
    rt: WorkerRuntime, tenant: uuid.UUID, message_id: uuid.UUID
) -> contextlib.AbstractAsyncContextManager[None]:
    return _row_heartbeat(rt, tenant, lambda repo: repo.beat_reply(message_id))


def _row_heartbeat(
    rt: WorkerRuntime, tenant: uuid.UUID, write: Callable[[RecoveryRepo], Awaitable[None]]
) -> contextlib.AbstractAsyncContextManager[None]:
    async def beat() -> None:
        async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
            await write(RecoveryRepo(uow.connection))

    return heartbeat(beat)


@dataclass
class _Plan:
    """What one tenant's transaction decided, done after it commits."""

    enqueue: list[tuple[str, list[Any], str]] = field(default_factory=list)  # function, args, ARQ id
    forget: list[str] = field(default_factory=list)  # ARQ ids of a dead run, cleared before enqueueing
    changed: list[str] = field(default_factory=list)  # job ids whose subscribers should look again
    ended_jobs: list[str] = field(default_factory=list)
    ended_replies: list[str] = field(default_factory=list)


def _job_call(tenant: uuid.UUID, job: UnfinishedJob) -> tuple[str, list[Any], str] | None:
    if job.kind in SYNC_KINDS:
        providers = job.args.get("providers")
        if not isinstance(providers, list) or not providers:
            return None
        return SYNC_KINDS[job.kind], [str(tenant), str(job.id), providers], sync_job_id(job.id)
    if job.kind == STRATEGY_KIND:
        return "generate_strategy", [str(tenant), str(job.id), job.args.get("goals")], strategy_job_id(job.id)
    return None


async def _plan_tenant(repo: RecoveryRepo, uow: Any, tenant: uuid.UUID) -> _Plan:
    plan = _Plan()
    for job in await repo.lost_jobs(queued_for=QUEUED_GRACE, silent_for=SILENT_AFTER):
        call = _job_call(tenant, job)
        if call is None:
            continue  # a kind this worker cannot start again: the jobs sweep ends it
        if job.status is JobStatus.PENDING:
            plan.enqueue.append(call)
        elif job.kind in SYNC_KINDS and job.attempts < MAX_SYNC_TRIES:
            message = f"{WORKER_LOST}; retrying (attempt {job.attempts + 1} of {MAX_SYNC_TRIES})"
            if await repo.requeue_job(job.id, message):
                plan.forget.append(call[2])
                plan.enqueue.append(call)
                plan.changed.append(str(job.id))
        else:
            await jobs.fail(
                uow, job.id, WORKER_LOST if job.kind in SYNC_KINDS else f"{WORKER_LOST}. Start it again."
            )
            plan.ended_jobs.append(str(job.id))
    for message_id in await repo.queued_replies(queued_for=QUEUED_GRACE):
        plan.enqueue.append(("askvx_reply", [str(tenant), str(message_id)], reply_job_id(message_id)))
    for message_id in await repo.fail_silent_replies(silent_for=SILENT_AFTER, error=REPLY_LOST):
        plan.ended_replies.append(str(message_id))
    return plan


async def recover_work(ctx: WorkerContext) -> int:
    """Start again what the record says is queued or running and no worker has (see the module)."""
    rt = ctx["runtime"]
    async with rt.db.engine.connect() as conn:
        tenants = await tenant_ids(conn)
    acted = 0
    for tenant in tenants:
        async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
            plan = await _plan_tenant(RecoveryRepo(uow.connection), uow, tenant)
        for arq_id in plan.forget:
            await rt.queue.forget(arq_id)
        for function, args, arq_id in plan.enqueue:
            if await rt.queue.enqueue(function, *args, job_id=arq_id):
                acted += 1
                log.info("re-enqueued %s (%s) from the record", arq_id, function)
        for job_id in plan.changed:
            await rt.events.append(rt.events.job_key(job_id), {"changed": "1"})
        for job_id in plan.ended_jobs:
            await rt.events.close(rt.events.job_key(job_id), {"status": "FAILED", "error": WORKER_LOST})
        for message_id in plan.ended_replies:
            await rt.events.close(rt.events.chat_key(message_id), {"error": REPLY_LOST})
        acted += len(plan.ended_jobs) + len(plan.ended_replies)
    return acted
