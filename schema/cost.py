"""What a GraphQL operation costs, counted from its document before it runs (like Shopify's
"requested query cost"), for the per-tenant rate limit.

Scalars and enums are free; an object is 1; a connection (a field with a ``first`` argument) is
2 + ``first`` (default 20) x what one of its nodes costs; any other list counts as 10 items; a
mutation starts at 10. Introspection (``__schema``, ``__type``) is 10 flat, ``__typename`` free.
The count is an upper bound of the work, never the rows actually returned, so a client can compute it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
    is_list_type,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.execution.values import get_variable_values
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType as StrawberryOperationType

from domain.pagination import DEFAULT_PAGE, MAX_PAGE
from resolvers.context import Context
from schema.errors import QUERY_TOO_COMPLEX, RATE_LIMITED

MUTATION_COST: Final = 10
INTROSPECTION_COST: Final = 10
LIST_ITEMS: Final = 10
CONNECTION_COST: Final = 2
MINIMUM_COST: Final = 1  # charged for a request that costs less (scalars only, __typename)
SUBSCRIPTION_COST: Final = 10  # charged when a subscription starts, on top of its selection

_Fields = GraphQLObjectType | GraphQLInterfaceType


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> int:
    """``variables`` as the client sent them: they are coerced here as execution will coerce them
    (defaults applied), and a `first` whose value cannot be known counts as the largest page."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    coerced = get_variable_values(schema, operation.variable_definitions or (), dict(variables or {}))
    known = None if isinstance(coerced, list) else coerced.coerced  # a list: coercion errors
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    root = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
        OperationType.SUBSCRIPTION: schema.subscription_type,
    }[operation.operation]
    if root is None:
        return 0
    counter = _Counter(schema, fragments, known)
    base = MUTATION_COST if operation.operation is OperationType.MUTATION else 0
    return base + counter.selections(root, operation.selection_set, in_connection=False)


class _Counter:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any] | None,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables  # None: not known (they did not coerce)
        self.visiting: set[str] = set()  # fragment cycles are invalid; never loop on one anyway
        # Each fragment is counted once per kind of place it is spread in: linear in the document.
        self.memo: dict[tuple[str, bool], int] = {}

    def selections(self, parent: Any, selection_set: SelectionSetNode | None, *, in_connection: bool) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(parent, selection, in_connection=in_connection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self._type(condition.name.value) if condition else parent
                total += self.selections(target, selection.selection_set, in_connection=in_connection)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment(selection.name.value, in_connection=in_connection)
        return total

    def _fragment(self, name: str, *, in_connection: bool) -> int:
        known = self.memo.get((name, in_connection))
        if known is not None:
            return known
        fragment = self.fragments.get(name)
        if fragment is None or name in self.visiting:
            return 0
        self.visiting.add(name)
        target = self._type(fragment.type_condition.name.value)
        cost = self.selections(target, fragment.selection_set, in_connection=in_connection)
        self.visiting.discard(name)
        self.memo[(name, in_connection)] = cost
        return cost

    def field(self, parent: Any, node: FieldNode, *, in_connection: bool) -> int:
        name = node.name.value
        if name == "__typename":
            return 0
        if name.startswith("__"):
            return INTROSPECTION_COST
        definition = parent.fields.get(name) if isinstance(parent, _Fields) else None
        if definition is None:
            return 0  # validation has already refused unknown fields
        named = get_named_type(definition.type)
        if not isinstance(named, _Fields) and not node.selection_set:
            return 0  # scalars and enums
        if "first" in definition.args:
            items = self._first(node)
            return CONNECTION_COST + items * self.selections(named, node.selection_set, in_connection=True)
        one = 1 + self.selections(named, node.selection_set, in_connection=False)
        if is_list_type(get_nullable_type(definition.type)) and not in_connection:
            return LIST_ITEMS * one  # a connection's edges/nodes are already counted by its `first`
        return one

    def _first(self, node: FieldNode) -> int:
        for argument in node.arguments or ():
            if argument.name.value != "first":
                continue
            value: Any = argument.value
            if isinstance(value, VariableNode):
                if self.variables is None:
                    return MAX_PAGE  # not known: the most a page can be
                value = self.variables.get(value.name.value)
            elif isinstance(value, IntValueNode):
                value = int(value.value)
            if value is None:
                return DEFAULT_PAGE  # what the resolver uses for a null or missing `first`
            if isinstance(value, int):
                return max(0, min(value, MAX_PAGE))
            return MAX_PAGE
        return DEFAULT_PAGE

    def _type(self, name: str) -> Any:
        return self.schema.get_type(name)


class CostLimit(SchemaExtension):
    """Spends each query's and mutation's cost (at least 1 point) from its tenant's budget (a
    user's, before they pick a tenant) and reports it in ``extensions.cost``; over budget, nothing
    runs and the error says when to retry. A subscription pays 10 + its selection's cost when it
    starts."""

    def __init__(self, *, execution_context: ExecutionContext | None = None) -> None:
        if execution_context is not None:
            self.execution_context = execution_context
        self._report: dict[str, Any] | None = None

    async def on_execute(self) -> AsyncIterator[None]:
        self._report = None
        run = self.execution_context
        context = run.context
        if isinstance(context, Context) and run.graphql_document is not None:
            cost = operation_cost(run.schema._schema, run.graphql_document, run.operation_name, run.variables)
            if run.operation_type is StrawberryOperationType.SUBSCRIPTION:
                # Charged once when it starts; its events are the producer's work, already paid.
                refusal = await self._charge(context, SUBSCRIPTION_COST + cost)
                self._report = None  # not repeated in every event
                if refusal is not None:
                    raise refusal
            else:
                # Every request costs something, even one that selects nothing but scalars.
                refusal = await self._charge(context, max(MINIMUM_COST, cost))
                if refusal is not None:
                    run.result = GraphQLExecutionResult(data=None, errors=[refusal])
        yield

    async def _charge(self, context: Context, cost: int) -> GraphQLError | None:
        self._report = {"requestedQueryCost": cost}
        budget, actor = context.services.budget, context.actor
        if budget is None or actor is None:
            return None
        if cost > budget.maximum:
            return GraphQLError(
                f"This request costs {cost} points; one request may cost at most {budget.maximum}. "
                "Ask for fewer items (`first`) or fewer fields.",
                extensions={"code": QUERY_TOO_COMPLEX, "cost": cost, "maximumCost": budget.maximum},
            )
        key = f"tenant:{actor.tenant_id}" if actor.tenant_id else f"user:{actor.user_id}"
        throttle = await budget.spend(key, cost)
        self._report["throttleStatus"] = {
            "maximumAvailable": throttle.maximum,
            "currentlyAvailable": math.floor(throttle.available),
            "restoreRate": throttle.restore_rate,
        }
        if throttle.allowed:
            return None
        return GraphQLError(
            f"Rate limited: this request costs {cost} points and {math.floor(throttle.available)} are "
            f"available; {throttle.restore_rate:g} come back each second. "
            f"Retry in {throttle.retry_after_seconds:g} s.",
            extensions={"code": RATE_LIMITED, "retryAfterSeconds": throttle.retry_after_seconds},
        )

    def get_results(self) -> dict[str, Any]:
        return {"cost": self._report} if self._report is not None else {}
