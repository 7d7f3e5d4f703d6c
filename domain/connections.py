"""Provider connections: signed OAuth state, encrypted tokens, refresh before expiry, revoke."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from domain.access import require_admin, require_read
from domain.crypto import Keyring, aad_for
from domain.errors import DomainError, ErrorCode, InvalidInput, NotFound
from domain.model import Actor, Connection, ConnectionStatus, Provider
from domain.ports import UnitOfWork
from domain.sync import OAuthClient, ProviderError, TokenSet

STATE_TTL_SECONDS = 600
REFRESH_MARGIN = timedelta(minutes=5)


class NotConnected(DomainError):
    code = ErrorCode.NOT_CONNECTED


class ProviderFailed(DomainError):
    code = ErrorCode.PROVIDER_ERROR


@dataclass(frozen=True)
class OAuthState:
    tenant_id: uuid.UUID
    user_id: str
    provider: Provider
    redirect_uri: str | None
    nonce: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_state(key: bytes, state: OAuthState) -> str:
    payload = json.dumps(
        {
            "t": str(state.tenant_id),
            "u": state.user_id,
            "p": state.provider.value,
            "r": state.redirect_uri,
            "n": state.nonce,
            "e": state.expires_at,
        },
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify_state(key: bytes, token: str, *, now: float | None = None) -> OAuthState:
    """The state's content if its signature is ours and it has not expired; InvalidInput otherwise."""
    try:
        payload_text, mac_text = token.split(".", 1)
        payload = _unb64(payload_text)
        mac = _unb64(mac_text)
    except (ValueError, binascii.Error):
        raise InvalidInput("The connection link is malformed; start connecting again") from None
    if not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
        raise InvalidInput("The connection link was not issued by BrandVX; start connecting again")
    data = json.loads(payload)
    state = OAuthState(
        tenant_id=uuid.UUID(data["t"]),
        user_id=data["u"],
        provider=Provider(data["p"]),
        redirect_uri=data.get("r"),
        nonce=data["n"],
        expires_at=int(data["e"]),
    )
    if (now or time.time()) > state.expires_at:
        raise InvalidInput("The connection link expired; start connecting again")
    return state


def new_state(actor: Actor, provider: Provider, redirect_uri: str | None) -> OAuthState:
    tenant_id = require_admin(actor)
    return OAuthState(
        tenant_id=tenant_id,
        user_id=actor.user_id,
        provider=provider,
        redirect_uri=redirect_uri,
        nonce=secrets.token_urlsafe(16),
        expires_at=int(time.time()) + STATE_TTL_SECONDS,
    )


def check_redirect(redirect_uri: str | None, allowed_origins: list[str]) -> str | None:
    """Where the SPA wants to land after connecting: only our own origins (no open redirect)."""
    if redirect_uri is None:
        return None
    if not any(redirect_uri == o or redirect_uri.startswith(o.rstrip("/") + "/") for o in allowed_origins):
        raise InvalidInput("redirectUri must be on an allowed BrandVX origin", field=["redirectUri"])
    return redirect_uri


# ---------------------------------------------------------------- tokens at rest


def seal_tokens(
    keyring: Keyring, tenant_id: uuid.UUID, provider: Provider, tokens: TokenSet
) -> tuple[bytes, bytes | None]:
    field = f"token:{provider.value}"
    access = keyring.encrypt(tokens.access_token, aad=aad_for(tenant_id, field))
    refresh = (
        keyring.encrypt(tokens.refresh_token, aad=aad_for(tenant_id, field + ":refresh"))
        if tokens.refresh_token
        else None
    )
    return access, refresh


def open_tokens(keyring: Keyring, tenant_id: uuid.UUID, connection: Connection) -> TokenSet:
    if connection.access_token_ciphertext is None:
        raise NotConnected(f"{connection.provider.value.title()} has no stored credentials; reconnect")
    field = f"token:{connection.provider.value}"
    return TokenSet(
        access_token=keyring.decrypt(connection.access_token_ciphertext, aad=aad_for(tenant_id, field)),
        refresh_token=(
            keyring.decrypt(connection.refresh_token_ciphertext, aad=aad_for(tenant_id, field + ":refresh"))
            if connection.refresh_token_ciphertext
            else None
        ),
        expires_at=connection.expires_at,
        scopes=connection.scopes,
        account_id=connection.account_id,
    )


