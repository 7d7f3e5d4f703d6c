"""AskVX fields of the root types (mixed into Query, Mutation and Subscription)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import strawberry

from domain.ai import ReplyEvent
from domain.errors import DomainError
from resolvers import (
    askvx_queries,
    chat_message_send,
    chat_session_start,
    strategy_generate,
    trainvx_memory_delete,
    trainvx_memory_upsert,
)
from schema.askvx import (
    ChatMessage,
    ChatReplyEvent,
    ChatSession,
    ChatSessionConnection,
    DeleteTrainvxMemoryInput,
    DeleteTrainvxMemoryPayload,
    GenerateStrategyInput,
    Plan,
    SendChatMessageInput,
    SendChatMessagePayload,
    StartChatSessionInput,
    StartChatSessionPayload,
    TrainvxMemory,
    UpsertTrainvxMemoryInput,
    UpsertTrainvxMemoryPayload,
)
from schema.common import AppInfo, UserError, expect_global_id, from_global_id
from schema.errors import coded_stream
from schema.jobs import Job, JobPayload


@strawberry.type
class AskvxQuery:
    @strawberry.field(description="Newest first.")
    async def chat_sessions(
        self, info: AppInfo, first: int | None = None, after: str | None = None
    ) -> ChatSessionConnection:
        return ChatSessionConnection.from_page(
            await askvx_queries.list_sessions(info.context, first=first, after=after)
        )

    @strawberry.field
    async def trainvx_memories(self, info: AppInfo) -> list[TrainvxMemory]:
        return [TrainvxMemory.from_domain(m) for m in await askvx_queries.list_memories(info.context)]

    @strawberry.field(description="A job of the caller's tenant; null for any other id.")
    async def job(self, info: AppInfo, id: strawberry.ID) -> Job | None:
        parsed = from_global_id(id)
        if parsed is None or parsed[0] != "Job":
            return None
        found = await askvx_queries.get_job(info.context, parsed[1])
        return Job.from_domain(found) if found else None

    @strawberry.field(description="Plan tiers with their monthly AI caps.")
    async def plans(self, info: AppInfo) -> list[Plan]:
        return [Plan.from_domain(p) for p in await askvx_queries.list_plans(info.context)]


@strawberry.type
class AskvxMutation:
    @strawberry.mutation
    async def start_chat_session(
        self, info: AppInfo, input: StartChatSessionInput
    ) -> StartChatSessionPayload:
        try:
            session = await chat_session_start.start_chat_session(info.context, title=input.title)
        except DomainError as e:
            return StartChatSessionPayload(user_errors=UserError.list_of(e))
        return StartChatSessionPayload(session=ChatSession.from_domain(session))

    @strawberry.mutation(description="Store the question and start the reply; follow it with chatReply.")
    async def send_chat_message(self, info: AppInfo, input: SendChatMessageInput) -> SendChatMessagePayload:
        try:
            session_id = expect_global_id(input.session_id, "ChatSession", field="sessionId")
            question, reply = await chat_message_send.send_chat_message(
                info.context, session_id=session_id, content=input.content
            )
        except DomainError as e:
            return SendChatMessagePayload(user_errors=UserError.list_of(e))
        return SendChatMessagePayload(
            user_message=ChatMessage.from_domain(question), reply_message=ChatMessage.from_domain(reply)
        )

    @strawberry.mutation
    async def upsert_trainvx_memory(
        self, info: AppInfo, input: UpsertTrainvxMemoryInput
    ) -> UpsertTrainvxMemoryPayload:
        try:
            memory = await trainvx_memory_upsert.upsert_trainvx_memory(
                info.context, key=input.key, value=input.value
            )
        except DomainError as e:
            return UpsertTrainvxMemoryPayload(user_errors=UserError.list_of(e))
        return UpsertTrainvxMemoryPayload(memory=TrainvxMemory.from_domain(memory))

    @strawberry.mutation
    async def delete_trainvx_memory(
        self, info: AppInfo, input: DeleteTrainvxMemoryInput
    ) -> DeleteTrainvxMemoryPayload:
        try:
            key = await trainvx_memory_delete.delete_trainvx_memory(info.context, key=input.key)
        except DomainError as e:
            return DeleteTrainvxMemoryPayload(user_errors=UserError.list_of(e))
        return DeleteTrainvxMemoryPayload(deleted_key=key)

    @strawberry.mutation(
        description="Write a markdown strategy document in a job; follow the job for progress."
    )
    async def generate_strategy(self, info: AppInfo, input: GenerateStrategyInput) -> JobPayload:
        try:
            job = await strategy_generate.generate_strategy(info.context, goals=input.goals)
        except DomainError as e:
            return JobPayload(user_errors=UserError.list_of(e))
        return JobPayload(job=Job.from_domain(job))


@strawberry.type
class AskvxSubscription:
    @strawberry.subscription(
        description=(
            "Streams a reply begun by sendChatMessage; replays what was already produced, so a late or "
            "reconnecting subscriber misses nothing."
        )
    )
    async def chat_reply(
        self, info: AppInfo, message_id: strawberry.ID
    ) -> AsyncGenerator[ChatReplyEvent, None]:
        async def events() -> AsyncIterator[ReplyEvent]:
            ident = expect_global_id(message_id, "ChatMessage", field="messageId")
            async for event in askvx_queries.follow_reply(info.context, ident):
                yield event

        async for event in coded_stream(events()):
            yield ChatReplyEvent.from_domain(message_id, event)
