"""What the use cases need from storage. ``persistence`` implements these."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from domain.model import (
    Actor,
    ApiKey,
    ApiScope,
    Contact,
    NewContact,
    OnboardingStepKey,
    Role,
    Tenant,
    TenantSettings,
)
from domain.pagination import Page, PageRequest


class TenantRepository(Protocol):
    async def add(self, tenant: Tenant, *, owner_user_id: str) -> None: ...
    async def get(self, tenant_id: uuid.UUID) -> Tenant | None: ...
    async def update_timezone(self, tenant_id: uuid.UUID, timezone: str) -> None: ...
    async def by_ids(self, ids: Sequence[uuid.UUID]) -> Sequence[Tenant]: ...
    async def access_of(self, tenant_id: uuid.UUID | None, user_id: str) -> tuple[Role | None, bool]: ...
    async def ids_for_user(self, user_id: str) -> list[uuid.UUID]: ...
    async def grant(self, tenant_id: uuid.UUID, user_id: str, role: Role) -> None: ...


class SettingsRepository(Protocol):
    async def get(self, tenant_id: uuid.UUID) -> TenantSettings: ...
    async def save(self, tenant_id: uuid.UUID, settings: TenantSettings) -> None: ...


class OnboardingRepository(Protocol):
    async def completed(self, tenant_id: uuid.UUID) -> dict[OnboardingStepKey, datetime]: ...
    async def complete(
        self, tenant_id: uuid.UUID, step: OnboardingStepKey, context: dict[str, Any] | None
    ) -> None: ...


class ApiKeyRepository(Protocol):
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
    ) -> ApiKey: ...
    async def list_active(self, tenant_id: uuid.UUID) -> Sequence[ApiKey]: ...
    async def revoke(self, tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool: ...
    async def by_ids(self, ids: Sequence[uuid.UUID]) -> Sequence[ApiKey]: ...
    async def authenticate(self, token_hash: bytes) -> ApiKey | None: ...


class ContactRepository(Protocol):
    async def add(self, tenant_id: uuid.UUID, contact: NewContact) -> Contact: ...
    async def exists_with(self, *, email_bidx: bytes | None, phone_bidx: bytes | None) -> str | None: ...
    async def page(
        self,
        page: PageRequest,
        *,
        email_bidx: bytes | None = None,
        phone_bidx: bytes | None = None,
        name_prefix: str | None = None,
    ) -> Page[Contact]: ...
    async def by_ids(self, ids: Sequence[uuid.UUID]) -> Sequence[Contact]: ...


class UnitOfWork(Protocol):
    """One transaction, scoped to one tenant (or none) by the persistence layer."""

    @property
    def tenants(self) -> TenantRepository: ...
    @property
    def settings(self) -> SettingsRepository: ...
    @property
    def onboarding(self) -> OnboardingRepository: ...
    @property
    def api_keys(self) -> ApiKeyRepository: ...
    @property
    def contacts(self) -> ContactRepository: ...

    async def enter_tenant(self, tenant_id: uuid.UUID) -> None:
        """Scope the rest of this transaction to a tenant created in it."""
        ...


class UnitOfWorkFactory(Protocol):
    def for_actor(self, actor: Actor) -> AbstractAsyncContextManager[UnitOfWork]: ...
