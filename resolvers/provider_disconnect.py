from __future__ import annotations

from domain import connections
from domain.access import tenant_of
from domain.model import Provider
from resolvers.context import Context


async def disconnect_provider(ctx: Context, *, provider: Provider) -> Provider:
    actor = ctx.require_actor
    async with ctx.transaction() as uow:
        removed = await connections.disconnect(uow, actor, provider)
    # After the tokens are gone from our side: revoking is best effort at the provider.
    await ctx.services.connect.revoke(tenant_of(actor), removed)
    return provider
