"""Per-request DataLoaders: one query per batch, in the request's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

from strawberry.dataloader import DataLoader

from domain import askvx
from domain.model import Actor, AppointmentSource, ChatMessage, Contact, Tenant
from domain.pagination import Page, PageRequest
from domain.ports import UnitOfWork
from resolvers.context import Loaders


def build_loaders(
    transaction: Callable[[], AbstractAsyncContextManager[UnitOfWork]], actor: Actor
) -> Loaders:
    async def tenants(ids: Sequence[uuid.UUID]) -> list[Tenant | None]:
        async with transaction() as tx:
            found = {t.id: t for t in await tx.tenants.by_ids(ids)}
        return [found.get(i) for i in ids]

    async def contacts(ids: Sequence[uuid.UUID]) -> list[Contact | None]:
        async with transaction() as tx:
            found = {c.id: c for c in await tx.contacts.by_ids(ids)}
        return [found.get(i) for i in ids]

    async def messages(keys: Sequence[tuple[uuid.UUID, PageRequest]]) -> list[Page[ChatMessage]]:
        # One query per distinct page request (in practice one: a list asks every session alike).
        by_page: dict[PageRequest, list[uuid.UUID]] = {}
        for session_id, page in keys:
            by_page.setdefault(page, []).append(session_id)
        results: dict[tuple[uuid.UUID, PageRequest], Page[ChatMessage]] = {}
        async with transaction() as tx:
            for page, session_ids in by_page.items():
                pages = await askvx.session_messages(tx, actor, session_ids=session_ids, page=page)
                results.update({(sid, page): pages[sid] for sid in session_ids})
        return [results[key] for key in keys]

    async def sources(ids: Sequence[uuid.UUID]) -> list[list[AppointmentSource]]:
        async with transaction() as tx:
            found = await tx.sync.sources_of(ids)
        return [found.get(i, []) for i in ids]

    return Loaders(
        tenant_by_id=DataLoader(load_fn=tenants),
        contact_by_id=DataLoader(load_fn=contacts),
        messages_by_session=DataLoader(load_fn=messages),
        sources_by_appointment=DataLoader(load_fn=sources),
    )
