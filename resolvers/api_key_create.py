from __future__ import annotations

from collections.abc import Sequence

from domain import api_keys
from domain.model import ApiKey, ApiScope
from resolvers.context import Context


async def create_api_key(ctx: Context, *, name: str, scopes: Sequence[ApiScope]) -> tuple[ApiKey, str]:
    async with ctx.transaction() as uow:
        return await api_keys.create_api_key(uow, ctx.require_actor, name=name, scopes=scopes)
