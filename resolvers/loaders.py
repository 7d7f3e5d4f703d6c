"""Per-request DataLoaders: one query per batch, each in its own tenant-scoped transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from strawberry.dataloader import DataLoader

from domain.model import Actor, Contact, Tenant
from domain.ports import UnitOfWorkFactory
from resolvers.context import Loaders


def build_loaders(uow: UnitOfWorkFactory, actor: Actor) -> Loaders:
    async def tenants(ids: Sequence[uuid.UUID]) -> list[Tenant | None]:
        async with uow.for_actor(actor) as tx:
            found = {t.id: t for t in await tx.tenants.by_ids(ids)}
        return [found.get(i) for i in ids]

    async def contacts(ids: Sequence[uuid.UUID]) -> list[Contact | None]:
        async with uow.for_actor(actor) as tx:
            found = {c.id: c for c in await tx.contacts.by_ids(ids)}
        return [found.get(i) for i in ids]

    return Loaders(
        tenant_by_id=DataLoader(load_fn=tenants),
        contact_by_id=DataLoader(load_fn=contacts),
    )
