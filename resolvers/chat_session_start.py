from __future__ import annotations

from domain import askvx
from domain.model import ChatSession
from resolvers.context import Context


async def start_chat_session(ctx: Context, *, title: str | None) -> ChatSession:
    async with ctx.transaction() as uow:
        return await askvx.start_session(uow, ctx.require_actor, title=title)
