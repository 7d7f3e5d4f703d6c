"""Connecting a provider: the use case behind ``connectProvider``, OAuth callbacks and our forms.

Where the operator goes (the provider's consent page or a form we host), single-use signed links,
checking what comes back, storing the tokens encrypted, and where the operator lands afterwards.
Which provider connects how is the adapter's business (``domain.providers``); nothing here asks.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode, urlsplit

from domain import connections
from domain.connections import (
    NotConnected,
    OAuthState,
    ProviderFailed,
    check_redirect,
    new_state,
    sign_state,
    verify_state,
)
from domain.crypto import Keyring
from domain.errors import InvalidInput
from domain.model import Actor, Connection, Provider
from domain.ports import UnitOfWork
from domain.providers import ConnectForm, ContinueAt, ProviderAdapter, ProviderCatalog
from domain.sync import ProviderError, TokenSet

log = logging.getLogger("brandvx.connect")


def state_key(secret_material: str) -> bytes:
    """The OAuth state signing key, derived so it is never the same bytes as another key's."""
    return hmac.new(secret_material.encode(), b"brandvx oauth state v1", hashlib.sha256).digest()


class NonceStore(Protocol):
    """Single-use marks for signed links."""

    async def remember(self, nonce: str, ttl_seconds: int) -> None: ...
    async def exists(self, nonce: str) -> bool: ...
    async def take(self, nonce: str) -> bool:
        """Forget the nonce; True only for the one caller that found it."""
        ...


class TenantTransactions(Protocol):
    def transaction(
        self, *, tenant_id: uuid.UUID | None = None, user_id: str | None = None
    ) -> AbstractAsyncContextManager[UnitOfWork]: ...


@dataclass(frozen=True)
class ConnectUrls:
    public_url: str  # how providers and browsers reach this API
    app_url: str  # where the operator lands afterwards
    allowed_origins: tuple[str, ...]  # where a redirectUri may point (app_url's origin included)

    @classmethod
    def of(cls, *, public_url: str, app_url: str, allowed_origins: list[str]) -> ConnectUrls:
        return cls(public_url.rstrip("/"), app_url, (*allowed_origins, _origin(app_url)))

    def callback(self, provider: Provider) -> str:
        return f"{self.public_url}/oauth/{provider.value.lower()}/callback"

    def form(self, provider: Provider, token: str) -> str:
        return f"{self.public_url}/connect/{provider.value.lower()}?{urlencode({'state': token})}"


