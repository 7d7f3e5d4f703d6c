"""The GraphQL schema: one Strawberry ``Schema`` built from hand-declared types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
)
from strawberry.extensions.base_extension import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionContext

from resolvers.context import Context
from schema.api_keys import ApiKey
from schema.askvx import ChatMessage, ChatSession, TrainvxMemory
from schema.contacts import Contact
from schema.cost import CostLimit
from schema.errors import ErrorCodes, MaskInternalErrors
from schema.input_guard import TextInputGuard
from schema.jobs import Job
from schema.query_limits import QueryLimits, QueryLimitsExtension
from schema.root import Mutation, Query, Subscription
from schema.syncs import Appointment, InventoryItem
from schema.tenancy import Tenant


class FreshLoaders(SchemaExtension):
    """DataLoaders cache per operation: a WebSocket connection shares one context across operations."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context):
            context.reset_loaders()
        yield


class PerEventExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Subscription events without a growing memo and without cyclic garbage.

    graphql-core copies the subscription's executor for every event, sharing its memo of collected
    subfields, which is keyed by the identity of each event's (new) field list: the memo gained an
    entry per event for the life of the subscription, and freeing it left ~13 cyclic objects per
    event for the garbage collector (full collections of 40-100 ms while replies stream). A memo per
    event keeps what it is for (lists of values within one event) and frees with the event.
    """

    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}
        return executor


class BrandvxSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # MaskInternalErrors logs internal errors with their id; client errors are not log-worthy and
        # may echo user input (PII), so nothing more is logged here.
        return None


def build_schema(
    *,
    max_depth: int = 10,
    max_aliases: int = 15,
    max_tokens: int = 2000,
    max_fields: int = 2000,
    introspection: bool = True,
) -> strawberry.Schema:
    limits = QueryLimits(max_depth=max_depth, max_aliases=max_aliases, max_fields=max_fields)
    extensions: list[Any] = [
        lambda: QueryLimitsExtension(limits),  # first: nothing else walks an over-limit document
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        lambda: ParserCache(maxsize=512),
        lambda: ValidationCache(maxsize=512),
        MaskInternalErrors,
        ErrorCodes,
        FreshLoaders,
        TextInputGuard,
        CostLimit,
    ]
    if not introspection:
        from strawberry.extensions import DisableIntrospection

        extensions.append(DisableIntrospection)
    return BrandvxSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[
            Tenant,
            Contact,
            ApiKey,
            ChatSession,
            ChatMessage,
            TrainvxMemory,
            Job,
            Appointment,
            InventoryItem,
        ],
        extensions=extensions,
        execution_context_class=PerEventExecutionContext,
        config=StrawberryConfig(disable_field_suggestions=not introspection),
    )


__all__ = ["SchemaExtension", "build_schema"]
