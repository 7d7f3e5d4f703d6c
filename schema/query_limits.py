"""Depth, alias and field limits measured in time linear in the document, before validation.

Strawberry's depth and alias limiters walk every fragment again at each spread: a chain of
fragments each spreading the next one twice doubles the work per level (18 levels, 262,144
walks), and graphql-core's own rules then walk the same expansion. Here each fragment is measured
once (memoised) and the measures of its spreads are added up, so the expanded size of any
document is known after one pass over it; a document that expands past the limits is refused
before any other rule runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from schema.errors import QUERY_TOO_COMPLEX


@dataclass(frozen=True)
class Shape:
    """What a selection expands to: nesting depth, aliased fields, fields."""

    depth: int = 0
    aliases: int = 0
    fields: int = 0


@dataclass
class DocumentShape:
    operations: dict[str | None, Shape] = field(default_factory=dict)
    visited: int = 0  # selections looked at: at most the number of selections written


class _Measure:
    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self.fragments = fragments
        self.memo: dict[str, Shape] = {}
        self.open: set[str] = set()  # a fragment cycle is invalid; never loop on one anyway
        self.visited = 0

    def selections(self, selection_set: SelectionSetNode | None) -> Shape:
        depth = aliases = fields = 0
        for selection in selection_set.selections if selection_set else ():
            self.visited += 1
            if isinstance(selection, FieldNode):
                if selection.name.value.startswith("__"):
                    continue  # introspection is priced by the cost limit, not nested here
                inner = self.selections(selection.selection_set)
                if selection.selection_set:
                    depth = max(depth, 1 + inner.depth)
                aliases += inner.aliases + (1 if selection.alias else 0)
                fields += 1 + inner.fields
                continue
            if isinstance(selection, InlineFragmentNode):
                inner = self.selections(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                inner = self.fragment(selection.name.value)
            else:
                continue
            depth = max(depth, inner.depth)
            aliases += inner.aliases
            fields += inner.fields
        return Shape(depth, aliases, fields)

    def fragment(self, name: str) -> Shape:
        known = self.memo.get(name)
        if known is not None:
            return known
        definition = self.fragments.get(name)
        if definition is None or name in self.open:
            return Shape()  # validation reports unknown fragments and cycles
        self.open.add(name)
        shape = self.selections(definition.selection_set)
        self.open.discard(name)
        self.memo[name] = shape
        return shape


def measure(document: DocumentNode) -> DocumentShape:
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    measure = _Measure(fragments)
    result = DocumentShape()
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            name = definition.name.value if definition.name else None
            result.operations[name] = measure.selections(definition.selection_set)
    result.visited = measure.visited
    return result


@dataclass(frozen=True)
class QueryLimits:
    max_depth: int
    max_aliases: int
    max_fields: int

    def check(self, document: DocumentNode) -> None:
        for name, shape in measure(document).operations.items():
            label = name or "anonymous"
            if shape.depth > self.max_depth:
                raise _too_complex(f"'{label}' exceeds maximum operation depth of {self.max_depth}")
            if shape.aliases > self.max_aliases:
                raise _too_complex(f"{shape.aliases} aliases found. Allowed: {self.max_aliases}")
            if shape.fields > self.max_fields:
                raise _too_complex(
                    f"'{label}' selects {shape.fields} fields once its fragments are expanded; "
                    f"the limit is {self.max_fields}"
                )


def _too_complex(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": QUERY_TOO_COMPLEX})


class QueryLimitsExtension(SchemaExtension):
    """Runs before validation (first in the list): an over-limit document is never validated."""

    def __init__(self, limits: QueryLimits, *, execution_context: ExecutionContext | None = None) -> None:
        if execution_context is not None:
            self.execution_context = execution_context
        self.limits = limits

    def on_validate(self) -> Iterator[None]:
        document = self.execution_context.graphql_document
        if document is not None:
            self.limits.check(document)
        yield
