"""AskVX: chat sessions and messages, streamed replies, TrainVX memories, plans."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TypeAlias

import strawberry

from domain import model
from domain.ai import ReplyEvent
from domain.pagination import Page
from resolvers import askvx_queries
from schema.common import AppInfo, Node, PageInfo, PlanTierEnum, UserError, to_global_id

ChatRoleEnum: TypeAlias = model.ChatRole
strawberry.enum(model.ChatRole, name="ChatRole")
ChatMessageStatusEnum: TypeAlias = model.ChatMessageStatus
strawberry.enum(model.ChatMessageStatus, name="ChatMessageStatus")


@strawberry.type
class ChatMessage(Node):
    id: strawberry.ID
    role: ChatRoleEnum
    content: str
    status: ChatMessageStatusEnum
    created_at: datetime
    error: str | None = strawberry.field(description="Why a FAILED reply failed, in words for the operator.")

    @classmethod
    def from_domain(cls, m: model.ChatMessage) -> ChatMessage:
        return cls(
            id=to_global_id("ChatMessage", m.id),
            role=m.role,
            content=m.content,
            status=m.status,
            created_at=m.created_at,
            error=m.error,
        )


@strawberry.type
class ChatMessageEdge:
    cursor: str
    node: ChatMessage


@strawberry.type
class ChatMessageConnection:
    edges: list[ChatMessageEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[model.ChatMessage]) -> ChatMessageConnection:
        return cls(
            edges=[
                ChatMessageEdge(cursor=c.encode(), node=ChatMessage.from_domain(m))
                for m, c in zip(page.items, page.cursors, strict=True)
            ],
            page_info=PageInfo.from_page(page),
        )


@strawberry.type
class ChatSession(Node):
    id: strawberry.ID
    title: str
    created_at: datetime
    _uuid: strawberry.Private[str]

    @strawberry.field(description="Oldest first.")
    async def messages(
        self, info: AppInfo, first: int | None = None, after: str | None = None
    ) -> ChatMessageConnection:
        page = await askvx_queries.session_messages(
            info.context, uuid.UUID(self._uuid), first=first, after=after
        )
        return ChatMessageConnection.from_page(page)

    @classmethod
    def from_domain(cls, s: model.ChatSession) -> ChatSession:
        return cls(
            id=to_global_id("ChatSession", s.id), title=s.title, created_at=s.created_at, _uuid=str(s.id)
        )


@strawberry.type
class ChatSessionEdge:
    cursor: str
    node: ChatSession


@strawberry.type
class ChatSessionConnection:
    edges: list[ChatSessionEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[model.ChatSession]) -> ChatSessionConnection:
        return cls(
            edges=[
                ChatSessionEdge(cursor=c.encode(), node=ChatSession.from_domain(s))
                for s, c in zip(page.items, page.cursors, strict=True)
            ],
            page_info=PageInfo.from_page(page),
        )


@strawberry.type(description="One event of a streamed AskVX reply. `text` is everything so far.")
class ChatReplyEvent:
    message_id: strawberry.ID
    delta: str
    text: str
    done: bool
    error: str | None

    @classmethod
    def from_domain(cls, message_id: strawberry.ID, e: ReplyEvent) -> ChatReplyEvent:
        return cls(message_id=message_id, delta=e.delta, text=e.text, done=e.done, error=e.error)


@strawberry.type
class TrainvxMemory(Node):
    id: strawberry.ID
    key: str
    value: str
    updated_at: datetime

    @classmethod
    def from_domain(cls, m: model.TrainvxMemory) -> TrainvxMemory:
        return cls(id=to_global_id("TrainvxMemory", m.id), key=m.key, value=m.value, updated_at=m.updated_at)


@strawberry.type
class Plan:
    tier: PlanTierEnum
    name: str
    price_cents: int
    ai_tokens_monthly: int
    messages_monthly: int

    @classmethod
    def from_domain(cls, p: model.Plan) -> Plan:
        return cls(
            tier=p.tier,
            name=p.name,
            price_cents=p.price_cents,
            ai_tokens_monthly=p.ai_tokens_monthly,
            messages_monthly=p.messages_monthly,
        )


@strawberry.input
class StartChatSessionInput:
    title: str | None = None


@strawberry.type
class StartChatSessionPayload:
    session: ChatSession | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class SendChatMessageInput:
    session_id: strawberry.ID
    content: str


@strawberry.type
class SendChatMessagePayload:
    user_message: ChatMessage | None = None
    reply_message: ChatMessage | None = strawberry.field(
        default=None,
        description="The assistant's reply, status STREAMING; follow it with Subscription.chatReply.",
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class UpsertTrainvxMemoryInput:
    key: str
    value: str


@strawberry.type
class UpsertTrainvxMemoryPayload:
    memory: TrainvxMemory | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class DeleteTrainvxMemoryInput:
    key: str


@strawberry.type
class DeleteTrainvxMemoryPayload:
    deleted_key: str | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class GenerateStrategyInput:
    goals: str | None = None
