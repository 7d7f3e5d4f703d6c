"""AskVX reads, the reply subscription, jobs and plans."""

from __future__ import annotations

import logging
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

log = logging.getLogger("brandvx.askvx")


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
                yield _finish_from_record(current, sent=text)
                return
            continue
        text = event.text
        yield event
        if event.done:
            return
    # The feed ended without a final event (its last entries were lost): the record has the end.
    current = await _reply_message(ctx, message_id)
    if current.status is not ChatMessageStatus.STREAMING:
        yield _finish_from_record(current, sent=text)


def _finish_from_record(message: ChatMessage, *, sent: str) -> ReplyEvent:
    """The last event, from the record: only what the subscriber does not have yet, so that
    ``text == previous text + delta`` holds for this event too."""
    if message.content.startswith(sent):
        rest = message.content[len(sent) :]
        return ReplyEvent(delta=rest, text=message.content, done=True, error=message.error)
    # The record is not a continuation of what was sent (never expected): do not send text twice.
    log.warning("reply %s: the record does not continue the streamed text", message.id)
    return ReplyEvent(
        delta="",
        text=sent,
        done=True,
        error=message.error or "The reply changed while it was sent. Reload it.",
    )


async def _reply_message(ctx: Context, message_id: uuid.UUID) -> ChatMessage:
    async with ctx.transaction() as uow:
        message = await uow.chat.message(message_id)
    if message is None or message.role is not ChatRole.ASSISTANT:
        raise NotFound("No AskVX reply with this ID", field=["messageId"])
    return message
