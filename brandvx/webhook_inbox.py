"""``domain.webhooks.WebhookInbox`` on this process's database, Redis and job queue."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from brandvx.runtime import Runtime
from domain import jobs
from domain.connections import open_tokens
from domain.model import JobStatus, Provider
from domain.providers import SyncKind
from domain.sync import TokenSet
from persistence.sync_repos import first_seen_webhook, forget_webhook, tenants_for_account
from schema.common import to_global_id

SYSTEM_ROLE = "SYSTEM"


class RuntimeWebhookInbox:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def tenants_for_account(self, provider: Provider, account_id: str) -> list[uuid.UUID]:
        async with self._rt.db.engine.connect() as conn:
            return await tenants_for_account(conn, provider, account_id)

    async def credentials(
        self, tenant_id: uuid.UUID, provider: Provider
    ) -> tuple[TokenSet, Mapping[str, str]] | None:
        async with self._rt.db.transaction(tenant_id=tenant_id, role=SYSTEM_ROLE) as uow:
            connection = await uow.connections.get(provider)
        if connection is None:
            return None
        tokens = open_tokens(self._rt.vault.keyring, tenant_id, connection)
        return tokens, {k: str(v) for k, v in connection.config.items()}

    def _window_key(self, provider: Provider, event_id: str) -> str:
        return f"{self._rt.settings.key_prefix}webhook:{provider.value.lower()}:{event_id}"

    async def first_seen(self, provider: Provider, event_id: str, *, window_seconds: int | None) -> bool:
        if window_seconds is not None:
            key = self._window_key(provider, event_id)
            return bool(await self._rt.redis.set(key, "1", nx=True, ex=window_seconds))
        async with self._rt.db.engine.connect() as conn:
            fresh = await first_seen_webhook(conn, provider, event_id)
            await conn.commit()
        return fresh

    async def forget(self, provider: Provider, event_id: str, *, window_seconds: int | None) -> None:
        if window_seconds is not None:
            await self._rt.redis.delete(self._window_key(provider, event_id))
            return
        async with self._rt.db.engine.connect() as conn:
            await forget_webhook(conn, provider, event_id)
            await conn.commit()

    async def allow_unverified(self, tenant_id: uuid.UUID, provider: Provider, *, every_seconds: int) -> bool:
        key = f"{self._rt.settings.key_prefix}webhook:unverified:{provider.value.lower()}:{tenant_id}"
        return bool(await self._rt.redis.set(key, "1", nx=True, ex=every_seconds))

    async def request_sync(self, tenant_id: uuid.UUID, provider: Provider, kind: SyncKind) -> str:
        async with self._rt.db.transaction(tenant_id=tenant_id, role=SYSTEM_ROLE) as uow:
            job = await jobs.create_job(
                uow,
                tenant_id,
                kind=f"{kind}_sync",
                dedupe_key=f"{kind}_sync:{provider.value}",
                args={"providers": [provider.value]},
            )
            if job.status is JobStatus.PENDING:  # through the outbox: relayed once this commits
                await uow.outbox.enqueue_job(
                    f"sync_{kind}", str(tenant_id), str(job.id), [provider.value], key=f"sync:{job.id}"
                )
        return str(to_global_id("Job", job.id))  # the same opaque ID the GraphQL API shows
