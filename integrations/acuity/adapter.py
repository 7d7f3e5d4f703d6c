"""Acuity as an adapter: OAuth (with an app) or our API-key form, calendar, account-signed webhooks."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from domain.model import Provider
from domain.providers import (
    Capability,
    ConnectForm,
    ConnectMode,
    Credentials,
    FormField,
    FormResult,
    InboundWebhook,
    WebhookEvent,
    WebhookMalformed,
)
from domain.sync import CalendarSource, OAuthClient, TokenSet
from integrations.acuity.client import AcuityBasic, AcuityClient
from integrations.acuity.webhooks import SIGNATURE_HEADER, AcuityWebhookError, parse_webhook, verify_webhook
from integrations.adapter import BaseAdapter, field_values

if TYPE_CHECKING:
    from integrations.registry import ProviderSettings

# Acuity sends no event id or timestamp: the same action on the same appointment within a few
# minutes is a retry or a replay, and is not processed twice.
DEDUPE_SECONDS = 600

FORM = ConnectForm(
    "Connect Acuity Scheduling",
    (FormField("user_id", "Acuity user ID"), FormField("api_key", "API key", "password")),
)


class AcuityWebhooks:
    """``X-Acuity-Signature`` over the body, keyed with the account's API key (or the app secret)."""

    scheme: Literal["app", "account"] = "account"

    def __init__(self, client_secret: str | None) -> None:
        self._app_secret = client_secret or ""

    def configured(self) -> bool:
        return True

    def account_of(self, hook: InboundWebhook) -> str | None:
        return hook.query.get("account") or None

    def signing_keys(self, tokens: TokenSet, config: Mapping[str, str]) -> tuple[str, ...]:
        """Any key the connection has: its API key (an API-key connection) and the OAuth app's
        client secret. Acuity documents account API-key signatures (the main admin's for static
        webhooks, the user's for API-created ones), which an OAuth connection never sees: those
        deliveries cannot be verified and are taken as rate-limited nudges (``domain.webhooks``)."""
        keys = [tokens.access_token] if config.get("mode") == "basic" else []
        return tuple(key for key in (*keys, self._app_secret) if key)

    def verify(self, hook: InboundWebhook, key: str | None = None) -> bool:
        signature = hook.headers.get(SIGNATURE_HEADER.lower())
        return bool(key) and verify_webhook(api_key=key or "", body=hook.body, signature=signature)

    def parse(self, hook: InboundWebhook, account_id: str | None = None) -> WebhookEvent:
        try:
            action, appointment_id = parse_webhook(hook.body)
        except AcuityWebhookError:
            raise WebhookMalformed("not an Acuity webhook") from None
        digest = hashlib.sha256(f"{account_id}:{action}:{appointment_id}".encode()).hexdigest()
        return WebhookEvent(event_id=digest, sync="calendar", dedupe_seconds=DEDUPE_SECONDS)


class AcuityAdapter(BaseAdapter):
    provider = Provider.ACUITY
    capabilities = frozenset({Capability.CALENDAR})

    def __init__(self, settings: ProviderSettings) -> None:
        self._s = settings
        self._client: AcuityClient | None = None
        self.webhooks = AcuityWebhooks(settings.acuity_client_secret)

    def _has_app(self) -> bool:
        return bool(self._s.acuity_client_id and self._s.acuity_client_secret)

    @property
    def client(self) -> AcuityClient:
        if self._client is None:
            self._client = AcuityClient(
                client_id=self._s.acuity_client_id or "",
                client_secret=self._s.acuity_client_secret or "",
                base_url=self._s.acuity_base_url,
            )
        return self._client

    def connect_mode(self) -> ConnectMode | None:
        # Without an OAuth app, operators connect with their user ID and API key on our form.
        return "oauth" if self._has_app() else "form"

    def connect_form(self) -> ConnectForm | None:
        return FORM

    async def submit_form(self, values: Mapping[str, str], *, state: str, callback_url: str) -> FormResult:
        user_id, api_key = field_values(
            values, "user_id", "api_key", missing="Enter your Acuity user ID and API key"
        )
        me = await self.client.me(AcuityBasic(user_id, api_key))
        return Credentials(
            TokenSet(access_token=api_key, account_id=str(me.get("id", user_id))),
            {"mode": "basic", "user_id": user_id},
        )

    def oauth(self, config: Mapping[str, str] | None = None) -> OAuthClient | None:
        # API-key connections: nothing to refresh or revoke.
        return self.client if self._has_app() else None

    def calendar(self, tokens: TokenSet, config: Mapping[str, str]) -> CalendarSource | None:
        if config.get("mode") == "basic":
            return self.client.calendar_basic(config["user_id"], tokens.access_token)
        return self.client.calendar_oauth(tokens.access_token)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
