from __future__ import annotations

import uuid

from domain import askvx
from domain.access import tenant_of
from domain.model import ChatMessage
from resolvers.context import Context


async def send_chat_message(
    ctx: Context, *, session_id: uuid.UUID, content: str
) -> tuple[ChatMessage, ChatMessage]:
    actor = ctx.require_actor
    analytics = ctx.services.analytics
    async with ctx.transaction() as uow:
        question, reply = await askvx.send_message(uow, actor, session_id=session_id, content=content)
        # The job goes out through the outbox: queued only if these rows commit, and never lost once
        # they have (relayed right after the commit; the ARQ job id dedupes a repeat).
        await uow.outbox.enqueue_job(
            "askvx_reply", str(tenant_of(actor)), str(reply.id), key=f"askvx-reply:{reply.id}"
        )

        async def prompt_submitted() -> None:
            # Counts only: never the question's text.
            analytics.capture(
                str(tenant_of(actor)),
                "ask.prompt_submitted",
                {"characters": len(question.content), "via_api_key": actor.via_api_key},
            )

        uow.after_commit(prompt_submitted)
    return question, reply
