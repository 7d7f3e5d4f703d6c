"""Connections, appointments, inventory and sync runs. Page-at-a-time statements: a sync of
thousands of records costs a handful of statements per provider page, never one per record."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    LargeBinary,
    Text,
    any_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.model import (
    Appointment,
    AppointmentSource,
    Connection,
    ConnectionStatus,
    InventoryItem,
    InventorySummary,
    NewContact,
    Provider,
)
from domain.pagination import Page, PageRequest
from domain.sync import ExternalInventoryItem
from domain.syncs import MATCH_TOLERANCE, PagePlan, StoredAppointment
from persistence import tables as t
from persistence.askvx_repos import SCOPED_TENANT
from persistence.paging import keyset_page

ACTIVE = "ACTIVE"
CANCELLED = "CANCELLED"


def _connection(row: Any) -> Connection:
    return Connection(
        id=row.id,
        provider=Provider(row.provider),
        status=ConnectionStatus(row.status),
        account_id=row.account_id,
        access_token_ciphertext=row.access_token_ciphertext,
        refresh_token_ciphertext=row.refresh_token_ciphertext,
        expires_at=row.expires_at,
        scopes=tuple(row.scopes),
        config=row.config or {},
        sync_state=row.sync_state or {},
        last_error=row.last_error,
        connected_at=row.connected_at,
        last_synced_at=row.last_synced_at,
    )


class ConnectionRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, provider: Provider) -> Connection | None:
        row = (
            await self._conn.execute(
                select(t.connected_accounts).where(t.connected_accounts.c.provider == provider.value)
            )
        ).first()
        return _connection(row) if row else None

    async def all(self) -> list[Connection]:
        rows = await self._conn.execute(
            select(t.connected_accounts).order_by(t.connected_accounts.c.provider)
        )
        return [_connection(r) for r in rows]

    async def save(
        self,
        *,
        provider: Provider,
        account_id: str | None,
        access_token_ciphertext: bytes | None,
        refresh_token_ciphertext: bytes | None,
        expires_at: datetime | None,
        scopes: Sequence[str],
        config: dict[str, Any],
    ) -> Connection:
        values = {
            "status": ConnectionStatus.CONNECTED.value,
            "account_id": account_id,
            "access_token_ciphertext": access_token_ciphertext,
            "refresh_token_ciphertext": refresh_token_ciphertext,
            "expires_at": expires_at,
            "scopes": list(scopes),
            "config": config,
            "last_error": None,
            "connected_at": func.now(),
        }
        stmt = pg_insert(t.connected_accounts).values(
            id=uuid.uuid4(), tenant_id=SCOPED_TENANT, provider=provider.value, sync_state={}, **values
        )
        row = (
            await self._conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["tenant_id", "provider"], set_={**values, "sync_state": {}}
                ).returning(t.connected_accounts)
            )
        ).one()
        if account_id:
            directory = pg_insert(t.provider_accounts).values(
                provider=provider.value, account_id=account_id, tenant=SCOPED_TENANT
            )
            # Several tenants may connect one provider account (a shared Square merchant): each has a row.
            await self._conn.execute(directory.on_conflict_do_nothing())
        return _connection(row)

    async def update_tokens(
        self,
        provider: Provider,
        *,
        access_token_ciphertext: bytes,
        refresh_token_ciphertext: bytes | None,
        expires_at: datetime | None,
    ) -> None:
        values: dict[str, Any] = {
            "access_token_ciphertext": access_token_ciphertext,
            "expires_at": expires_at,
        }
        if refresh_token_ciphertext is not None:
            values["refresh_token_ciphertext"] = refresh_token_ciphertext
        await self._conn.execute(
            update(t.connected_accounts)
            .where(t.connected_accounts.c.provider == provider.value)
            .values(**values)
        )

    async def mark(self, provider: Provider, status: ConnectionStatus, error: str | None) -> None:
        await self._conn.execute(
            update(t.connected_accounts)
            .where(t.connected_accounts.c.provider == provider.value)
            .values(status=status.value, last_error=error)
        )

    async def synced(self, provider: Provider, sync_state: dict[str, Any]) -> None:
        await self._conn.execute(
            update(t.connected_accounts)
            .where(t.connected_accounts.c.provider == provider.value)
            .values(last_synced_at=func.now(), sync_state=sync_state, last_error=None)
        )

    async def remove(self, provider: Provider) -> Connection | None:
        row = (
            await self._conn.execute(
                delete(t.connected_accounts)
                .where(t.connected_accounts.c.provider == provider.value)
                .returning(t.connected_accounts)
            )
        ).first()
        if row is not None and row.account_id:
            await self._conn.execute(
                delete(t.provider_accounts).where(
                    t.provider_accounts.c.provider == provider.value,
                    t.provider_accounts.c.account_id == row.account_id,
                    t.provider_accounts.c.tenant == SCOPED_TENANT,
                )
            )
        return _connection(row) if row else None


async def tenants_for_account(conn: AsyncConnection, provider: Provider, account_id: str) -> list[uuid.UUID]:
    """Which tenants a webhook's provider account belongs to (platform directory, no tenant scope)."""
    rows = await conn.scalars(
        select(t.provider_accounts.c.tenant)
        .where(
            t.provider_accounts.c.provider == provider.value, t.provider_accounts.c.account_id == account_id
        )
        .order_by(t.provider_accounts.c.tenant)
    )
    return list(rows.all())


