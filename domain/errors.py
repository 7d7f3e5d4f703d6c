"""One error hierarchy for expected failures.

Expected failures are data: resolvers turn a ``DomainError`` into a payload
``userError`` (or, for auth, a top-level error with the same code). Anything
that is not a ``DomainError`` is a bug and gets masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID = "INVALID"
    NOT_FOUND = "NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    CONFLICT = "CONFLICT"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    NOT_CONNECTED = "NOT_CONNECTED"
    PROVIDER_ERROR = "PROVIDER_ERROR"


class DomainError(Exception):
    code: ErrorCode = ErrorCode.INVALID

    def __init__(self, message: str, *, field: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field: list[str] | None = list(field) if field is not None else None


class InvalidInput(DomainError):
    code = ErrorCode.INVALID


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class Forbidden(DomainError):
    code = ErrorCode.FORBIDDEN


class Conflict(DomainError):
    code = ErrorCode.CONFLICT


class LimitExceeded(DomainError):
    code = ErrorCode.LIMIT_EXCEEDED