async def save_connection(
    uow: UnitOfWork,
    keyring: Keyring,
    tenant_id: uuid.UUID,
    provider: Provider,
    tokens: TokenSet,
    config: Mapping[str, Any] | None = None,
) -> Connection:
    access, refresh = seal_tokens(keyring, tenant_id, provider, tokens)
    return await uow.connections.save(
        provider=provider,
        account_id=tokens.account_id,
        access_token_ciphertext=access,
        refresh_token_ciphertext=refresh,
        expires_at=tokens.expires_at,
        scopes=tokens.scopes,
        config=dict(config or {}),
    )


async def usable_tokens(
    uow: UnitOfWork,
    keyring: Keyring,
    tenant_id: uuid.UUID,
    connection: Connection,
    oauth: OAuthClient | None,
    *,
    now: datetime | None = None,
) -> TokenSet:
    """The connection's tokens, refreshed first when they expire within REFRESH_MARGIN.

    A refresh the provider refuses marks the connection EXPIRED and raises NotConnected.
    """
    if connection.status is ConnectionStatus.EXPIRED:
        raise NotConnected(f"The {connection.provider.value.title()} connection expired; reconnect it")
    tokens = open_tokens(keyring, tenant_id, connection)
    moment = now or datetime.now(UTC)
    if tokens.expires_at is None or tokens.expires_at - moment > REFRESH_MARGIN:
        return tokens
    if oauth is None or not tokens.refresh_token:
        await uow.connections.mark(connection.provider, ConnectionStatus.EXPIRED, "Access expired")
        raise NotConnected(f"The {connection.provider.value.title()} connection expired; reconnect it")
    try:
        fresh = await oauth.refresh(tokens.refresh_token)
    except ProviderError as exc:
        if exc.kind in ("auth", "permanent"):
            await uow.connections.mark(connection.provider, ConnectionStatus.EXPIRED, exc.message)
            raise NotConnected(f"{exc.message}; reconnect {connection.provider.value.title()}") from None
        raise
    access, refresh = seal_tokens(keyring, tenant_id, connection.provider, fresh)
    await uow.connections.update_tokens(
        connection.provider,
        access_token_ciphertext=access,
        refresh_token_ciphertext=refresh,
        expires_at=fresh.expires_at,
    )
    return TokenSet(
        access_token=fresh.access_token,
        refresh_token=fresh.refresh_token or tokens.refresh_token,
        expires_at=fresh.expires_at,
        scopes=fresh.scopes or tokens.scopes,
        account_id=tokens.account_id,
    )


async def list_connections(uow: UnitOfWork, actor: Actor) -> list[Connection]:
    require_read(actor)
    return await uow.connections.all()


async def disconnect(uow: UnitOfWork, actor: Actor, provider: Provider) -> Connection:
    require_admin(actor)
    removed = await uow.connections.remove(provider)
    if removed is None:
        raise NotFound(f"{provider.value.title()} is not connected", field=["provider"])
    return removed


async def uninstalled(uow: UnitOfWork, provider: Provider) -> bool:
    """The provider says our app was removed from the account: the connection goes (its token is
    already dead, nothing to revoke) and the provider's queued or running syncs are cancelled.
    False when the tenant had no such connection (a repeated notice)."""
    removed = await uow.connections.remove(provider)
    for kind in ("inventory_sync", "calendar_sync"):
        job = await uow.jobs.active_with_key(f"{kind}:{provider.value}")
        if job is not None:
            await uow.jobs.request_cancel(job.id)
    return removed is not None


async def erase_provider_data(uow: UnitOfWork, provider: Provider) -> int:
    """A provider's request to erase what we hold for an account (Shopify's shop/redact): the
    connection if still there, and every inventory item synced from it. Returns the items deleted."""
    await uninstalled(uow, provider)
    return await uow.sync.remove_inventory(provider)


class ConnectFlowPort(Protocol):
    async def start(self, actor: Actor, provider: Provider, redirect_uri: str | None) -> str: ...
    async def revoke(self, tenant_id: uuid.UUID, connection: Connection) -> None: ...
