"""Partner API keys."""

from __future__ import annotations

from datetime import datetime

import strawberry

from domain import model
from schema.common import ApiScopeEnum, Node, UserError, to_global_id


@strawberry.type
class ApiKey(Node):
    id: strawberry.ID
    name: str
    prefix: str
    scopes: list[ApiScopeEnum]
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def from_domain(cls, key: model.ApiKey) -> ApiKey:
        return cls(
            id=to_global_id("ApiKey", key.id),
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes),
            created_at=key.created_at,
            last_used_at=key.last_used_at,
        )


@strawberry.input
class CreateApiKeyInput:
    name: str
    scopes: list[ApiScopeEnum]


@strawberry.type
class CreateApiKeyPayload:
    api_key: ApiKey | None = None
    token: str | None = strawberry.field(default=None, description="The secret, shown once.")
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RevokeApiKeyInput:
    api_key_id: strawberry.ID


@strawberry.type
class RevokeApiKeyPayload:
    revoked_api_key_id: strawberry.ID | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
