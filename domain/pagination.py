"""Keyset pagination: cursors carry the sort key and the id, never an offset."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from domain.errors import InvalidInput
from domain.text import is_storable_text

MAX_PAGE = 100
DEFAULT_PAGE = 20

T = TypeVar("T")


def utc_instant(value: datetime) -> datetime:
    """The same instant in UTC; ValueError for a time without an offset or outside years 1-9999 in
    UTC (0001-01-01T00:00-05:00 is fine, 0001-01-01T00:00+05:00 is not: it overflows)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a time needs a timezone offset")
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("time out of range") from exc


@dataclass(frozen=True)
class Cursor:
    """A position in a list sorted by (sort_key, id): a timestamp for most lists, a name for some."""

    sort_key: datetime | str
    id: uuid.UUID

    def encode(self) -> str:
        key = (
            ["t", self.sort_key.isoformat()] if isinstance(self.sort_key, datetime) else ["s", self.sort_key]
        )
        raw = json.dumps([*key, str(self.id)], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            padded = value + "=" * (-len(value) % 4)
            kind, sort_key, ident = json.loads(base64.urlsafe_b64decode(padded.encode()))
            if kind not in ("t", "s") or not isinstance(sort_key, str):
                raise ValueError("unknown cursor kind")
            if kind == "s":
                if not is_storable_text(sort_key):
                    raise ValueError("unstorable text")
                return cls(sort_key, uuid.UUID(ident))
            return cls(utc_instant(datetime.fromisoformat(sort_key)), uuid.UUID(ident))
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise InvalidInput("Invalid cursor", field=["after"]) from exc


@dataclass(frozen=True)
class PageRequest:
    first: int
    after: Cursor | None

    @classmethod
    def parse(cls, first: int | None, after: str | None) -> PageRequest:
        size = DEFAULT_PAGE if first is None else first
        if not 1 <= size <= MAX_PAGE:
            raise InvalidInput(f"`first` must be between 1 and {MAX_PAGE}", field=["first"])
        return cls(size, Cursor.decode(after) if after else None)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    cursors: Sequence[Cursor]
    has_next: bool
    has_previous: bool
