from __future__ import annotations

import uuid

from domain import api_keys
from resolvers.context import Context


async def revoke_api_key(ctx: Context, *, key_id: uuid.UUID) -> uuid.UUID:
    async with ctx.transaction() as uow:
        revoked = await api_keys.revoke_api_key(uow, ctx.require_actor, key_id=key_id)
    # After the commit: a process that closes the key's sockets must find it revoked on reconnect.
    if ctx.services.revocations is not None:
        await ctx.services.revocations.announce(revoked)
    return revoked
