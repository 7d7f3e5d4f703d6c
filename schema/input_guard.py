"""One check for every text a request brings in: no NUL character and no unpaired surrogate in
any string, whether it comes as a variable (at any depth, keys included) or as a literal written
in the document. PostgreSQL's text types refuse NUL (an INTERNAL error deep in a resolver), and a
lone surrogate cannot be encoded; refusing both here, before anything runs, keeps every field,
present and future, from having to know."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import DocumentNode, GraphQLError, StringValueNode, Visitor, visit
from strawberry.extensions import SchemaExtension

from domain.text import UNSTORABLE_TEXT_MESSAGE, is_storable_text
from schema.errors import BAD_USER_INPUT, ApiError


def _bad_path(value: Any, path: str) -> str | None:
    """The path of the first unstorable string inside a JSON-like value, or None."""
    if isinstance(value, str):
        return None if is_storable_text(value) else path
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and not is_storable_text(key):
                return path
            found = _bad_path(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _bad_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


class _Literals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.bad: StringValueNode | None = None

    def enter_string_value(self, node: StringValueNode, *_: Any) -> Any:
        if not is_storable_text(node.value):
            self.bad = node
            return self.BREAK
        return None


def check_text_input(document: DocumentNode | None, variables: Mapping[str, Any] | None) -> None:
    """Raise BAD_USER_INPUT naming the variable (or the literal's position) that holds bad text."""
    for name, value in (variables or {}).items():
        found = _bad_path(value, name)
        if found is not None or not is_storable_text(name):
            where = found or name
            raise ApiError(f"Variable ${where} {UNSTORABLE_TEXT_MESSAGE}", BAD_USER_INPUT, field=where)
    if document is not None:
        literals = _Literals()
        visit(document, literals)
        if literals.bad is not None:
            raise GraphQLError(
                f"A string in the query {UNSTORABLE_TEXT_MESSAGE}",
                nodes=[literals.bad],
                extensions={"code": BAD_USER_INPUT},
            )


class TextInputGuard(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        run = self.execution_context
        check_text_input(run.graphql_document, run.variables)
        yield