class ConnectFlow:
    def __init__(
        self,
        *,
        providers: ProviderCatalog,
        nonces: NonceStore,
        transactions: TenantTransactions,
        keyring: Keyring,
        signing_key: bytes,
        urls: ConnectUrls,
    ) -> None:
        self._providers = providers
        self._nonces = nonces
        self._tx = transactions
        self._keyring = keyring
        self._key = signing_key
        self.urls = urls

    def _adapter(self, provider: Provider) -> ProviderAdapter:
        adapter = self._providers.adapter(provider)
        if adapter is None:
            raise NotConnected(
                f"{provider.value.title()} connections are not available yet", field=["provider"]
            )
        return adapter

    def form(self, provider: Provider) -> ConnectForm | None:
        adapter = self._providers.adapter(provider)
        return adapter.connect_form() if adapter else None

    async def start(self, actor: Actor, provider: Provider, redirect_uri: str | None) -> str:
        """The URL to send the operator to: the provider's consent page, or our credentials form."""
        adapter = self._adapter(provider)
        state = new_state(actor, provider, check_redirect(redirect_uri, list(self.urls.allowed_origins)))
        mode = adapter.connect_mode()
        oauth = adapter.oauth() if mode == "oauth" else None
        if mode is None or (mode == "oauth" and oauth is None):
            raise NotConnected(
                f"{provider.value.title()} is not configured on this server", field=["provider"]
            )
        token = sign_state(self._key, state)
        await self._nonces.remember(state.nonce, connections.STATE_TTL_SECONDS)
        if oauth is None:
            return self.urls.form(provider, token)
        return oauth.authorize_url(state=token, redirect_uri=self.urls.callback(provider))

    async def _consume(self, token: str, provider: Provider) -> OAuthState:
        state = verify_state(self._key, token)
        if state.provider is not provider:
            raise InvalidInput("This connection link is for another provider")
        if not await self._nonces.take(state.nonce):
            raise InvalidInput("This connection link was already used; start connecting again")
        return state

    async def peek(self, token: str, provider: Provider) -> OAuthState:
        """Check a form's state without using it up (the form is shown, then posted)."""
        state = verify_state(self._key, token)
        if state.provider is not provider or not await self._nonces.exists(state.nonce):
            raise InvalidInput("This connection link is no longer valid; start connecting again")
        return state

    def callback_signed(self, provider: Provider, params: dict[str, str]) -> bool:
        """Whether the callback carries the provider's own signature, where it signs callbacks."""
        adapter = self._providers.adapter(provider)
        return adapter is not None and adapter.verify_callback(params)

    async def complete_oauth(self, provider: Provider, token: str, code: str, params: dict[str, str]) -> str:
        adapter = self._adapter(provider)
        state = await self._consume(token, provider)
        config = adapter.callback_config(params)
        oauth = adapter.oauth(config)
        if oauth is None:
            raise NotConnected(f"{provider.value.title()} is not configured on this server")
        try:
            tokens = await oauth.exchange_code(code=code, redirect_uri=self.urls.callback(provider))
        except ProviderError as exc:
            raise ProviderFailed(exc.message) from None
        problem = adapter.grant_problem(tokens)
        if problem is not None:
            try:
                await oauth.revoke(tokens)  # do not keep a grant that cannot be used
            except ProviderError:
                log.info("revoking an unusable %s grant failed", provider.value)
            raise ProviderFailed(problem)
        await self._save(state, provider, tokens, config)
        # Set-up a client does once connected (Shopify: its webhook subscriptions), where it has any.
        on_connected = getattr(oauth, "on_connected", None)
        if on_connected is not None:
            try:
                await on_connected(tokens, self.urls.public_url)
            except ProviderError as exc:
                # Connected all the same: syncs work, and a reconnect sets up again.
                log.warning("%s set-up after connecting failed: %s", provider.value, exc.message)
        return self.landing(state, provider, ok=True)

    async def complete_form(self, provider: Provider, token: str, values: dict[str, str]) -> str:
        """What was typed into our form: either on to the provider's consent, or checked and stored."""
        adapter = self._adapter(provider)
        form = adapter.connect_form()
        if form is None:
            raise InvalidInput(f"{provider.value.title()} connects through its own sign-in page")
        state = await self._consume(token, provider) if form.spends_link else await self.peek(token, provider)
        try:
            result = await adapter.submit_form(values, state=token, callback_url=self.urls.callback(provider))
        except ProviderError as exc:
            # The link was used up; a failed check needs a new one (the page says so).
            raise ProviderFailed(exc.message) from None
        if isinstance(result, ContinueAt):
            return result.url
        await self._save(state, provider, result.tokens, result.config)
        return self.landing(state, provider, ok=True)

    async def _save(
        self, state: OAuthState, provider: Provider, tokens: TokenSet, config: dict[str, str]
    ) -> Connection:
        async with self._tx.transaction(tenant_id=state.tenant_id, user_id=state.user_id) as uow:
            saved = await connections.save_connection(
                uow, self._keyring, state.tenant_id, provider, tokens, config
            )
        log.info("tenant %s connected %s", state.tenant_id, provider.value)
        return saved

    def landing(
        self, state: OAuthState | None, provider: Provider, *, ok: bool, error: str | None = None
    ) -> str:
        target = (state.redirect_uri if state else None) or self.urls.app_url
        query = (
            {"connected": provider.value}
            if ok
            else {"connectError": error or "failed", "provider": provider.value}
        )
        return f"{target}{'&' if '?' in target else '?'}{urlencode(query)}"

    async def revoke(self, tenant_id: uuid.UUID, connection: Connection) -> None:
        """Best effort: the tokens are deleted either way; a provider that is down keeps a dead token."""
        adapter = self._providers.adapter(connection.provider)
        config = {k: str(v) for k, v in connection.config.items()}
        oauth = adapter.oauth(config) if adapter else None
        if oauth is None or connection.access_token_ciphertext is None:
            return
        try:
            await oauth.revoke(connections.open_tokens(self._keyring, tenant_id, connection))
        except ProviderError as exc:
            log.warning("revoking %s failed: %s", connection.provider.value, exc.message)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