async def forget_webhook(conn: AsyncConnection, provider: Provider, event_id: str) -> None:
    """Undo first_seen_webhook when the event could not be handed on, so the provider's retry works."""
    await conn.execute(
        delete(t.webhook_events).where(
            t.webhook_events.c.provider == provider.value, t.webhook_events.c.event_id == event_id
        )
    )


async def seen_webhook(conn: AsyncConnection, provider: Provider, event_id: str) -> bool:
    """Whether an event id was recorded, without recording it."""
    found = await conn.scalar(
        select(t.webhook_events.c.event_id).where(
            t.webhook_events.c.provider == provider.value, t.webhook_events.c.event_id == event_id
        )
    )
    return found is not None


async def first_seen_webhook(conn: AsyncConnection, provider: Provider, event_id: str) -> bool:
    """Record an event id; False when it was seen before (a retry or a replay)."""
    stmt = pg_insert(t.webhook_events).values(
        provider=provider.value, event_id=event_id, received_at=func.now()
    )
    result = await conn.execute(stmt.on_conflict_do_nothing().returning(t.webhook_events.c.event_id))
    return result.first() is not None


def _appointment(r: Any) -> Appointment:
    return Appointment(
        id=r.id,
        title=r.title,
        starts_at=r.starts_at,
        ends_at=r.ends_at,
        status=r.status,
        contact_id=r.contact_id,
    )


def _inventory_item(r: Any) -> InventoryItem:
    return InventoryItem(
        id=r.id,
        sku=r.sku,
        name=r.name,
        quantity=r.quantity,
        low_stock_threshold=r.low_stock_threshold,
        price_cents=r.price_cents,
        provider=Provider(r.provider),
    )


