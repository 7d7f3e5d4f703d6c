"""AskVX jobs: stream a reply, write a strategy document, purge old messages, fail stuck replies."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Histogram

from domain import askvx, jobs, prompts
from domain.ai import ModelError, PromptMessage, TextDelta, Usage
from jobs.context import WorkerContext, WorkerRuntime
from jobs.recovery import db_retry, job_heartbeat, reply_heartbeat
from persistence.askvx_repos import tenant_ids
from persistence.recovery import RecoveryRepo

log = logging.getLogger("brandvx.jobs.askvx")

AI_CHAT_USED = Counter("ai_chat_used_total", "AskVX replies produced", ["tenant_plan"])
AI_FIRST_TOKEN = Histogram(
    "ai_reply_first_token_seconds",
    "Time from job start to the first text delta",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30),
)
AI_TOTAL = Histogram(
    "ai_reply_seconds",
    "Time from job start to the end of the reply",
    buckets=(0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
AI_ERRORS = Counter("ai_reply_errors_total", "AskVX replies that failed", ["kind"])

STUCK_AFTER = timedelta(minutes=10)
_FINISH_LOCKS: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = weakref.WeakValueDictionary()


def _finishing(tenant: uuid.UUID) -> asyncio.Lock:
    lock = _FINISH_LOCKS.get(tenant)
    if lock is None:
        lock = _FINISH_LOCKS[tenant] = asyncio.Lock()
    return lock


SYSTEM_ROLE = "SYSTEM"


async def askvx_reply(ctx: WorkerContext, tenant_id: str, message_id: str) -> str:
    rt = ctx["runtime"]
    tenant, message = uuid.UUID(tenant_id), uuid.UUID(message_id)
    async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
        work = await askvx.prepare_reply(uow, tenant, message)
        plan = (await uow.usage.current(tenant)).plan.tier.value if work else ""
        if work is not None:
            # Started: from now on the reconciler never enqueues it again (a second run would
            # repeat text); if the heartbeats stop, it fails the reply instead.
            await RecoveryRepo(uow.connection).beat_reply(message)
    if work is None:
        return "already answered"
    async with reply_heartbeat(rt, tenant, message):
        return await _stream_reply(rt, tenant_id, tenant, message, work, plan)


async def _stream_reply(
    rt: WorkerRuntime, tenant_id: str, tenant: uuid.UUID, message: uuid.UUID, work: askvx.ReplyWork, plan: str
) -> str:
    message_id = str(message)
    key = rt.events.chat_key(message_id)
    started = time.perf_counter()
    parts: list[str] = []
    written = 0
    usage: Usage | None = None
    error: ModelError | None = None
    try:
        async with asyncio.timeout(rt.settings.ai_timeout_seconds):
            async for item in rt.model.stream(work.prompt):
                if isinstance(item, TextDelta):
                    if not parts:
                        AI_FIRST_TOKEN.observe(time.perf_counter() - started)
                    # "o": where the delta starts in the reply, so a follower can tell a gap
                    # (entries lost while Redis was away) from the next piece of text.
                    await rt.events.append(key, {"d": item.text, "o": str(written)})
                    parts.append(item.text)
                    written += len(item.text)
                else:
                    usage = item
    except ModelError as exc:
        error = exc
    except TimeoutError:
        error = ModelError("timeout", "The AI provider took too long to answer. Try again.")
    if error is None and usage is None:
        error = ModelError("cut", "The AI provider's reply was cut off.")
    text = "".join(parts)
    elapsed = time.perf_counter() - started
    AI_TOTAL.observe(elapsed)
    properties: dict[str, str | int | float | bool] = {
        "model": rt.model.name,
        "plan": plan,
        "latency_ms": round(elapsed * 1000),
        "offline": rt.model.offline,
    }
    if error is not None:
        failed = error

        async def fail() -> None:
            async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
                await askvx.fail_reply(uow, message, text=text, error=failed.message)

        await db_retry(fail)
        await rt.events.close(key, {"error": error.message})
        AI_ERRORS.labels(error.kind).inc()
        rt.analytics.capture(tenant_id, "ask.response_error", {**properties, "error_kind": error.kind})
        return f"failed: {error.kind}"
    assert usage is not None
    # One finish per tenant at a time in this process: the others would only wait in PostgreSQL for
    # the tenant's usage and summary rows, each holding a pooled connection meanwhile; when a burst of
    # replies ended together that drained the pool, and every overflow connection opened and closed
    # again cost far more than the finish (bench/README.md, askvx_latency).
    used = usage

    async def finish() -> None:
        async with _finishing(tenant), rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
            await askvx.finish_reply(uow, tenant, work, text=text, usage=used, model=rt.model.name)

    # The text exists only in this process until this commits: ride out a PostgreSQL restart.
    await db_retry(finish)
    # The record is committed before subscribers hear "done", so a reload after "done" sees COMPLETE.
    await rt.events.close(key, {})
    AI_CHAT_USED.labels(plan).inc()
    rt.analytics.capture(
        tenant_id,
        "ask.response_completed",
        {**properties, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
    )
    return "complete"


async def generate_strategy(ctx: WorkerContext, tenant_id: str, job_id: str, goals: str | None) -> str:
    rt = ctx["runtime"]
    tenant, job = uuid.UUID(tenant_id), uuid.UUID(job_id)
    key = rt.events.job_key(job_id)

    async def report(fraction: float, message: str) -> None:
        async def write() -> None:
            async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
                await jobs.progress(uow, job, fraction, message)

        await db_retry(write)
        await rt.events.append(key, {"progress": f"{fraction:.3f}", "message": message})

    async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
        started = await jobs.start(uow, job, "Reading your brand profile and TrainVX")
        if started is None:
            return "already finished"
        if goals is None:  # the outbox carries ids only: the goals wait in the job's row
            goals = str((await uow.jobs.args_of(job)).get("goals") or "") or None
        settings = await uow.settings.get(tenant)
        memories = await uow.memories.trainvx()
    await rt.events.append(key, {"progress": "0.050", "message": "Reading your brand profile and TrainVX"})
    base = askvx.build_prompt(settings, memories, "", [])
    request = prompts.STRATEGY_PROMPT.format(goals=(goals or "").strip() or prompts.NO_GOALS)
    prompt = [*base, PromptMessage("user", request)]
    parts: list[str] = []
    last_report = time.monotonic()
    failure: str | None = None
    async with job_heartbeat(rt, tenant, job):
        try:
            async with asyncio.timeout(rt.settings.ai_timeout_seconds):
                async for item in rt.model.stream(prompt):
                    if isinstance(item, TextDelta):
                        parts.append(item.text)
                        if time.monotonic() - last_report > 1.0:
                            last_report = time.monotonic()
                            written = sum(len(p) for p in parts)
                            # Strategy documents run to a few thousand characters; progress is an estimate.
                            await report(min(0.9, 0.1 + written / 6000), "Writing the strategy")
        except (ModelError, TimeoutError) as exc:
            failure = (
                exc.message if isinstance(exc, ModelError) else "The AI provider took too long to answer."
            )
        document = "".join(parts)

        async def finish() -> None:
            async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
                if failure is not None:
                    await jobs.fail(uow, job, failure)
                    return
                artifact = await uow.artifacts.add(
                    tenant_id=tenant, kind="strategy", content=document, job_id=job
                )
                await jobs.complete(
                    uow,
                    job,
                    {"artifactId": str(artifact), "kind": "strategy", "characters": len(document)},
                    "Done",
                )

        await db_retry(finish)
    if failure is not None:
        await rt.events.close(key, {"status": "FAILED", "error": failure})
        return "failed"
    await rt.events.close(key, {"status": "COMPLETED", "progress": "1"})
    return "complete"


async def askvx_retention(ctx: WorkerContext) -> int:
    """Delete AskVX messages older than the retention period, tenant by tenant."""
    rt = ctx["runtime"]
    cutoff = datetime.now(UTC) - timedelta(days=rt.settings.askvx_retention_days)
    return await each_tenant(ctx, lambda uow: uow.chat.purge_before(cutoff))


async def askvx_sweep(ctx: WorkerContext) -> int:
    """A reply still STREAMING long after any job could run (worker killed, enqueue lost) is failed."""
    older_than = datetime.now(UTC) - STUCK_AFTER
    return await each_tenant(
        ctx,
        lambda uow: uow.chat.fail_stale(older_than=older_than, error="The reply was interrupted. Ask again."),
    )


async def each_tenant(ctx: WorkerContext, action: Any) -> int:
    rt = ctx["runtime"]
    async with rt.db.engine.connect() as conn:
        ids = await tenant_ids(conn)
    total = 0
    for tenant in ids:
        async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
            total += await action(uow)
    if total:
        log.info("%s: %d rows across %d tenants", getattr(action, "__name__", "cron"), total, len(ids))
    return total
