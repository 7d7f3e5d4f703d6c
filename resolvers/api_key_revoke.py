from __future__ import annotations

import uuid

from domain import api_keys
from resolvers.context import Context


async def revoke_api_key(ctx: Context, *, key_id: uuid.UUID) -> uuid.UUID:
    async with ctx.transaction() as uow:
        return await api_keys.revoke_api_key(uow, ctx.require_actor, key_id=key_id)
