"""Connecting providers: OAuth redirects with signed single-use state, and the forms we host for
providers that take typed credentials (Apple app-specific passwords, Acuity API keys, a Shopify shop)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from urllib.parse import urlencode

from redis.asyncio import Redis

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
from domain.sync import ProviderError, TokenSet
from integrations.registry import ProviderClients
from persistence.db import Database

log = logging.getLogger("brandvx.connect")

FORM_PROVIDERS = {Provider.APPLE, Provider.SHOPIFY}


def state_key(secret_material: str) -> bytes:
    """The OAuth state signing key, derived so it is never the same bytes as another key's."""
    return hmac.new(secret_material.encode(), b"brandvx oauth state v1", hashlib.sha256).digest()


class ConnectFlow:
    def __init__(
        self,
        *,
        db: Database,
        redis: Redis,
        key_prefix: str,
        signing_key: bytes,
        providers: ProviderClients,
        keyring: Keyring,
        public_url: str,
        app_url: str,
        allowed_origins: list[str],
    ) -> None:
        self._db = db
        self._redis = redis
        self._prefix = key_prefix
        self._key = signing_key
        self._providers = providers
        self._keyring = keyring
        self._public_url = public_url.rstrip("/")
        self._app_url = app_url
        self._allowed = [*allowed_origins, _origin(app_url)]

    def callback_url(self, provider: Provider) -> str:
        return f"{self._public_url}/oauth/{provider.value.lower()}/callback"

    def form_url(self, provider: Provider, token: str) -> str:
        return f"{self._public_url}/connect/{provider.value.lower()}?{urlencode({'state': token})}"

    async def start(self, actor: Actor, provider: Provider, redirect_uri: str | None) -> str:
        """The URL to send the operator to: the provider's consent page, or our credentials form."""
        if provider is Provider.HUBSPOT:
            raise NotConnected("HubSpot connections are not available yet", field=["provider"])
        state = new_state(actor, provider, check_redirect(redirect_uri, self._allowed))
        token = sign_state(self._key, state)
        await self._redis.set(self._nonce_key(state.nonce), "1", ex=connections.STATE_TTL_SECONDS)
        oauth = self._providers.oauth(provider)
        if provider in FORM_PROVIDERS or (provider is Provider.ACUITY and oauth is None):
            if provider is Provider.SHOPIFY and not self._providers.configured(Provider.SHOPIFY):
                raise NotConnected("Shopify is not configured on this server", field=["provider"])
            return self.form_url(provider, token)
        if oauth is None:
            raise NotConnected(
                f"{provider.value.title()} is not configured on this server", field=["provider"]
            )
        return oauth.authorize_url(state=token, redirect_uri=self.callback_url(provider))

    def _nonce_key(self, nonce: str) -> str:
        return f"{self._prefix}oauth:nonce:{nonce}"

    async def _consume(self, token: str, provider: Provider) -> OAuthState:
        state = verify_state(self._key, token)
        if state.provider is not provider:
            raise InvalidInput("This connection link is for another provider")
        if not await self._redis.delete(self._nonce_key(state.nonce)):
            raise InvalidInput("This connection link was already used; start connecting again")
        return state

    async def peek(self, token: str, provider: Provider) -> OAuthState:
        """Check a form's state without using it up (the form is shown, then posted)."""
        state = verify_state(self._key, token)
        if state.provider is not provider or not await self._redis.exists(self._nonce_key(state.nonce)):
            raise InvalidInput("This connection link is no longer valid; start connecting again")
        return state

    async def complete_oauth(
        self, provider: Provider, token: str, code: str, *, shop: str | None = None
    ) -> str:
        state = await self._consume(token, provider)
        oauth = (
            self._providers.shopify_oauth(shop)
            if provider is Provider.SHOPIFY and shop
            else self._providers.oauth(provider)
        )
        if oauth is None:
            raise NotConnected(f"{provider.value.title()} is not configured on this server")
        try:
            tokens = await oauth.exchange_code(code=code, redirect_uri=self.callback_url(provider))
        except ProviderError as exc:
            raise ProviderFailed(exc.message) from None
        if provider is Provider.GOOGLE:
            from integrations.google import CALENDAR_SCOPE

            if CALENDAR_SCOPE not in tokens.scopes:
                try:
                    await oauth.revoke(tokens)  # do not keep a grant that cannot be used
                except ProviderError:
                    log.info("revoking an unusable Google grant failed")
                raise ProviderFailed(
                    "Google did not grant access to your calendar; connect again and allow it"
                )
        config = {"shop": shop} if shop else {}
        await self._save(state, provider, tokens, config)
        return self.landing(state, provider, ok=True)

    async def complete_form(self, provider: Provider, token: str, fields: dict[str, str]) -> str:
        """Credentials typed into our form: check them with the provider, then store them encrypted."""
        if provider is Provider.SHOPIFY:
            from integrations.shopify.client import InvalidShopDomain

            await self.peek(token, provider)
            shop = fields.get("shop", "").strip().lower()
            try:
                oauth = self._providers.shopify_oauth(shop) if shop else None
                if oauth is None:
                    raise InvalidShopDomain(shop)
                # Shopify names the shop (under its HMAC) in the callback: the redirect URL stays exact.
                return oauth.authorize_url(state=token, redirect_uri=self.callback_url(provider))
            except (InvalidShopDomain, ValueError):
                raise InvalidInput(
                    "Enter your shop's myshopify.com domain, e.g. glow-studio.myshopify.com"
                ) from None
        state = await self._consume(token, provider)
        try:
            if provider is Provider.APPLE:
                from integrations.apple.caldav_source import AppleCalendarSource

                username, password = fields.get("username", "").strip(), fields.get("password", "").strip()
                if not username or not password:
                    raise InvalidInput("Enter your Apple ID and an app-specific password")
                url = self._providers.apple_url
                await AppleCalendarSource(url=url, username=username, app_password=password).verify()
                tokens = TokenSet(access_token=password, account_id=username)
                config = {"username": username, "url": url}
            elif provider is Provider.ACUITY:
                from integrations.acuity.client import AcuityBasic

                user_id, api_key = fields.get("user_id", "").strip(), fields.get("api_key", "").strip()
                if not user_id or not api_key:
                    raise InvalidInput("Enter your Acuity user ID and API key")
                me = await self._providers.client(Provider.ACUITY).me(AcuityBasic(user_id, api_key))
                tokens = TokenSet(access_token=api_key, account_id=str(me.get("id", user_id)))
                config = {"mode": "basic", "user_id": user_id}
            else:
                raise InvalidInput(f"{provider.value.title()} connects through its own sign-in page")
        except ProviderError as exc:
            # The link was used up; a failed check needs a new one (the page says so).
            raise ProviderFailed(exc.message) from None
        await self._save(state, provider, tokens, config)
        return self.landing(state, provider, ok=True)

    async def _save(
        self, state: OAuthState, provider: Provider, tokens: TokenSet, config: dict[str, str]
    ) -> Connection:
        async with self._db.transaction(tenant_id=state.tenant_id, user_id=state.user_id) as uow:
            saved = await connections.save_connection(
                uow, self._keyring, state.tenant_id, provider, tokens, config
            )
        log.info("tenant %s connected %s", state.tenant_id, provider.value)
        return saved

    def landing(
        self, state: OAuthState | None, provider: Provider, *, ok: bool, error: str | None = None
    ) -> str:
        target = (state.redirect_uri if state else None) or self._app_url
        query = (
            {"connected": provider.value}
            if ok
            else {"connectError": error or "failed", "provider": provider.value}
        )
        return f"{target}{'&' if '?' in target else '?'}{urlencode(query)}"

    async def revoke(self, tenant_id: uuid.UUID, connection: Connection) -> None:
        """Best effort: the tokens are deleted either way; a provider that is down keeps a dead token."""
        oauth = self._providers.oauth(connection.provider)
        if connection.provider is Provider.SHOPIFY and connection.config.get("shop"):
            oauth = self._providers.shopify_oauth(str(connection.config["shop"]))
        if oauth is None or connection.access_token_ciphertext is None:
            return
        try:
            await oauth.revoke(connections.open_tokens(self._keyring, tenant_id, connection))
        except ProviderError as exc:
            log.warning("revoking %s failed: %s", connection.provider.value, exc.message)


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
