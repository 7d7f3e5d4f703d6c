"""Appointments, inventory, provider connections, job lists and progress."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TypeAlias

import strawberry

from domain import model
from domain.pagination import Page
from resolvers import sync_queries
from schema.common import AppInfo, Node, PageInfo, UserError, to_global_id
from schema.contacts import Contact
from schema.jobs import Job

ProviderEnum: TypeAlias = model.Provider
strawberry.enum(model.Provider, name="Provider")
ConnectionStatusEnum: TypeAlias = model.ConnectionStatus
strawberry.enum(model.ConnectionStatus, name="ConnectionStatus")


@strawberry.type
class AppointmentSource:
    provider: ProviderEnum
    external_id: str


@strawberry.type
class Appointment(Node):
    id: strawberry.ID
    title: str
    starts_at: datetime
    ends_at: datetime
    status: str
    _uuid: strawberry.Private[uuid.UUID]
    _contact_id: strawberry.Private[uuid.UUID | None]

    @strawberry.field
    async def contact(self, info: AppInfo) -> Contact | None:
        if self._contact_id is None:
            return None
        found = await info.context.loaders.contact_by_id.load(self._contact_id)
        return Contact.from_domain(found) if found else None

    @strawberry.field(description="Every provider this appointment was seen through.")
    async def sources(self, info: AppInfo) -> list[AppointmentSource]:
        found = await sync_queries.sources_of(info.context, self._uuid)
        return [AppointmentSource(provider=s.provider, external_id=s.external_id) for s in found]

    @classmethod
    def from_domain(cls, a: model.Appointment) -> Appointment:
        return cls(
            id=to_global_id("Appointment", a.id),
            title=a.title,
            starts_at=a.starts_at,
            ends_at=a.ends_at,
            status=a.status,
            _uuid=a.id,
            _contact_id=a.contact_id,
        )


@strawberry.type
class AppointmentEdge:
    cursor: str
    node: Appointment


@strawberry.type
class AppointmentConnection:
    edges: list[AppointmentEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[model.Appointment]) -> AppointmentConnection:
        return cls(
            edges=[
                AppointmentEdge(cursor=c.encode(), node=Appointment.from_domain(a))
                for a, c in zip(page.items, page.cursors, strict=True)
            ],
            page_info=PageInfo.from_page(page),
        )


@strawberry.type
class InventoryItem(Node):
    id: strawberry.ID
    sku: str
    name: str
    quantity: int = strawberry.field(
        description="Units available over all locations; 0 when the provider does not track it (see tracked)."
    )
    tracked: bool = strawberry.field(
        description="False when the provider does not track this item's stock: never counted as low stock."
    )
    low_stock_threshold: int
    price_cents: int
    provider: ProviderEnum

    @classmethod
    def from_domain(cls, i: model.InventoryItem) -> InventoryItem:
        return cls(
            id=to_global_id("InventoryItem", i.id),
            sku=i.sku,
            name=i.name,
            quantity=i.quantity if i.quantity is not None else 0,
            tracked=i.tracked,
            low_stock_threshold=i.low_stock_threshold,
            price_cents=i.price_cents,
            provider=i.provider,
        )


@strawberry.type
class InventoryItemEdge:
    cursor: str
    node: InventoryItem


@strawberry.type
class InventoryItemConnection:
    edges: list[InventoryItemEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[model.InventoryItem]) -> InventoryItemConnection:
        return cls(
            edges=[
                InventoryItemEdge(cursor=c.encode(), node=InventoryItem.from_domain(i))
                for i, c in zip(page.items, page.cursors, strict=True)
            ],
            page_info=PageInfo.from_page(page),
        )


@strawberry.type
class InventorySummary:
    total_skus: int
    total_units: int
    low_stock_count: int
    value_cents: int
    last_synced_at: datetime | None
    untracked_count: int = strawberry.field(
        description="Items whose stock the provider does not track (not in totalUnits or lowStockCount)."
    )

    @classmethod
    def from_domain(cls, s: model.InventorySummary) -> InventorySummary:
        return cls(
            total_skus=s.total_skus,
            total_units=s.total_units,
            low_stock_count=s.low_stock_count,
            value_cents=s.value_cents,
            last_synced_at=s.last_synced_at,
            untracked_count=s.untracked_count,
        )


@strawberry.type
class ConnectedAccount:
    provider: ProviderEnum
    status: ConnectionStatusEnum
    connected_at: datetime
    last_synced_at: datetime | None
    last_error: str | None = strawberry.field(description="Why the connection is EXPIRED or in ERROR.")

    @classmethod
    def from_domain(cls, c: model.Connection) -> ConnectedAccount:
        return cls(
            provider=c.provider,
            status=c.status,
            connected_at=c.connected_at,
            last_synced_at=c.last_synced_at,
            last_error=c.last_error,
        )


@strawberry.type
class JobEdge:
    cursor: str
    node: Job


@strawberry.type
class JobConnection:
    edges: list[JobEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[model.Job]) -> JobConnection:
        return cls(
            edges=[
                JobEdge(cursor=c.encode(), node=Job.from_domain(j))
                for j, c in zip(page.items, page.cursors, strict=True)
            ],
            page_info=PageInfo.from_page(page),
        )


@strawberry.type(description="One progress event of a job; the last one has done = true.")
class JobProgressEvent:
    job: Job
    done: bool


@strawberry.input
class SyncCalendarInput:
    providers: list[ProviderEnum] | None = None


@strawberry.input
class SyncInventoryInput:
    providers: list[ProviderEnum] | None = None


@strawberry.input
class CancelJobInput:
    job_id: strawberry.ID


@strawberry.input
class ConnectProviderInput:
    provider: ProviderEnum
    redirect_uri: str | None = None


@strawberry.type
class ConnectProviderPayload:
    authorize_url: str | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class DisconnectProviderInput:
    provider: ProviderEnum


@strawberry.type
class DisconnectProviderPayload:
    provider: ProviderEnum | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
