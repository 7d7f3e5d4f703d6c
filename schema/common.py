"""Shared GraphQL building blocks: Node, global IDs, PageInfo, UserError, enums."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import TYPE_CHECKING, TypeAlias, TypeVar

import strawberry
from strawberry.types import Info

from domain.errors import DomainError, ErrorCode, NotFound
from domain.model import ApiScope, OnboardingStepKey, PlanTier, Role
from domain.pagination import Page

_T = TypeVar("_T")

if TYPE_CHECKING:
    from resolvers.context import Context

    AppInfo = Info[Context, None]
else:
    AppInfo = Info

# strawberry.enum marks the domain's Python enum itself as a GraphQL enum (and returns it), so fields
# are annotated with the enum directly; the aliases keep the GraphQL names visible here.
RoleEnum: TypeAlias = Role
strawberry.enum(Role, name="Role")
PlanTierEnum: TypeAlias = PlanTier
strawberry.enum(PlanTier, name="PlanTier")
ApiScopeEnum: TypeAlias = ApiScope
strawberry.enum(ApiScope, name="ApiScope")
OnboardingStepKeyEnum: TypeAlias = OnboardingStepKey
strawberry.enum(OnboardingStepKey, name="OnboardingStepKey")
UserErrorCode: TypeAlias = ErrorCode
strawberry.enum(ErrorCode, name="UserErrorCode")


@strawberry.interface(description="An object with an opaque global ID, fetchable with `node(id:)`.")
class Node:
    id: strawberry.ID


def to_global_id(type_name: str, ident: uuid.UUID) -> strawberry.ID:
    return strawberry.ID(base64.urlsafe_b64encode(f"{type_name}:{ident}".encode()).decode().rstrip("="))


def from_global_id(value: str) -> tuple[str, uuid.UUID] | None:
    """None for anything that is not one of our IDs: callers answer NOT_FOUND, never a crash."""
    try:
        raw = base64.urlsafe_b64decode((value + "=" * (-len(value) % 4)).encode()).decode()
        type_name, _, ident = raw.partition(":")
        return type_name, uuid.UUID(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def expect_global_id(value: str, type_name: str, *, field: str) -> uuid.UUID:
    parsed = from_global_id(value)
    if parsed is None or parsed[0] != type_name:
        raise NotFound(f"No {type_name} with this ID", field=[field])
    return parsed[1]


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def from_page(cls, page: Page[_T]) -> PageInfo:
        cursors = [c.encode() for c in page.cursors]
        return cls(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else None,
        )


@strawberry.type
class UserError:
    field: list[str] | None
    message: str
    code: UserErrorCode

    @classmethod
    def from_domain(cls, error: DomainError) -> UserError:
        return cls(field=error.field, message=error.message, code=error.code)

    @classmethod
    def list_of(cls, error: DomainError) -> list[UserError]:
        return [cls.from_domain(error)]
