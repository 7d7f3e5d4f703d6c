from __future__ import annotations

from domain.model import Provider
from resolvers.context import Context


async def connect_provider(ctx: Context, *, provider: Provider, redirect_uri: str | None) -> str:
    return await ctx.services.connect.start(ctx.require_actor, provider, redirect_uri)
