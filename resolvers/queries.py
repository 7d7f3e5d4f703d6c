"""Read use cases as the GraphQL layer calls them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from domain import api_keys, contacts, tenancy
from domain.access import require_read
from domain.model import ApiKey, Contact, Onboarding, Tenant, TenantSettings
from domain.pagination import Page, PageRequest
from resolvers.context import Context


async def viewer_tenant(ctx: Context) -> Tenant | None:
    actor = ctx.require_actor
    if actor.tenant_id is None:
        return None
    return await ctx.loaders.tenant_by_id.load(actor.tenant_id)


async def onboarding(ctx: Context) -> Onboarding:
    async with ctx.transaction() as uow:
        return await tenancy.get_onboarding(uow, ctx.require_actor)


async def settings(ctx: Context) -> TenantSettings:
    async with ctx.transaction() as uow:
        return await tenancy.get_settings(uow, ctx.require_actor)


async def list_api_keys(ctx: Context) -> Sequence[ApiKey]:
    async with ctx.transaction() as uow:
        return await api_keys.list_api_keys(uow, ctx.require_actor)


async def list_contacts(
    ctx: Context, *, first: int | None, after: str | None, search: str | None
) -> Page[Contact]:
    page = PageRequest.parse(first, after)
    async with ctx.transaction() as uow:
        return await contacts.list_contacts(
            uow, ctx.services.vault, ctx.require_actor, page=page, search=search
        )


async def node(ctx: Context, type_name: str, ident: uuid.UUID) -> object | None:
    """Anything of the caller's tenant; RLS makes everything else invisible, so it is simply not found."""
    actor = ctx.require_actor
    if actor.tenant_id is None:
        return None
    require_read(actor)
    if type_name == "Tenant":
        # Only the tenant in scope: a member of several tenants sees one per request.
        return await ctx.loaders.tenant_by_id.load(ident) if ident == actor.tenant_id else None
    if type_name == "Contact":
        return await ctx.loaders.contact_by_id.load(ident)
    async with ctx.transaction() as uow:
        if type_name == "ApiKey":
            found = await uow.api_keys.by_ids([ident])
            return found[0] if found else None
        if type_name == "ChatSession":
            return await uow.chat.session(ident)
        if type_name == "ChatMessage":
            return await uow.chat.message(ident)
        if type_name == "Appointment":
            return await uow.sync.appointment(ident)
        if type_name == "InventoryItem":
            return await uow.sync.inventory_item(ident)
        if type_name == "Job":
            return await uow.jobs.get(ident)
        if type_name == "TrainvxMemory":
            return next((m for m in await uow.memories.trainvx() if m.id == ident), None)
    return None
