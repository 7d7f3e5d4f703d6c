"""Engine, tenant-scoped transactions and the unit of work."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from domain.model import Actor
from persistence.askvx_repos import ArtifactRepo, ChatRepo, JobRepo, MemoryRepo, UsageRepo
from persistence.repositories import ApiKeyRepo, ContactRepo, OnboardingRepo, SettingsRepo, TenantRepo
from persistence.sync_repos import ConnectionRepo, SyncRepo

# One statement sets every scope variable, transaction-local (`true`): a pooled connection never
# carries one request's tenant into the next transaction.
_SCOPE_SQL = text(
    "SELECT set_config('app.tenant_id', :tenant_id, true), set_config('app.user_id', :user_id, true), "
    "set_config('app.role', :role, true), set_config('app.api_key_hash', :key_hash, true)"
)


@dataclass
class SqlUnitOfWork:
    connection: AsyncConnection

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
        """Commit once at the end, roll back on any error.

        A pooled connection that died with its server (PostgreSQL restarted) fails the scope
        statement, the first of the transaction: SQLAlchemy then marks every older pooled connection
        stale, and the transaction starts again once on a new connection. (Cheaper than
        ``pool_pre_ping``, a round trip on every checkout.)"""
        scope = {
            "tenant_id": str(tenant_id) if tenant_id else "",
            "user_id": user_id or "",
            "role": role or "",
            "key_hash": api_key_hash.hex() if api_key_hash else "",
        }
        for attempt in (1, 2):
            async with self.engine.connect() as conn:
                try:
                    transaction = await conn.begin()
                    await conn.execute(_SCOPE_SQL, scope)
                except DBAPIError as exc:
                    if exc.connection_invalidated and attempt == 1:
                        continue
                    raise
                try:
                    yield SqlUnitOfWork(conn)
                except BaseException:
                    await transaction.rollback()
                    raise
                await transaction.commit()
                return

    def for_actor(self, actor: Actor) -> AbstractAsyncContextManager[SqlUnitOfWork]:
        return self.transaction(
            tenant_id=actor.tenant_id, user_id=actor.user_id, role=actor.role.value if actor.role else None
        )

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
