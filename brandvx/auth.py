"""Turn request credentials into an ``Actor``: a JWT user or a partner API key, in one tenant."""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from domain.api_keys import hash_token, looks_like_api_key
from domain.model import Actor, ApiScope, Role
from integrations.auth_jwt import JwtVerifier, TokenError
from persistence.db import Database
from persistence.unit_of_work import Scope, SqlUnit

log = logging.getLogger("brandvx.auth")


@dataclass(frozen=True)
class AuthFailure(Exception):
    status: int
    code: str
    message: str
    # The WebSocket close reason (close frames allow 123 bytes): `invalid token`, `token expired`,
    # `key revoked`, `unknown tenant` or `authentication unavailable`.
    reason: str = "invalid token"
    retry_after_seconds: float | None = None


def unauthenticated(message: str, reason: str = "invalid token") -> AuthFailure:
    return AuthFailure(401, "UNAUTHENTICATED", message, reason)


def forbidden(message: str) -> AuthFailure:
    return AuthFailure(403, "FORBIDDEN", message, "unknown tenant")


def parse_tenant_header(value: str | None) -> uuid.UUID | None:
    """``X-Tenant-Id`` takes the tenant's UUID or its global ID (as the API shows it)."""
    if value is None or not value.strip():
        return None
    raw = value.strip()
    try:
        return uuid.UUID(raw)
    except ValueError:
        pass
    try:
        decoded = base64.urlsafe_b64decode((raw + "=" * (-len(raw) % 4)).encode()).decode()
        type_name, _, ident = decoded.partition(":")
        if type_name == "Tenant":
            return uuid.UUID(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise AuthFailure(400, "BAD_USER_INPUT", "X-Tenant-Id must be a tenant ID", "unknown tenant")


def bearer_token(headers: Mapping[str, str]) -> str:
    value = headers.get("authorization") or headers.get("Authorization")
    if not value:
        raise unauthenticated("Missing Authorization header: send `Authorization: Bearer <token>`")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("Authorization must be `Bearer <token>`")
    return token.strip()


class Authenticator:
    def __init__(self, db: Database, verifier: JwtVerifier | None) -> None:
        self._db = db
        self._verifier = verifier

    async def authenticate(self, headers: Mapping[str, str], unit: SqlUnit | None = None) -> Actor:
        """The caller, looked up in ``unit`` (the request's unit of work, which is then scoped to the
        caller: the lookup and the operation share one transaction) or in a unit of its own."""
        token = bearer_token(headers)
        tenant_id = parse_tenant_header(headers.get("x-tenant-id") or headers.get("X-Tenant-Id"))
        own = unit is None
        unit = unit or self._db.unit()
        try:
            if looks_like_api_key(token):
                actor = await self._api_key_actor(unit, token, tenant_id)
            else:
                actor = await self._user_actor(unit, token, tenant_id)
        finally:
            if own:
                await unit.finish()
        await unit.rescope(Scope.of(actor))
        return actor

    async def _api_key_actor(self, unit: SqlUnit, token: str, tenant_id: uuid.UUID | None) -> Actor:
        token_hash = hash_token(token)
        await unit.rescope(Scope(api_key_hash=token_hash))
        async with unit.join() as uow:
            key = await uow.api_keys.authenticate(token_hash)
            revoked = key is None and await uow.api_keys.is_revoked(token_hash)
        if key is None:
            raise unauthenticated("Invalid or revoked API key", "key revoked" if revoked else "invalid token")
        if tenant_id is not None and tenant_id != key.tenant_id:
            raise forbidden("This API key belongs to another tenant")
        # A key acts as staff of its tenant, limited further by its scopes.
        return Actor(
            user_id=f"apikey:{key.id}",
            tenant_id=key.tenant_id,
            role=Role.STAFF,
            api_key_id=key.id,
            scopes=frozenset(ApiScope(s) for s in key.scopes),
        )

    async def _user_actor(self, unit: SqlUnit, token: str, tenant_id: uuid.UUID | None) -> Actor:
        if self._verifier is None:
            raise unauthenticated("Sign-in is not configured: set BRANDVX_JWT_SECRET or BRANDVX_JWKS_URL")
        try:
            verified = await self._verifier.verify(token)
        except TokenError as exc:
            if exc.reason == "authentication unavailable":
                raise AuthFailure(
                    503, "UNAUTHENTICATED", "Sign-in keys are unavailable; try again", exc.reason
                ) from None
            reason = "token expired" if exc.reason == "expired" else "invalid token"
            raise unauthenticated(f"Invalid token: {exc.reason}", reason) from None
        user_id = verified.user_id
        await unit.rescope(Scope(tenant_id=tenant_id, user_id=user_id))
        async with unit.join() as uow:
            role, is_ops = await uow.tenants.access_of(tenant_id, user_id)
        if tenant_id is not None and role is None:
            if not is_ops:
                raise forbidden("You are not a member of this tenant")
            role = Role.OPS
        return Actor(
            user_id=user_id,
            email=verified.email,
            tenant_id=tenant_id,
            role=role,
            is_ops=is_ops,
            expires_at=_expiry(verified.claims.get("exp")),
        )


def _expiry(exp: object) -> datetime | None:
    # pyjwt has checked that ``exp`` is a number in the future.
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return datetime.fromtimestamp(exp, UTC)
    return None
