"""Reads of synced data, connections and jobs; the jobProgress subscription."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime

from domain import connections, jobs
from domain.access import require_read
from domain.errors import InvalidInput, NotFound
from domain.model import (
    Appointment,
    AppointmentSource,
    Connection,
    InventoryItem,
    InventorySummary,
    Job,
)
from domain.pagination import Page, PageRequest, utc_instant
from resolvers.context import Context

IDLE_RECHECK_SECONDS = 15.0
MAX_RANGE_DAYS = 366


async def appointments(
    ctx: Context, *, start: datetime, end: datetime, first: int | None, after: str | None
) -> Page[Appointment]:
    page = PageRequest.parse(first, after)
    bounds = []
    for name, value in (("from", start), ("to", end)):
        try:
            bounds.append(utc_instant(value))
        except ValueError:
            raise InvalidInput(
                f"`{name}` needs a timezone offset and a date between years 1 and 9999 in UTC "
                "(e.g. 2026-11-26T09:00:00-05:00)",
                field=[name],
            ) from None
    start, end = bounds
    if end <= start:
        raise InvalidInput("`to` must be after `from`", field=["to"])
    if (end - start).days > MAX_RANGE_DAYS:
        raise InvalidInput(f"Ask for at most {MAX_RANGE_DAYS} days at a time", field=["to"])
    async with ctx.transaction() as uow:
        require_read(ctx.require_actor)
        return await uow.sync.appointments_page(start, end, page)


async def sources_of(ctx: Context, appointment_id: uuid.UUID) -> list[AppointmentSource]:
    return await ctx.loaders.sources_by_appointment.load(appointment_id)


async def inventory_items(
    ctx: Context, *, first: int | None, after: str | None, low_stock_only: bool
) -> Page[InventoryItem]:
    page = PageRequest.parse(first, after)
    async with ctx.transaction() as uow:
        require_read(ctx.require_actor)
        return await uow.sync.inventory_page(page, low_stock_only=low_stock_only)


async def inventory_summary(ctx: Context) -> InventorySummary:
    async with ctx.transaction() as uow:
        require_read(ctx.require_actor)
        return await uow.sync.inventory_summary()


async def connected_accounts(ctx: Context) -> list[Connection]:
    async with ctx.transaction() as uow:
        return await connections.list_connections(uow, ctx.require_actor)


async def list_jobs(ctx: Context, *, first: int | None, after: str | None) -> Page[Job]:
    page = PageRequest.parse(first, after)
    async with ctx.transaction() as uow:
        return await jobs.list_jobs(uow, ctx.require_actor, page=page)


async def follow_job(ctx: Context, job_id: uuid.UUID) -> AsyncIterator[Job]:
    """The job's current state, then every change until it ends (from any worker process)."""

    async def current() -> Job:
        async with ctx.transaction() as uow:
            return await jobs.get_job(uow, ctx.require_actor, job_id)

    job = await current()
    yield job
    if job.status.finished:
        return
    async for _changed in ctx.services.job_events.follow(str(job_id), idle_seconds=IDLE_RECHECK_SECONDS):
        latest = await current()
        if latest.updated_at != job.updated_at or latest.status is not job.status:
            job = latest
            yield job
        if job.status.finished:
            return


__all__ = ["NotFound"]
