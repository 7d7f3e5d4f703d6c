"""Calendar and inventory syncs: page by page, checkpointed, idempotent, retried on transient errors."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from arq.worker import Retry
from prometheus_client import Counter, Histogram

from domain import connections, jobs
from domain.connections import NotConnected
from domain.model import ConnectionStatus, Provider
from domain.sync import IncompleteSync, ProviderError
from domain.syncs import SyncStats, ingest_appointments
from jobs.context import WorkerContext, WorkerRuntime
from jobs.recovery import MAX_SYNC_TRIES, db_retry, job_heartbeat
from persistence.availability import unavailable_dependency

log = logging.getLogger("brandvx.jobs.syncs")

SyncKind = Literal["calendar", "inventory"]
CALENDAR_KIND = "calendar_sync"
INVENTORY_KIND = "inventory_sync"
MAX_TRIES = MAX_SYNC_TRIES
SYSTEM_ROLE = "SYSTEM"

SYNC_RECORDS = Counter("sync_records_total", "Records fetched by syncs", ["provider", "kind"])
SYNC_SECONDS = Histogram("sync_seconds", "Duration of one provider's sync", ["provider", "kind"])


class Cancelled(Exception):
    pass


async def sync_calendar(ctx: WorkerContext, tenant_id: str, job_id: str, providers: list[str]) -> str:
    return await _run(
        ctx, "calendar", uuid.UUID(tenant_id), uuid.UUID(job_id), [Provider(p) for p in providers]
    )


async def sync_inventory(ctx: WorkerContext, tenant_id: str, job_id: str, providers: list[str]) -> str:
    return await _run(
        ctx, "inventory", uuid.UUID(tenant_id), uuid.UUID(job_id), [Provider(p) for p in providers]
    )


async def _run(
    ctx: WorkerContext, kind: SyncKind, tenant: uuid.UUID, job_id: uuid.UUID, providers: list[Provider]
) -> str:
    """One attempt, with a heartbeat on the job's row; PostgreSQL unreachable for longer than a
    step's retries (a restart mid-sync) retries the job, whose body is idempotent."""
    attempt = int(ctx.get("job_try", 1))
    try:
        async with job_heartbeat(ctx["runtime"], tenant, job_id):
            return await _attempt(ctx, kind, tenant, job_id, providers, attempt)
    except Exception as exc:
        if unavailable_dependency(exc) != "database" or attempt >= MAX_TRIES:
            raise
        delay = min(60, 2**attempt)
        log.warning(
            "sync job %s: database unavailable (%s); retrying in %d s", job_id, type(exc).__name__, delay
        )
        raise Retry(defer=timedelta(seconds=delay)) from None


async def _attempt(
    ctx: WorkerContext,
    kind: SyncKind,
    tenant: uuid.UUID,
    job_id: uuid.UUID,
    providers: list[Provider],
    attempt: int,
) -> str:
    rt = ctx["runtime"]
    key = rt.events.job_key(str(job_id))

    async def publish() -> None:
        await rt.events.append(key, {"changed": "1"})

    async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
        job = await jobs.start(uow, job_id, f"Syncing {kind} (attempt {attempt})")
    if job is None:
        return "already finished"
    await publish()
    results: dict[str, Any] = {}
    try:
        for index, provider in enumerate(providers):

            async def progress(fraction: float, message: str, _i: int = index) -> None:
                overall = 0.05 + 0.9 * (_i + min(fraction, 1.0)) / len(providers)

                async def write() -> None:
                    async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
                        if await jobs.cancel_requested(uow, job_id):
                            raise Cancelled
                        await jobs.progress(uow, job_id, overall, message)

                await db_retry(write)
                await publish()

            stats = await _sync_one(rt, kind, tenant, job_id, provider, progress)
            results[provider.value] = stats.as_json()
    except Cancelled:
        async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
            await jobs.mark_cancelled(uow, job_id, {"providers": results, "cancelled": True})
        await rt.events.close(key, {"changed": "1"})
        return "cancelled"
    except ProviderError as exc:
        if exc.kind in ("transient", "rate_limited") and attempt < MAX_TRIES:
            delay = exc.retry_after if exc.retry_after is not None else random.uniform(1, 2**attempt)  # noqa: S311
            async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
                await jobs.retrying(uow, job_id, f"{exc.message}; retrying in {delay:.0f} s")
            await publish()
            raise Retry(defer=timedelta(seconds=delay)) from None
        return await _fail(rt, tenant, job_id, key, exc.message, results)
    except (NotConnected, IncompleteSync) as exc:
        return await _fail(rt, tenant, job_id, key, str(exc), results)

    async def complete() -> None:
        async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
            await jobs.complete(uow, job_id, {"providers": results}, "Done")

    await db_retry(complete)
    await rt.events.close(key, {"changed": "1"})
    return "complete"


async def _fail(
    rt: WorkerRuntime, tenant: uuid.UUID, job_id: uuid.UUID, key: str, message: str, results: dict[str, Any]
) -> str:
    async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
        await jobs.fail(uow, job_id, message)
        if results:
            await uow.jobs.update(job_id, result={"providers": results})
    await rt.events.close(key, {"changed": "1"})
    return "failed"


