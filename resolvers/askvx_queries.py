"""AskVX reads, the reply subscription, jobs and plans."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

from domain import askvx, jobs
from domain.access import require_read
from domain.ai import ReplyEvent
from domain.errors import NotFound
from domain.model import ChatMessage, ChatMessageStatus, ChatRole, ChatSession, Job, Plan, TrainvxMemory
from domain.pagination import Page, PageRequest
from resolvers.context import Context

IDLE_RECHECK_SECONDS = 15.0


async def list_sessions(ctx: Context, *, first: int | None, after: str | None) -> Page[ChatSession]:
    page = PageRequest.parse(first, after)
    async with ctx.transaction() as uow:
        return await askvx.list_sessions(uow, ctx.require_actor, page=page)


async def session_messages(
    ctx: Context, session_id: uuid.UUID, *, first: int | None, after: str | None
) -> Page[ChatMessage]:
    page = PageRequest.parse(first, after)
    return await ctx.loaders.messages_by_session.load((session_id, page))


async def list_memories(ctx: Context) -> Sequence[TrainvxMemory]:
    async with ctx.transaction() as uow:
        return await askvx.list_memories(uow, ctx.require_actor)


async def get_job(ctx: Context, job_id: uuid.UUID) -> Job | None:
    try:
        async with ctx.transaction() as uow:
            return await jobs.get_job(uow, ctx.require_actor, job_id)
    except NotFound:
        return None


async def list_plans(ctx: Context) -> list[Plan]:
    ctx.require_actor  # noqa: B018 - signed-in callers only
    async with ctx.transaction() as uow:
        return await uow.usage.plans()


async def follow_reply(ctx: Context, message_id: uuid.UUID) -> AsyncIterator[ReplyEvent]:
    """Replay what the reply has so far, then follow it live until done (from any worker process)."""
    require_read(ctx.require_actor)
    message = await _reply_message(ctx, message_id)
    if message.status is not ChatMessageStatus.STREAMING:
        yield ReplyEvent(delta=message.content, text=message.content, done=True, error=message.error)
        return
    text = ""
    async for event in ctx.services.feed.follow(str(message_id), idle_seconds=IDLE_RECHECK_SECONDS):
        if event is None:
            # Quiet for a while: the record says whether the reply ended without a final event.
            current = await _reply_message(ctx, message_id)
            if current.status is not ChatMessageStatus.STREAMING:
                rest = current.content[len(text) :] if current.content.startswith(text) else current.content
                yield ReplyEvent(delta=rest, text=current.content, done=True, error=current.error)
                return
            continue
        text = event.text
        yield event
        if event.done:
            return


async def _reply_message(ctx: Context, message_id: uuid.UUID) -> ChatMessage:
    async with ctx.transaction() as uow:
        message = await uow.chat.message(message_id)
    if message is None or message.role is not ChatRole.ASSISTANT:
        raise NotFound("No AskVX reply with this ID", field=["messageId"])
    return message
