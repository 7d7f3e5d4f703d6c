from __future__ import annotations

import logging
import uuid

from domain import askvx
from domain.access import tenant_of
from domain.model import ChatMessage
from resolvers.context import Context

log = logging.getLogger("brandvx.askvx")


async def send_chat_message(
    ctx: Context, *, session_id: uuid.UUID, content: str
) -> tuple[ChatMessage, ChatMessage]:
    actor = ctx.require_actor
    async with ctx.transaction() as uow:
        question, reply = await askvx.send_message(uow, actor, session_id=session_id, content=content)
    # Enqueued after commit, so the worker always finds the rows; the ARQ job id dedupes a retry.
    try:
        await ctx.services.queue.enqueue(
            "askvx_reply", str(tenant_of(actor)), str(reply.id), job_id=f"askvx-reply:{reply.id}"
        )
    except Exception:
        async with ctx.transaction() as uow:
            await askvx.fail_reply(uow, reply.id, text="", error="The reply could not be started. Try again.")
        raise
    # Counts only: never the question's text.
    ctx.services.analytics.capture(
        str(tenant_of(actor)),
        "ask.prompt_submitted",
        {"characters": len(question.content), "via_api_key": actor.via_api_key},
    )
    return question, reply
