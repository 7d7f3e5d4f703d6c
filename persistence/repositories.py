"""Repositories: every query lives here. They run inside a tenant-scoped transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.errors import Conflict
from domain.model import (
    ApiKey,
    ApiScope,
    BrandProfile,
    Contact,
    NewContact,
    OnboardingStepKey,
    PlanTier,
    QuietHours,
    Role,
    Tenant,
    TenantSettings,
)
from domain.pagination import Page, PageRequest
from persistence import tables as t
from persistence.paging import keyset_page


def _tenant(row: Row[Any]) -> Tenant:
    return Tenant(
        id=row.id,
        name=row.name,
        timezone=row.timezone,
        plan_tier=PlanTier(row.plan_tier),
        subscription_status=row.subscription_status,
        created_at=row.created_at,
    )


class TenantRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, tenant: Tenant, *, owner_user_id: str) -> None:
        await self._conn.execute(
            insert(t.tenants).values(
                id=tenant.id,
                name=tenant.name,
                timezone=tenant.timezone,
                plan_tier=tenant.plan_tier.value,
                subscription_status=tenant.subscription_status,
                created_at=tenant.created_at,
            )
        )
        await self._conn.execute(
            insert(t.memberships).values(
                tenant_id=tenant.id, user_id=owner_user_id, role=Role.OWNER_ADMIN.value, created_at=func.now()
            )
        )
        await self._conn.execute(
            insert(t.tenant_settings).values(
                tenant_id=tenant.id, brand_profile={}, extra={}, updated_at=func.now()
            )
        )

    async def get(self, tenant_id: uuid.UUID) -> Tenant | None:
        row = (await self._conn.execute(select(t.tenants).where(t.tenants.c.id == tenant_id))).first()
        return _tenant(row) if row else None

    async def by_ids(self, ids: Sequence[uuid.UUID]) -> Sequence[Tenant]:
        rows = await self._conn.execute(select(t.tenants).where(t.tenants.c.id.in_(ids)))
        return [_tenant(r) for r in rows]

    async def update_timezone(self, tenant_id: uuid.UUID, timezone: str) -> None:
        await self._conn.execute(
            update(t.tenants).where(t.tenants.c.id == tenant_id).values(timezone=timezone)
        )

    async def ids_for_user(self, user_id: str) -> list[uuid.UUID]:
        """Needs ``app.user_id`` set: the own-memberships policy shows a user their tenants."""
        rows = await self._conn.execute(
            select(t.memberships.c.tenant_id)
            .where(t.memberships.c.user_id == user_id)
            .order_by(t.memberships.c.created_at)
        )
        return [r.tenant_id for r in rows]

    async def count_owned_locked(self, user_id: str) -> int:
        """Tenants the user owns, counted under a lock on the user until commit (two concurrent
        createTenant calls cannot both see the last free place). Needs ``app.user_id`` set."""
        await self._conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(user_id, 10))))
        count = await self._conn.scalar(
            select(func.count())
            .select_from(t.memberships)
            .where(t.memberships.c.user_id == user_id, t.memberships.c.role == Role.OWNER_ADMIN.value)
        )
        return int(count or 0)

    async def grant(self, tenant_id: uuid.UUID, user_id: str, role: Role) -> None:
        stmt = pg_insert(t.memberships).values(
            tenant_id=tenant_id, user_id=user_id, role=role.value, created_at=func.now()
        )
        await self._conn.execute(
            stmt.on_conflict_do_update(index_elements=["tenant_id", "user_id"], set_={"role": role.value})
        )

    async def access_of(self, tenant_id: uuid.UUID | None, user_id: str) -> tuple[Role | None, bool]:
        """The user's role in the tenant and whether they are platform OPS, in one round trip."""
        role = (
            select(t.memberships.c.role)
            .where(t.memberships.c.tenant_id == tenant_id, t.memberships.c.user_id == user_id)
            .scalar_subquery()
        )
        ops = (
            select(t.platform_roles.c.user_id)
            .where(t.platform_roles.c.user_id == user_id, t.platform_roles.c.role == Role.OPS.value)
            .exists()
        )
        row = (await self._conn.execute(select(role.label("role"), ops.label("is_ops")))).one()
        return (Role(row.role) if row.role else None), bool(row.is_ops)


class SettingsRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, tenant_id: uuid.UUID) -> TenantSettings:
        row = (
            await self._conn.execute(
                select(t.tenants.c.timezone, t.tenant_settings)
                .select_from(
                    t.tenants.outerjoin(t.tenant_settings, t.tenant_settings.c.tenant_id == t.tenants.c.id)
                )
                .where(t.tenants.c.id == tenant_id)
            )
        ).one()
        brand = row.brand_profile or {}
        return TenantSettings(
            timezone=row.timezone,
            quiet_hours=QuietHours(row.quiet_start, row.quiet_end)
            if row.quiet_start and row.quiet_end
            else None,
            brand_profile=BrandProfile(
                business_name=brand.get("business_name"),
                tone=brand.get("tone"),
                services=tuple(brand.get("services", ())),
            ),
            extra=row.extra or {},
        )

    async def save(self, tenant_id: uuid.UUID, settings: TenantSettings) -> None:
        values = {
            "quiet_start": settings.quiet_hours.start if settings.quiet_hours else None,
            "quiet_end": settings.quiet_hours.end if settings.quiet_hours else None,
            "brand_profile": {
                "business_name": settings.brand_profile.business_name,
                "tone": settings.brand_profile.tone,
                "services": list(settings.brand_profile.services),
            },
            "extra": settings.extra,
            "updated_at": func.now(),
        }
        stmt = pg_insert(t.tenant_settings).values(tenant_id=tenant_id, **values)
        await self._conn.execute(stmt.on_conflict_do_update(index_elements=["tenant_id"], set_=values))


class OnboardingRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def completed(self, tenant_id: uuid.UUID) -> dict[OnboardingStepKey, datetime]:
        rows = await self._conn.execute(
            select(t.onboarding_steps.c.step, t.onboarding_steps.c.completed_at).where(
                t.onboarding_steps.c.tenant_id == tenant_id
            )
        )
        return {OnboardingStepKey(r.step): r.completed_at for r in rows}

    async def complete(
        self, tenant_id: uuid.UUID, step: OnboardingStepKey, context: dict[str, Any] | None
    ) -> None:
        stmt = pg_insert(t.onboarding_steps).values(
            tenant_id=tenant_id, step=step.value, completed_at=func.now(), context=context
        )
        await self._conn.execute(stmt.on_conflict_do_nothing(index_elements=["tenant_id", "step"]))


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        prefix=row.prefix,
        scopes=tuple(ApiScope(s) for s in row.scopes),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class ApiKeyRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        *,
        key_id: uuid.UUID,
        tenant_id: uuid.UUID,
        name: str,
        prefix: str,
        token_hash: bytes,
        scopes: Sequence[ApiScope],
        created_by: str,
    ) -> ApiKey:
        row = (
            await self._conn.execute(
                insert(t.api_keys)
                .values(
                    id=key_id,
                    tenant_id=tenant_id,
                    name=name,
                    prefix=prefix,
                    token_hash=token_hash,
                    scopes=[s.value for s in scopes],
                    created_by=created_by,
                    created_at=func.now(),
                )
                .returning(t.api_keys)
            )
        ).one()
        return _api_key(row)

    async def list_active(self, tenant_id: uuid.UUID) -> Sequence[ApiKey]:
        rows = await self._conn.execute(
            select(t.api_keys)
            .where(t.api_keys.c.tenant_id == tenant_id, t.api_keys.c.revoked_at.is_(None))
            .order_by(t.api_keys.c.created_at.desc(), t.api_keys.c.id.desc())
        )
        return [_api_key(r) for r in rows]

    async def by_ids(self, ids: Sequence[uuid.UUID]) -> Sequence[ApiKey]:
        rows = await self._conn.execute(
            select(t.api_keys).where(t.api_keys.c.id.in_(ids), t.api_keys.c.revoked_at.is_(None))
        )
        return [_api_key(r) for r in rows]

    async def revoke(self, tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        result = await self._conn.execute(
            update(t.api_keys)
            .where(
                t.api_keys.c.id == key_id,
                t.api_keys.c.tenant_id == tenant_id,
                t.api_keys.c.revoked_at.is_(None),
            )
            .values(revoked_at=func.now())
            .returning(t.api_keys.c.id)
        )
        return result.first() is not None

    async def is_revoked(self, token_hash: bytes) -> bool:
        """Whether this hash names a key that was revoked (needs ``app.api_key_hash`` like authenticate)."""
        row = (
            await self._conn.execute(
                select(t.api_keys.c.id).where(
                    t.api_keys.c.token_hash == token_hash, t.api_keys.c.revoked_at.is_not(None)
                )
            )
        ).first()
        return row is not None

    async def authenticate(self, token_hash: bytes) -> ApiKey | None:
        """Needs ``app.api_key_hash`` set to this hash in the transaction (see the RLS policy)."""
        row = (
            await self._conn.execute(
                select(t.api_keys).where(
                    t.api_keys.c.token_hash == token_hash, t.api_keys.c.revoked_at.is_(None)
                )
            )
        ).first()
        if row is None:
            return None
        if row.last_used_at is None or (datetime.now(UTC) - row.last_used_at).total_seconds() > 60:
            # Stamped at most once a minute, so busy keys do not write on every request.
            await self._conn.execute(
                update(t.api_keys).where(t.api_keys.c.id == row.id).values(last_used_at=func.now())
            )
        return _api_key(row)


_CONTACT_COLUMNS = (
    t.contacts.c.id,
    t.contacts.c.tenant_id,
    t.contacts.c.display_name,
    t.contacts.c.email_masked,
    t.contacts.c.phone_masked,
    t.contacts.c.sms_consent,
    t.contacts.c.email_consent,
    t.contacts.c.tags,
    t.contacts.c.source,
    t.contacts.c.last_visit_at,
    t.contacts.c.created_at,
)


def _contact(row: Any) -> Contact:
    return Contact(
        id=row.id,
        tenant_id=row.tenant_id,
        display_name=row.display_name,
        email_masked=row.email_masked,
        phone_masked=row.phone_masked,
        sms_consent=row.sms_consent,
        email_consent=row.email_consent,
        tags=tuple(row.tags),
        source=row.source,
        last_visit_at=row.last_visit_at,
        created_at=row.created_at,
    )


class ContactRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, tenant_id: uuid.UUID, contact: NewContact) -> Contact:
        try:
            return await self._insert(tenant_id, contact)
        except IntegrityError as exc:
            # Two requests raced past exists_with(); the unique index decides.
            constraint = getattr(getattr(exc.orig, "__cause__", None), "constraint_name", "") or str(exc.orig)
            field = "phone" if "phone" in constraint else "email"
            raise Conflict(f"A contact with this {field} already exists", field=[field]) from None

    async def _insert(self, tenant_id: uuid.UUID, contact: NewContact) -> Contact:
        row = (
            await self._conn.execute(
                insert(t.contacts)
                .values(
                    id=contact.id,
                    tenant_id=tenant_id,
                    display_name=contact.display_name,
                    name_search=contact.name_search,
                    email_ciphertext=contact.email_ciphertext,
                    email_bidx=contact.email_bidx,
                    email_masked=contact.email_masked,
                    phone_ciphertext=contact.phone_ciphertext,
                    phone_bidx=contact.phone_bidx,
                    phone_masked=contact.phone_masked,
                    sms_consent=contact.sms_consent,
                    email_consent=contact.email_consent,
                    tags=list(contact.tags),
                    source=contact.source,
                    created_at=func.now(),
                    updated_at=func.now(),
                )
                .returning(*_CONTACT_COLUMNS)
            )
        ).one()
        return _contact(row)

    async def exists_with(self, *, email_bidx: bytes | None, phone_bidx: bytes | None) -> str | None:
        checks = []
        if email_bidx is not None:
            checks.append(t.contacts.c.email_bidx == email_bidx)
        if phone_bidx is not None:
            checks.append(t.contacts.c.phone_bidx == phone_bidx)
        if not checks:
            return None
        row = (
            await self._conn.execute(
                select(t.contacts.c.email_bidx, t.contacts.c.phone_bidx).where(or_(*checks)).limit(1)
            )
        ).first()
        if row is None:
            return None
        return "email" if email_bidx is not None and row.email_bidx == email_bidx else "phone"

    async def page(
        self,
        page: PageRequest,
        *,
        email_bidx: bytes | None = None,
        phone_bidx: bytes | None = None,
        name_prefix: str | None = None,
    ) -> Page[Contact]:
        c = t.contacts.c
        query = select(*_CONTACT_COLUMNS)
        if email_bidx is not None:
            query = query.where(c.email_bidx == email_bidx)
        if phone_bidx is not None:
            query = query.where(c.phone_bidx == phone_bidx)
        if name_prefix is not None:
            escaped = name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(c.name_search.like(escaped + "%", escape="\\"))
        return await keyset_page(
            self._conn,
            query,
            page,
            sort=c.created_at,
            ident=c.id,
            descending=True,
            item=_contact,
            cursor_key=lambda r: r.created_at,
        )

    async def by_ids(self, ids: Sequence[uuid.UUID]) -> Sequence[Contact]:
        rows = await self._conn.execute(select(*_CONTACT_COLUMNS).where(t.contacts.c.id.in_(ids)))
        return [_contact(r) for r in rows]
