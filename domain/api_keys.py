"""Partner API keys: shown once, stored only as a hash, scoped, revocable."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence

from domain.access import require_admin, require_read
from domain.errors import InvalidInput, NotFound
from domain.model import Actor, ApiKey, ApiScope
from domain.ports import UnitOfWork

TOKEN_PREFIX = "bvx_"  # noqa: S105 - a public prefix, not a secret
PREFIX_LENGTH = 12  # what the UI shows to tell keys apart: "bvx_" + 8 characters


def hash_token(token: str) -> bytes:
    # The token carries 256 random bits, so a plain SHA-256 is enough (no password hashing needed).
    return hashlib.sha256(token.encode()).digest()


def looks_like_api_key(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and 20 <= len(token) <= 100


async def create_api_key(
    uow: UnitOfWork, actor: Actor, *, name: str, scopes: Sequence[ApiScope]
) -> tuple[ApiKey, str]:
    tenant_id = require_admin(actor)
    cleaned = " ".join(name.split())
    if not 1 <= len(cleaned) <= 100:
        raise InvalidInput("Name must be 1 to 100 characters", field=["name"])
    if not scopes:
        raise InvalidInput("Choose at least one scope", field=["scopes"])
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = await uow.api_keys.add(
        key_id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=cleaned,
        prefix=token[:PREFIX_LENGTH],
        token_hash=hash_token(token),
        scopes=sorted(set(scopes)),
        created_by=actor.user_id,
    )
    return key, token


async def list_api_keys(uow: UnitOfWork, actor: Actor) -> Sequence[ApiKey]:
    return await uow.api_keys.list_active(require_read(actor))


async def revoke_api_key(uow: UnitOfWork, actor: Actor, *, key_id: uuid.UUID) -> uuid.UUID:
    tenant_id = require_admin(actor)
    if not await uow.api_keys.revoke(tenant_id, key_id):
        raise NotFound("API key not found", field=["apiKeyId"])
    return key_id
