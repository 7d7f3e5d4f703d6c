from __future__ import annotations

from domain import askvx
from domain.model import TrainvxMemory
from resolvers.context import Context


async def upsert_trainvx_memory(ctx: Context, *, key: str, value: str) -> TrainvxMemory:
    async with ctx.transaction() as uow:
        return await askvx.upsert_memory(uow, ctx.require_actor, key=key, value=value)
