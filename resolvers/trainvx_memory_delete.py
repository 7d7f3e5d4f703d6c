from __future__ import annotations

from domain import askvx
from resolvers.context import Context


async def delete_trainvx_memory(ctx: Context, *, key: str) -> str:
    async with ctx.transaction() as uow:
        return await askvx.delete_memory(uow, ctx.require_actor, key=key)