async def _sync_one(
    rt: WorkerRuntime,
    kind: SyncKind,
    tenant: uuid.UUID,
    job_id: uuid.UUID,
    provider: Provider,
    progress: Callable[[float, str], Awaitable[None]],
) -> SyncStats:
    registry = rt.providers
    label = provider.value.title()
    try:
        async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
            connection = await uow.connections.get(provider)
            if connection is None:
                raise NotConnected(f"{label} is not connected")
            tokens = await connections.usable_tokens(
                uow, rt.vault.keyring, tenant, connection, registry.oauth(provider)
            )
            run_started = await uow.sync.db_now()
    except NotConnected as exc:
        # The failed refresh rolled its transaction back: record the expiry in one of its own.
        async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
            if await uow.connections.get(provider) is not None:
                await uow.connections.mark(provider, ConnectionStatus.EXPIRED, exc.message)
        raise
    config = {k: str(v) for k, v in connection.config.items()}
    stats = SyncStats()
    started = datetime.now(UTC)
    try:
        if kind == "calendar":
            source = registry.calendar(provider, tokens, config)
            if source is None:
                raise NotConnected(f"{label} has no calendar to sync")
            window_start = started - timedelta(days=rt.settings.sync_past_days)
            window_end = started + timedelta(days=rt.settings.sync_future_days)
            sync_token = connection.sync_state.get("syncToken")
            stats.incremental = bool(sync_token)
            span = (window_end - window_start).total_seconds()
            async for page in source.appointments(window_start, window_end, sync_token=sync_token):
                if page.items:
                    async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
                        await ingest_appointments(uow, rt.vault, tenant, provider, page.items, stats)
                stats.pages += 1
                window = [page.window[0].isoformat(), page.window[1].isoformat()] if page.window else None
                if window is not None and (not stats.windows or stats.windows[-1] != window):
                    stats.windows.append(window)
                if page.provider_total is not None:
                    stats.provider_total = page.provider_total
                done = (
                    (page.window[1] - window_start).total_seconds() / span
                    if page.window
                    else stats.pages / (stats.pages + 3)
                )
                SYNC_RECORDS.labels(provider.value, kind).inc(len(page.items))
                await progress(done, f"{label}: {stats.fetched} appointments")
            # A provider may fall back from an expired sync token to a full listing.
            stats.incremental = stats.incremental and not getattr(source, "full_resync", False)
            if not stats.incremental:
                # The whole window was read (any error, timeout, IncompleteSync or cancellation left
                # the loop above by an exception): what the provider no longer returns is gone there.
                async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
                    stats.removed, stats.cancelled = await uow.sync.cancel_unseen_sources(
                        provider, start=window_start, end=window_end, seen_before=run_started
                    )
            state = {"syncToken": source.next_sync_token} if source.next_sync_token else {}
        else:
            inventory = registry.inventory(provider, tokens, config)
            if inventory is None:
                raise NotConnected(f"{label} has no inventory to sync")
            async for batch in inventory.items():
                async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
                    await uow.sync.upsert_inventory(
                        batch.items, default_threshold=rt.settings.low_stock_default
                    )
                stats.pages += 1
                stats.fetched += len(batch.items)
                stats.updated += len(batch.items)
                if batch.provider_total is not None:
                    stats.provider_total = batch.provider_total
                SYNC_RECORDS.labels(provider.value, kind).inc(len(batch.items))
                await progress(stats.pages / (stats.pages + 3), f"{label}: {stats.fetched} items")
            async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
                # Items the provider no longer lists were not touched by this run.
                stats.removed = await uow.sync.remove_unseen_inventory(provider, synced_before=run_started)
            state = {}
    except ProviderError as exc:
        if exc.kind == "auth":
            async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
                await uow.connections.mark(provider, ConnectionStatus.EXPIRED, exc.message)
            raise NotConnected(f"{exc.message}: reconnect {label}") from None
        raise
    async with rt.db.transaction(tenant_id=tenant, role=SYSTEM_ROLE) as uow:
        await uow.connections.synced(
            provider, {**connection.sync_state, **state} if kind == "calendar" else connection.sync_state
        )
        await uow.sync.add_run(
            tenant_id=tenant, job_id=job_id, provider=provider, kind=kind, stats=stats.as_json()
        )
    SYNC_SECONDS.labels(provider.value, kind).observe((datetime.now(UTC) - started).total_seconds())
    log.info("%s %s sync: %s", label, kind, stats.as_json())
    return stats


async def jobs_sweep(ctx: WorkerContext) -> int:
    """Jobs RUNNING with no progress for longer than their kind allows are failed, with the reason."""
    from jobs.askvx import each_tenant

    limits = {
        CALENDAR_KIND: timedelta(minutes=30),
        INVENTORY_KIND: timedelta(minutes=30),
        "strategy": timedelta(minutes=10),
    }
    return await each_tenant(ctx, lambda uow: uow.jobs.fail_stuck(limits, timedelta(minutes=30)))
