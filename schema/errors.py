"""Top-level GraphQL errors: every one carries ``extensions.code``; internal ones are masked."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import sentry_sdk
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

from domain.errors import DomainError, ErrorCode
from persistence.availability import RETRY_AFTER_SECONDS, record_failure

log = logging.getLogger("brandvx.graphql")

# Codes a client may see at the top level (the contract lists them).
UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
BAD_USER_INPUT = "BAD_USER_INPUT"
RATE_LIMITED = "RATE_LIMITED"
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
INTERNAL = "INTERNAL"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
UNAVAILABLE_MESSAGE = "The service is temporarily unavailable. Retry in {seconds} s."

_DOMAIN_TO_TOP_LEVEL = {
    ErrorCode.INVALID: BAD_USER_INPUT,
    ErrorCode.FORBIDDEN: FORBIDDEN,
    ErrorCode.NOT_FOUND: NOT_FOUND,
    ErrorCode.LIMIT_EXCEEDED: RATE_LIMITED,
}

_LIMITER_PHRASES = ("exceeds maximum operation depth", "aliases found", "Document contains more than")


def code_for(error: GraphQLError) -> str:
    """The code of an error that has none: a query limit hit, or else the client's mistake."""
    return QUERY_TOO_COMPLEX if any(p in error.message for p in _LIMITER_PHRASES) else BAD_USER_INPUT


class ApiError(GraphQLError):
    def __init__(self, message: str, code: str, **extra: Any) -> None:
        super().__init__(message, extensions={"code": code, **extra})


def from_domain_error(error: DomainError) -> ApiError:
    extra: dict[str, Any] = {"field": error.field} if error.field else {}
    return ApiError(error.message, _DOMAIN_TO_TOP_LEVEL.get(error.code, BAD_USER_INPUT), **extra)


def _is_expected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is None or isinstance(original, GraphQLError | DomainError)


class MaskInternalErrors(MaskErrors):
    """Replace unexpected exceptions with a generic INTERNAL error whose id is in the log and Sentry."""

    def __init__(self) -> None:
        super().__init__(
            should_mask_error=lambda e: not _is_expected(e), error_message="Internal server error"
        )

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if original is not None and (unavailable := unavailable_error(original)) is not None:
            return GraphQLError(
                unavailable.message,
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                extensions=unavailable.extensions,
            )
        error_id = uuid.uuid4().hex[:16]
        # The traceback goes to the log under the id; the client sees only the id.
        log.error(
            "internal error %s in %s",
            error_id,
            ".".join(str(p) for p in error.path or ()),
            exc_info=(type(original), original, original.__traceback__) if original else None,
        )
        if original is not None:
            with sentry_sdk.new_scope() as scope:
                scope.set_tag("error_id", error_id)
                sentry_sdk.capture_exception(original)
        return GraphQLError(
            "Internal server error",
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": INTERNAL, "errorId": error_id},
        )


def mask_uncaught(error: GraphQLError) -> GraphQLError:
    """An error raised before execution (by an extension) skips MaskErrors: mask it the same way."""
    if _is_expected(error) or (error.extensions or {}).get("code"):
        return error
    return MaskInternalErrors().anonymise_error(error)


class ErrorCodes(SchemaExtension):
    """Give every remaining error a code: domain errors keep theirs, parse/validation get one."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if not errors:
            return
        fixed: list[GraphQLError] = []
        for error in errors:
            original = error.original_error
            if not _is_expected(error):
                pass  # MaskInternalErrors owns these
            elif isinstance(original, DomainError):
                mapped = from_domain_error(original)
                error = GraphQLError(
                    mapped.message, nodes=error.nodes, path=error.path, extensions=mapped.extensions
                )
            elif not (error.extensions or {}).get("code"):
                error.extensions = {**(error.extensions or {}), "code": code_for(error)}
            fixed.append(error)
        result.errors = fixed  # type: ignore[union-attr]


T = TypeVar("T")


def unavailable_error(original: BaseException) -> ApiError | None:
    """SERVICE_UNAVAILABLE with a retry hint when ``original`` says Redis or PostgreSQL is unreachable
    (logged once per outage, under the id the client gets); None for anything else."""
    failure = record_failure(original)
    if failure is None:
        return None
    _dependency, error_id = failure
    return ApiError(
        UNAVAILABLE_MESSAGE.format(seconds=RETRY_AFTER_SECONDS),
        SERVICE_UNAVAILABLE,
        errorId=error_id,
        retryAfterSeconds=RETRY_AFTER_SECONDS,
    )


def _internal(original: BaseException) -> ApiError:
    unavailable = unavailable_error(original)
    if unavailable is not None:
        return unavailable
    error_id = uuid.uuid4().hex[:16]
    log.error("internal error %s in a subscription", error_id, exc_info=original)
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("error_id", error_id)
        sentry_sdk.capture_exception(original)
    return ApiError("Internal server error", INTERNAL, errorId=error_id)


async def coded_stream(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Subscriptions send each event's errors as they happen, before any extension sees them:
    code them here (domain errors keep their code, anything else is masked with an id)."""
    try:
        async for item in stream:
            yield item
    except GraphQLError:
        raise
    except DomainError as exc:
        raise from_domain_error(exc) from None
    except Exception as exc:
        raise _internal(exc) from None
