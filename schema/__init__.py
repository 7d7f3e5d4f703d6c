"""The GraphQL schema: one Strawberry ``Schema`` built from hand-declared types."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import strawberry
from graphql import GraphQLError, OperationType
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


class UnitOfWorkPerOperation(SchemaExtension):
    """Commit the request's unit of work once, when the operation ends (a query's one read
    transaction; for a mutation, whatever ran after its last field). Rolled back if doomed."""

    async def on_operation(self) -> AsyncIterator[None]:
        yield
        context = self.execution_context.context
        if isinstance(context, Context) and context.unit is not None:
            await context.unit.finish()


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

    def execute_field(
        self, parent_type: Any, source: Any, field_details_list: Any, path: Any, position_context: Any
    ) -> Any:
        """Each root mutation field (the spec runs them one after another) is one transaction of the
        request's unit of work, its payload included: committed when the field is complete, rolled
        back when it raised or reported an error."""
        result = super().execute_field(parent_type, source, field_details_list, path, position_context)
        context = self.context_value
        if (
            path.prev is not None
            or self.operation.operation is not OperationType.MUTATION
            or not isinstance(context, Context)
            or context.unit is None
        ):
            return result
        unit = context.unit
        errors_before = len(self.collected_errors.errors)

        async def in_unit() -> Any:
            try:
                value = await result if self.is_awaitable(result) else result
            except BaseException:
                await unit.finish(commit=False)
                raise
            await unit.finish(commit=len(self.collected_errors.errors) == errors_before)
            return value

        return in_unit()


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
        UnitOfWorkPerOperation,
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
