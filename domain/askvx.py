"""AskVX: chat sessions, usage caps, the prompt the model sees, TrainVX memories."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from domain import prompts
from domain.access import require_read, require_write
from domain.ai import PromptMessage, Usage
from domain.errors import InvalidInput, LimitExceeded, NotFound
from domain.model import (
    Actor,
    ChatMessage,
    ChatMessageStatus,
    ChatRole,
    ChatSession,
    TenantSettings,
    TrainvxMemory,
)
from domain.pagination import Page, PageRequest
from domain.ports import UnitOfWork

MAX_MESSAGE_CHARS = 8000
MAX_TITLE_CHARS = 120
MAX_KEY_CHARS = 100
MAX_VALUE_CHARS = 4000
PROMPT_TOKEN_BUDGET = 6000
RECENT_TURNS = 30
SUMMARY_MAX_CHARS = 3000


def estimate_tokens(text: str) -> int:
    """About four characters a token for English: good enough to budget a prompt, never to bill."""
    return math.ceil(len(text) / 4) + 4


# ---------------------------------------------------------------- sessions and messages


async def start_session(uow: UnitOfWork, actor: Actor, *, title: str | None) -> ChatSession:
    tenant_id = require_write(actor)
    cleaned = " ".join((title or "").split()) or "New chat"
    if len(cleaned) > MAX_TITLE_CHARS:
        raise InvalidInput(f"Title must be at most {MAX_TITLE_CHARS} characters", field=["title"])
    return await uow.chat.add_session(uuid.uuid4(), tenant_id=tenant_id, user_id=actor.user_id, title=cleaned)


async def list_sessions(uow: UnitOfWork, actor: Actor, *, page: PageRequest) -> Page[ChatSession]:
    require_read(actor)
    return await uow.chat.sessions(page)


async def send_message(
    uow: UnitOfWork, actor: Actor, *, session_id: uuid.UUID, content: str
) -> tuple[ChatMessage, ChatMessage]:
    """Store the question and an empty STREAMING reply; the caller enqueues the reply job after commit."""
    tenant_id = require_write(actor)
    text = content.strip()
    if not text:
        raise InvalidInput("Write a message first", field=["content"])
    if len(text) > MAX_MESSAGE_CHARS:
        raise InvalidInput(f"Messages are at most {MAX_MESSAGE_CHARS} characters", field=["content"])
    if not await uow.chat.touch_session(session_id):
        raise NotFound("Chat session not found", field=["sessionId"])
    usage = await uow.usage.count_message(tenant_id)
    if usage.messages_used > usage.plan.messages_monthly:
        raise LimitExceeded(
            f"This month's AskVX message limit ({usage.plan.messages_monthly}) on the {usage.plan.name} plan "
            "is reached"
        )
    if usage.tokens_used >= usage.plan.ai_tokens_monthly:
        raise LimitExceeded(
            f"This month's AI token limit ({usage.plan.ai_tokens_monthly}) on the {usage.plan.name} plan "
            "is reached"
        )
    question = await uow.chat.add_message(
        uuid.uuid4(),
        session_id=session_id,
        role=ChatRole.USER,
        content=text,
        status=ChatMessageStatus.COMPLETE,
    )
    reply = await uow.chat.add_message(
        uuid.uuid4(),
        session_id=session_id,
        role=ChatRole.ASSISTANT,
        content="",
        status=ChatMessageStatus.STREAMING,
    )
    return question, reply


async def session_messages(
    uow: UnitOfWork, actor: Actor, *, session_ids: Sequence[uuid.UUID], page: PageRequest
) -> dict[uuid.UUID, Page[ChatMessage]]:
    """A page of messages for each of several sessions, in one query for the whole list."""
    require_read(actor)
    return await uow.chat.messages_pages(session_ids, page)


# ---------------------------------------------------------------- the reply (runs in a job)


@dataclass(frozen=True)
class ReplyWork:
    reply: ChatMessage
    prompt: list[PromptMessage]


async def prepare_reply(uow: UnitOfWork, tenant_id: uuid.UUID, message_id: uuid.UUID) -> ReplyWork | None:
    """None when there is nothing to do (already finished, or gone): jobs must be safe to run twice."""
    reply = await uow.chat.message(message_id)
    if reply is None or reply.status is not ChatMessageStatus.STREAMING:
        return None
    settings = await uow.settings.get(tenant_id)
    memories = await uow.memories.trainvx()
    summary = await uow.memories.summary()
    turns = await uow.chat.recent_turns(reply.session_id, before=reply.created_at, limit=RECENT_TURNS)
    return ReplyWork(reply, build_prompt(settings, memories, summary, turns))


def build_prompt(
    settings: TenantSettings,
    memories: Sequence[TrainvxMemory],
    summary: str,
    turns: Sequence[ChatMessage],
    *,
    budget: int = PROMPT_TOKEN_BUDGET,
) -> list[PromptMessage]:
    """System prompt, brand voice, TrainVX, summary, then as many recent turns as the budget allows.

    The newest turn always goes in; older ones are dropped first, then the summary is cut, then the
    memories (the newest memories stay).
    """
    brand = settings.brand_profile
    voice = (
        prompts.BRAND_VOICE.format(
            business_name=brand.business_name or "(not set)",
            tone=brand.tone or "(not set)",
            services=", ".join(brand.services) or "(not set)",
        )
        if brand.business_name or brand.tone or brand.services
        else prompts.NO_BRAND_PROFILE
    )
    fixed = f"{prompts.SYSTEM_PROMPT}\n\n{voice}"
    remaining = budget - estimate_tokens(fixed)

    dialogue = [t for t in turns if t.content.strip() and t.status is ChatMessageStatus.COMPLETE]
    kept: list[ChatMessage] = []
    for turn in reversed(dialogue):
        cost = estimate_tokens(turn.content)
        if kept and cost > remaining:
            break
        kept.append(turn)
        remaining -= cost
    kept.reverse()

    memory_lines: list[str] = []
    for memory in sorted(memories, key=lambda m: m.updated_at, reverse=True):
        line = f"- {memory.key}: {memory.value}"
        if estimate_tokens(line) > remaining:
            break
        memory_lines.append(line)
        remaining -= estimate_tokens(line)
    sections = [fixed]
    if memory_lines:
        sections.append(prompts.MEMORIES_HEADER + "\n" + "\n".join(reversed(memory_lines)))
    if summary.strip() and remaining > 50:
        sections.append(prompts.SUMMARY_HEADER + "\n" + summary.strip()[-max(0, (remaining - 10) * 4) :])

    messages = [PromptMessage("system", "\n\n".join(sections))]
    messages.extend(
        PromptMessage("user" if t.role is ChatRole.USER else "assistant", t.content) for t in kept
    )
    return messages


def rolled_summary(summary: str, question: str, answer: str) -> str:
    """Keep a short, rolling digest of past exchanges; the oldest lines fall off first."""
    q = " ".join(question.split())[:160]
    a = " ".join(answer.split())[:240]
    lines = [line for line in summary.splitlines() if line.strip()]
    lines.append(f"- Asked: {q} — Answered: {a}")
    while lines and len("\n".join(lines)) > SUMMARY_MAX_CHARS:
        lines.pop(0)
    return "\n".join(lines)


async def finish_reply(
    uow: UnitOfWork, tenant_id: uuid.UUID, work: ReplyWork, *, text: str, usage: Usage, model: str
) -> None:
    await uow.chat.complete(work.reply.id, content=text, usage=usage, model=model)
    question = next((m.content for m in reversed(work.prompt) if m.role == "user"), "")
    summary = await uow.memories.summary_for_update()
    await uow.memories.save_summary(rolled_summary(summary, question, text))
    # Last: the tenant's usage row is the hottest lock here, held from this statement to the commit.
    await uow.usage.add_tokens(tenant_id, usage.total)


async def fail_reply(uow: UnitOfWork, message_id: uuid.UUID, *, text: str, error: str) -> None:
    await uow.chat.fail(message_id, content=text, error=error)


# ---------------------------------------------------------------- TrainVX


def _memory_key(key: str) -> str:
    cleaned = " ".join(key.split())
    if not 1 <= len(cleaned) <= MAX_KEY_CHARS:
        raise InvalidInput(f"Key must be 1 to {MAX_KEY_CHARS} characters", field=["key"])
    return cleaned


async def list_memories(uow: UnitOfWork, actor: Actor) -> Sequence[TrainvxMemory]:
    require_read(actor)
    return await uow.memories.trainvx()


async def upsert_memory(uow: UnitOfWork, actor: Actor, *, key: str, value: str) -> TrainvxMemory:
    require_write(actor)
    text = value.strip()
    if not 1 <= len(text) <= MAX_VALUE_CHARS:
        raise InvalidInput(f"Value must be 1 to {MAX_VALUE_CHARS} characters", field=["value"])
    return await uow.memories.upsert(_memory_key(key), text)


async def delete_memory(uow: UnitOfWork, actor: Actor, *, key: str) -> str:
    require_write(actor)
    cleaned = _memory_key(key)
    if not await uow.memories.delete(cleaned):
        raise NotFound("No memory with this key", field=["key"])
    return cleaned
