"""Keyset pages: one statement for a page and whether another follows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, String, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from domain.errors import InvalidInput
from domain.pagination import Cursor, Page, PageRequest

T = TypeVar("T")


async def keyset_page(
    conn: AsyncConnection,
    query: Select[Any],
    page: PageRequest,
    *,
    sort: ColumnElement[Any],
    ident: ColumnElement[Any],
    descending: bool,
    item: Callable[[Any], T],
    cursor_key: Callable[[Any], Any],
) -> Page[T]:
    """Rows after the page's cursor in (sort, id) order, one more than asked to learn has_next."""
    if page.after is not None:
        if not isinstance(page.after.sort_key, str if isinstance(sort.type, String) else datetime):
            raise InvalidInput("This cursor belongs to another list", field=["after"])
        position = tuple_(sort, ident)
        after = tuple_(page.after.sort_key, page.after.id)
        query = query.where(position < after if descending else position > after)
    order = (sort.desc(), ident.desc()) if descending else (sort, ident)
    rows = (await conn.execute(query.order_by(*order).limit(page.first + 1))).all()
    kept = rows[: page.first]
    return Page(
        items=[item(r) for r in kept],
        cursors=[Cursor(cursor_key(r), r.id) for r in kept],
        has_next=len(rows) > page.first,
        has_previous=page.after is not None,
    )
