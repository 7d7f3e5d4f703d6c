"""Sync, connection and job fields of the root types."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from typing import Annotated

import strawberry

from domain import model
from domain.errors import DomainError
from resolvers import calendar_sync, job_cancel, provider_connect, provider_disconnect, sync_queries
from schema.common import AppInfo, UserError, expect_global_id
from schema.errors import coded_stream
from schema.jobs import Job, JobPayload
from schema.syncs import (
    AppointmentConnection,
    CancelJobInput,
    ConnectedAccount,
    ConnectProviderInput,
    ConnectProviderPayload,
    DisconnectProviderInput,
    DisconnectProviderPayload,
    InventoryItemConnection,
    InventorySummary,
    JobConnection,
    JobProgressEvent,
    SyncCalendarInput,
    SyncInventoryInput,
)


@strawberry.type
class SyncQuery:
    @strawberry.field(
        description="Appointments overlapping [from, to), in start order, merged across providers."
    )
    async def appointments(
        self,
        info: AppInfo,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        first: int | None = None,
        after: str | None = None,
    ) -> AppointmentConnection:
        page = await sync_queries.appointments(info.context, start=from_, end=to, first=first, after=after)
        return AppointmentConnection.from_page(page)

    @strawberry.field
    async def inventory_summary(self, info: AppInfo) -> InventorySummary:
        return InventorySummary.from_domain(await sync_queries.inventory_summary(info.context))

    @strawberry.field(description="By name.")
    async def inventory_items(
        self,
        info: AppInfo,
        first: int | None = None,
        after: str | None = None,
        low_stock_only: bool | None = None,
    ) -> InventoryItemConnection:
        page = await sync_queries.inventory_items(
            info.context, first=first, after=after, low_stock_only=bool(low_stock_only)
        )
        return InventoryItemConnection.from_page(page)

    @strawberry.field
    async def connected_accounts(self, info: AppInfo) -> list[ConnectedAccount]:
        return [ConnectedAccount.from_domain(c) for c in await sync_queries.connected_accounts(info.context)]

    @strawberry.field(description="Newest first.")
    async def jobs(self, info: AppInfo, first: int | None = None, after: str | None = None) -> JobConnection:
        return JobConnection.from_page(await sync_queries.list_jobs(info.context, first=first, after=after))


@strawberry.type
class SyncMutation:
    @strawberry.mutation(
        description="Sync appointments from the given (or every connected) calendar provider."
    )
    async def sync_calendar(self, info: AppInfo, input: SyncCalendarInput) -> JobPayload:
        try:
            job = await calendar_sync.start_sync(info.context, kind="calendar", providers=input.providers)
        except DomainError as e:
            return JobPayload(user_errors=UserError.list_of(e))
        return JobPayload(job=Job.from_domain(job))

    @strawberry.mutation(
        description="Sync stock levels from the given (or every connected) inventory provider."
    )
    async def sync_inventory(self, info: AppInfo, input: SyncInventoryInput) -> JobPayload:
        try:
            job = await calendar_sync.start_sync(info.context, kind="inventory", providers=input.providers)
        except DomainError as e:
            return JobPayload(user_errors=UserError.list_of(e))
        return JobPayload(job=Job.from_domain(job))

    @strawberry.mutation(
        description="A pending job is cancelled at once; a running sync stops at its next page."
    )
    async def cancel_job(self, info: AppInfo, input: CancelJobInput) -> JobPayload:
        try:
            job = await job_cancel.cancel_job(
                info.context, job_id=expect_global_id(input.job_id, "Job", field="jobId")
            )
        except DomainError as e:
            return JobPayload(user_errors=UserError.list_of(e))
        return JobPayload(job=Job.from_domain(job))

    @strawberry.mutation(description="The URL to send the operator to; it comes back to the SPA when done.")
    async def connect_provider(self, info: AppInfo, input: ConnectProviderInput) -> ConnectProviderPayload:
        try:
            url = await provider_connect.connect_provider(
                info.context, provider=input.provider, redirect_uri=input.redirect_uri
            )
        except DomainError as e:
            return ConnectProviderPayload(user_errors=UserError.list_of(e))
        return ConnectProviderPayload(authorize_url=url)

    @strawberry.mutation(description="Revoke at the provider where it supports it, and delete the tokens.")
    async def disconnect_provider(
        self, info: AppInfo, input: DisconnectProviderInput
    ) -> DisconnectProviderPayload:
        try:
            provider = await provider_disconnect.disconnect_provider(info.context, provider=input.provider)
        except DomainError as e:
            return DisconnectProviderPayload(user_errors=UserError.list_of(e))
        return DisconnectProviderPayload(provider=provider)


@strawberry.type
class SyncSubscription:
    @strawberry.subscription(description="Streams a job's progress from its current state to its end.")
    async def job_progress(
        self, info: AppInfo, job_id: strawberry.ID
    ) -> AsyncGenerator[JobProgressEvent, None]:
        async def states() -> AsyncIterator[model.Job]:
            ident = expect_global_id(job_id, "Job", field="jobId")
            async for job in sync_queries.follow_job(info.context, ident):
                yield job

        async for job in coded_stream(states()):
            yield JobProgressEvent(job=Job.from_domain(job), done=job.status.finished)