def _in(column: Any, values: Sequence[Any], item_type: Any) -> Any:
    """``column = ANY(:array)``: one statement shape (and plan) for any number of values."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(item_type)))


def _stored(row: Any) -> StoredAppointment:
    return StoredAppointment(row.id, row.starts_at, row.ends_at, row.contact_id, row.shared_reference)


class SyncRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def db_now(self) -> datetime:
        """The database's clock (rows stamped with now() compare against it, not the app's clock)."""
        value = await self._conn.scalar(select(func.now()))
        assert isinstance(value, datetime)
        return value

    async def sources_for(self, provider: Provider, external_ids: Sequence[str]) -> dict[str, uuid.UUID]:
        if not external_ids:
            return {}
        s = t.appointment_sources.c
        rows = await self._conn.execute(
            select(s.external_id, s.appointment_id).where(
                # The whole primary key (RLS would add the tenant anyway): an index lookup even when the
                # planner's statistics still think the table is empty, right after a first import.
                s.tenant_id == SCOPED_TENANT,
                s.provider == provider.value,
                _in(s.external_id, external_ids, Text),
            )
        )
        return {r.external_id: r.appointment_id for r in rows}

    def _unlinked(self, provider: Provider) -> Any:
        s = t.appointment_sources.c
        return ~exists().where(s.appointment_id == t.appointments.c.id, s.provider == provider.value)

    async def unlinked_by_reference(
        self, provider: Provider, references: Sequence[str]
    ) -> dict[str, StoredAppointment]:
        if not references:
            return {}
        a = t.appointments.c
        rows = await self._conn.execute(
            select(t.appointments).where(_in(a.shared_reference, references, Text), self._unlinked(provider))
        )
        return {r.shared_reference: _stored(r) for r in rows}

    async def unlinked_near(
        self, provider: Provider, contact_ids: Sequence[uuid.UUID], start_min: datetime, start_max: datetime
    ) -> list[StoredAppointment]:
        if not contact_ids:
            return []
        a = t.appointments.c
        rows = await self._conn.execute(
            select(t.appointments).where(
                _in(a.contact_id, contact_ids, UUID(as_uuid=True)),
                a.starts_at.between(start_min - MATCH_TOLERANCE, start_max + MATCH_TOLERANCE),
                self._unlinked(provider),
            )
        )
        return [_stored(r) for r in rows]

    async def contacts_by_index(self, field: str, digests: Sequence[bytes]) -> dict[bytes, uuid.UUID]:
        if not digests:
            return {}
        column = t.contacts.c.email_bidx if field == "email" else t.contacts.c.phone_bidx
        rows = await self._conn.execute(
            select(column.label("bidx"), t.contacts.c.id).where(_in(column, digests, LargeBinary))
        )
        return {r.bidx: r.id for r in rows}

    async def insert_contacts(self, contacts: Sequence[NewContact]) -> int:
        if not contacts:
            return 0
        rows = [
            {
                "id": c.id,
                "tenant_id": SCOPED_TENANT,
                "display_name": c.display_name,
                "name_search": c.name_search,
                "email_ciphertext": c.email_ciphertext,
                "email_bidx": c.email_bidx,
                "email_masked": c.email_masked,
                "phone_ciphertext": c.phone_ciphertext,
                "phone_bidx": c.phone_bidx,
                "phone_masked": c.phone_masked,
                "sms_consent": False,
                "email_consent": False,
                "tags": list(c.tags),
                "source": c.source,
                "created_at": func.now(),
                "updated_at": func.now(),
            }
            for c in contacts
        ]
        result = await self._conn.execute(
            pg_insert(t.contacts).values(rows).on_conflict_do_nothing().returning(t.contacts.c.id)
        )
        return len(result.all())

    async def apply(self, provider: Provider, plan: PagePlan) -> None:
        """Fixed-shape statements with a list of rows (executemany): compiled once, not per page."""
        if plan.creates:
            await self._conn.execute(
                insert(t.appointments).values(
                    tenant_id=SCOPED_TENANT, created_at=func.now(), updated_at=func.now()
                ),
                [
                    {
                        "id": w.appointment_id,
                        "title": w.record.title[:500],
                        "starts_at": w.record.starts_at,
                        "ends_at": w.record.ends_at,
                        "status": w.record.status,
                        "contact_id": w.contact_id,
                        "shared_reference": w.record.shared_reference,
                    }
                    for w in plan.creates
                ],
            )
        if plan.updates:
            a = t.appointments.c
            keep = bindparam("b_keep", type_=Boolean)
            await self._conn.execute(
                update(t.appointments)
                .where(a.id == bindparam("b_id"))
                .values(
                    # A cancellation may carry no usable times (Google keeps only a deleted event's id):
                    # it changes the status and leaves the times as they were.
                    title=case((keep, a.title), else_=bindparam("b_title")),
                    starts_at=case((keep, a.starts_at), else_=bindparam("b_starts")),
                    ends_at=case((keep, a.ends_at), else_=bindparam("b_ends")),
                    status=bindparam("b_status"),
                    contact_id=func.coalesce(bindparam("b_contact"), a.contact_id),
                    shared_reference=func.coalesce(a.shared_reference, bindparam("b_reference")),
                    updated_at=func.now(),
                ),
                [
                    {
                        "b_id": w.appointment_id,
                        "b_title": w.record.title[:500],
                        "b_starts": w.record.starts_at,
                        "b_ends": w.record.ends_at,
                        "b_status": w.record.status,
                        "b_contact": w.contact_id,
                        "b_reference": w.record.shared_reference,
                        "b_keep": w.record.status == "cancelled",
                    }
                    for w in plan.updates
                ],
            )
        linked = [*plan.creates, *plan.matched]
        if linked:
            stmt = pg_insert(t.appointment_sources).values(
                tenant_id=SCOPED_TENANT, provider=provider.value, seen_at=func.now()
            )
            await self._conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["tenant_id", "provider", "external_id"],
                    set_={"seen_at": func.now(), "status": ACTIVE, "cancelled_at": None},
                ),
                [{"external_id": w.record.external_id, "appointment_id": w.appointment_id} for w in linked],
            )
        if plan.updates:
            s = t.appointment_sources.c
            # Seen again: a source cancelled by an earlier reconciliation that is back becomes ACTIVE;
            # one the provider reports cancelled is CANCELLED from the first time it said so.
            gone = bindparam("b_gone", type_=Boolean)
            await self._conn.execute(
                update(t.appointment_sources)
                .where(
                    s.tenant_id == SCOPED_TENANT,
                    s.provider == provider.value,
                    s.external_id == bindparam("b_external"),
                )
                .values(
                    seen_at=func.now(),
                    status=case((gone, CANCELLED), else_=ACTIVE),
                    cancelled_at=case((gone, func.coalesce(s.cancelled_at, func.now())), else_=None),
                ),
                [
                    {"b_external": w.record.external_id, "b_gone": w.record.status == "cancelled"}
                    for w in plan.updates
                ],
            )

    async def cancel_unseen_sources(
        self, provider: Provider, *, start: datetime, end: datetime, seen_before: datetime
    ) -> tuple[int, int]:
        """Reconcile a completely read window: (sources cancelled, appointments cancelled).

        Every ACTIVE source of ``provider`` whose appointment overlaps [start, end) and that this run
        did not see (``seen_at`` before the run started) is gone at the provider: it becomes CANCELLED
        with the time of the change, and is kept. An appointment none of whose sources is still ACTIVE
        is cancelled (kept too, for KPIs and audit).
        """
        s, a = t.appointment_sources.c, t.appointments.c
        overlapping = select(a.id).where(a.starts_at < end, or_(a.ends_at > start, a.starts_at >= start))
        gone = await self._conn.execute(
            update(t.appointment_sources)
            .where(
                s.tenant_id == SCOPED_TENANT,
                s.provider == provider.value,
                s.status == ACTIVE,
                s.seen_at < seen_before,
                s.appointment_id.in_(overlapping.scalar_subquery()),
            )
            .values(status=CANCELLED, cancelled_at=func.now())
            .returning(s.appointment_id)
        )
        gone_ids = [row.appointment_id for row in gone]
        touched = sorted(set(gone_ids))
        if not touched:
            return 0, 0
        other = t.appointment_sources.alias("other")
        cancelled = await self._conn.execute(
            update(t.appointments)
            .where(
                _in(a.id, touched, UUID(as_uuid=True)),
                a.status != "cancelled",
                ~exists().where(other.c.appointment_id == a.id, other.c.status == ACTIVE),
            )
            .values(status="cancelled", updated_at=func.now())
        )
        return len(gone_ids), cancelled.rowcount

    async def appointments_page(self, start: datetime, end: datetime, page: PageRequest) -> Page[Appointment]:
        a = t.appointments.c
        return await keyset_page(
            self._conn,
            select(t.appointments).where(a.starts_at < end, a.ends_at > start),
            page,
            sort=a.starts_at,
            ident=a.id,
            descending=False,
            item=_appointment,
            cursor_key=lambda r: r.starts_at,
        )

    async def appointment(self, appointment_id: uuid.UUID) -> Appointment | None:
        r = (
            await self._conn.execute(select(t.appointments).where(t.appointments.c.id == appointment_id))
        ).first()
        if r is None:
            return None
        return _appointment(r)

    async def inventory_item(self, item_id: uuid.UUID) -> InventoryItem | None:
        r = (
            await self._conn.execute(select(t.inventory_items).where(t.inventory_items.c.id == item_id))
        ).first()
        if r is None:
            return None
        return _inventory_item(r)

    async def sources_of(
        self, appointment_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[AppointmentSource]]:
        s = t.appointment_sources.c
        rows = await self._conn.execute(
            select(s.appointment_id, s.provider, s.external_id)
            .where(s.appointment_id.in_(appointment_ids))
            .order_by(s.provider, s.external_id)
        )
        found: dict[uuid.UUID, list[AppointmentSource]] = {i: [] for i in appointment_ids}
        for r in rows:
            found[r.appointment_id].append(AppointmentSource(Provider(r.provider), r.external_id))
        return found

    async def upsert_inventory(
        self, items: Sequence[ExternalInventoryItem], *, default_threshold: int
    ) -> None:
        if not items:
            return
        # One statement shape for every page (executemany): compiled and prepared once.
        stmt = pg_insert(t.inventory_items).values(tenant_id=SCOPED_TENANT, synced_at=func.now())
        excluded = stmt.excluded
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["tenant_id", "provider", "external_id"],
                set_={
                    "sku": excluded.sku,
                    "name": excluded.name,
                    "quantity": excluded.quantity,
                    "low_stock_threshold": excluded.low_stock_threshold,
                    "price_cents": excluded.price_cents,
                    "currency": excluded.currency,
                    "synced_at": excluded.synced_at,
                },
            ),
            [
                {
                    "id": uuid.uuid4(),
                    "provider": i.provider.value,
                    "external_id": i.external_id,
                    "sku": i.sku,
                    "name": i.name[:500],
                    "quantity": i.quantity,
                    "low_stock_threshold": default_threshold
                    if i.low_stock_threshold is None
                    else i.low_stock_threshold,
                    "price_cents": i.price_cents,
                    "currency": i.currency,
                }
                for i in items
            ],
        )

    async def remove_unseen_inventory(self, provider: Provider, *, synced_before: datetime) -> int:
        i = t.inventory_items.c
        result = await self._conn.execute(
            delete(t.inventory_items).where(i.provider == provider.value, i.synced_at < synced_before)
        )
        return result.rowcount

    async def remove_inventory(self, provider: Provider) -> int:
        result = await self._conn.execute(
            delete(t.inventory_items).where(t.inventory_items.c.provider == provider.value)
        )
        return result.rowcount

    async def inventory_page(self, page: PageRequest, *, low_stock_only: bool) -> Page[InventoryItem]:
        i = t.inventory_items.c
        query = select(t.inventory_items)
        if low_stock_only:
            query = query.where(i.quantity <= i.low_stock_threshold)
        return await keyset_page(
            self._conn,
            query,
            page,
            sort=i.name,
            ident=i.id,
            descending=False,
            item=_inventory_item,
            cursor_key=lambda r: r.name,
        )

    async def inventory_summary(self) -> InventorySummary:
        i = t.inventory_items.c
        row = (
            await self._conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(func.greatest(i.quantity, 0)), 0),
                    # An untracked item (quantity NULL) is never low: NULL <= n is not true.
                    func.count().filter(i.quantity <= i.low_stock_threshold),
                    func.coalesce(func.sum(func.greatest(i.quantity, 0) * i.price_cents), 0),
                    func.max(i.synced_at),
                    func.count().filter(i.quantity.is_(None)),
                )
            )
        ).one()
        return InventorySummary(
            total_skus=int(row[0]),
            total_units=int(row[1]),
            low_stock_count=int(row[2]),
            value_cents=int(row[3]),
            last_synced_at=row[4],
            untracked_count=int(row[5]),
        )

    async def add_run(
        self,
        *,
        tenant_id: uuid.UUID,
        job_id: uuid.UUID | None,
        provider: Provider,
        kind: str,
        stats: dict[str, Any],
    ) -> None:
        await self._conn.execute(
            insert(t.sync_runs).values(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                job_id=job_id,
                provider=provider.value,
                kind=kind,
                stats=stats,
                created_at=func.now(),
            )
        )
