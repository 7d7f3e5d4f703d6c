from __future__ import annotations

from domain import tenancy
from domain.model import Tenant
from resolvers.context import Context


async def create_tenant(ctx: Context, *, name: str, timezone: str | None) -> Tenant:
    actor = ctx.require_actor
    # No tenant scope yet: the use case scopes the transaction to the tenant it creates.
    async with ctx.transaction() as uow:
        return await tenancy.create_tenant(
            uow, actor, name=name, timezone=timezone, max_owned=ctx.services.max_tenants_per_user
        )
