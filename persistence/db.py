"""Engine, tenant-scoped transactions and the repositories a unit of work offers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from domain.model import Actor
from persistence.askvx_repos import ArtifactRepo, ChatRepo, JobRepo, MemoryRepo, UsageRepo
from persistence.outbox import OutboxRelay, OutboxRepo
from persistence.repositories import ApiKeyRepo, ContactRepo, OnboardingRepo, SettingsRepo, TenantRepo
from persistence.sync_repos import ConnectionRepo, SyncRepo
from persistence.unit_of_work import AfterCommit, Scope, SqlUnit


@dataclass
class SqlUnitOfWork:
    """The repositories over one unit's transaction (what ``domain.ports.UnitOfWork`` describes)."""

    connection: AsyncConnection
    unit: SqlUnit
    relay: OutboxRelay | None = None

    def __post_init__(self) -> None:
        self.tenants = TenantRepo(self.connection)
        self.settings = SettingsRepo(self.connection)
        self.onboarding = OnboardingRepo(self.connection)
        self.api_keys = ApiKeyRepo(self.connection)
        self.contacts = ContactRepo(self.connection)
        self.chat = ChatRepo(self.connection)
        self.memories = MemoryRepo(self.connection)
        self.usage = UsageRepo(self.connection)
        self.jobs = JobRepo(self.connection)
        self.artifacts = ArtifactRepo(self.connection)
        self.connections = ConnectionRepo(self.connection)
        self.sync = SyncRepo(self.connection)
        self.outbox = OutboxRepo(self.connection, self.unit, self.relay)

    def after_commit(self, action: AfterCommit) -> None:
        """Run ``action`` once this transaction has committed (never after a rollback)."""
        self.unit.after_commit(action)

    async def enter_tenant(self, tenant_id: uuid.UUID) -> None:
        await self.connection.execute(
            text("SELECT set_config('app.tenant_id', :tenant_id, true)"), {"tenant_id": str(tenant_id)}
        )


class Database:
    def __init__(self, url: URL, *, pool_size: int = 10) -> None:
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_recycle=1800,
            # Statement parameters are contact details and ciphertexts: never in errors or logs.
            hide_parameters=True,
        )
        # Set by the composition root: relays a unit's outbox rows right after its commit.
        self.relay: OutboxRelay | None = None

    def unit(self, scope: Scope | None = None) -> SqlUnit:
        """A unit of work (nothing opened until first use): a request's, a route's or a job step's."""
        return SqlUnit(self.engine, scope or Scope(), self._view)

    def _view(self, conn: AsyncConnection, unit: SqlUnit) -> SqlUnitOfWork:
        return SqlUnitOfWork(conn, unit, self.relay)

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(
        self,
        *,
        tenant_id: uuid.UUID | None = None,
        user_id: str | None = None,
        role: str | None = None,
        api_key_hash: bytes | None = None,
    ) -> AsyncIterator[SqlUnitOfWork]:
        """A unit of work of its own: commit once at the end (then its after-commit actions), roll
        back on any error."""
        async with self.run(Scope(tenant_id, user_id, role, api_key_hash)) as uow:
            yield uow

    @asynccontextmanager
    async def run(self, scope: Scope) -> AsyncIterator[SqlUnitOfWork]:
        unit = self.unit(scope)
        try:
            async with unit.join() as uow:
                yield uow
        finally:
            await unit.finish()

    def for_actor(self, actor: Actor) -> AbstractAsyncContextManager[SqlUnitOfWork]:
        return self.run(Scope.of(actor))

    def unit_for(self, actor: Actor | None) -> SqlUnit:
        return self.unit(Scope.of(actor) if actor is not None else None)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def schema_revision(self) -> str | None:
        """The applied Alembic revision, or None before the first migration."""
        async with self.engine.connect() as conn:
            if await conn.scalar(text("SELECT to_regclass('public.alembic_version')")) is None:
                return None
            result = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return result.scalar_one_or_none()
