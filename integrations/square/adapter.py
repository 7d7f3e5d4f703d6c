"""Square as an adapter: OAuth connect, bookings calendar, catalog inventory, app-signed webhooks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson

from domain.model import Provider
from domain.providers import Capability, ConnectMode, InboundWebhook, WebhookEvent, WebhookMalformed
from domain.sync import CalendarSource, InventorySource, OAuthClient, TokenSet
from integrations.adapter import BaseAdapter
from integrations.square.client import SquareClient
from integrations.square.webhooks import SIGNATURE_HEADER, verify_webhook

if TYPE_CHECKING:
    from integrations.registry import ProviderSettings


class SquareWebhooks:
    """``x-square-hmacsha256-signature`` over the notification URL + body, with the app's key."""

    scheme: Literal["app", "account"] = "app"

    def __init__(self, signature_key: str | None, notification_url: str) -> None:
        self._key = signature_key
        # Square signs the URL it was configured with, not the (possibly proxied) URL we see.
        self._url = notification_url

    def configured(self) -> bool:
        return bool(self._key)

    def account_of(self, hook: InboundWebhook) -> str | None:
        return None

    def signing_keys(self, tokens: TokenSet, config: Mapping[str, str]) -> tuple[str, ...]:
        return ()

    def verify(self, hook: InboundWebhook, key: str | None = None) -> bool:
        return verify_webhook(
            signature_key=self._key or "",
            notification_url=self._url,
            body=hook.body,
            signature=hook.headers.get(SIGNATURE_HEADER),
        )

    def parse(self, hook: InboundWebhook, account_id: str | None = None) -> WebhookEvent:
        try:
            event: dict[str, Any] = orjson.loads(hook.body)
            event_id, merchant = str(event["event_id"]), str(event["merchant_id"])
            created = datetime.fromisoformat(str(event["created_at"]).replace("Z", "+00:00"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise WebhookMalformed("not a Square event") from None
        if created.tzinfo is None:
            raise WebhookMalformed("created_at needs a timezone")
        wanted = str(event.get("type", "")).startswith(("booking.", "customer."))
        return WebhookEvent(
            event_id=event_id,
            sync="calendar" if wanted else None,
            ignore_reason="" if wanted else "not a booking or customer event",
            occurred_at=created,
            account_id=merchant,
        )


class SquareAdapter(BaseAdapter):
    provider = Provider.SQUARE
    capabilities = frozenset({Capability.CALENDAR, Capability.INVENTORY})

    def __init__(self, settings: ProviderSettings) -> None:
        self._s = settings
        self._client: SquareClient | None = None
        self.webhooks = SquareWebhooks(
            settings.square_webhook_signature_key, f"{settings.public_url.rstrip('/')}/webhooks/square"
        )

    def _configured(self) -> bool:
        return bool(self._s.square_client_id and self._s.square_client_secret)

    @property
    def client(self) -> SquareClient:
        if self._client is None:
            self._client = SquareClient(
                client_id=self._s.square_client_id or "",
                client_secret=self._s.square_client_secret or "",
                base_url=self._s.square_base_url,
            )
        return self._client

    def connect_mode(self) -> ConnectMode | None:
        return "oauth" if self._configured() else None

    def oauth(self, config: Mapping[str, str] | None = None) -> OAuthClient | None:
        return self.client if self._configured() else None

    def calendar(self, tokens: TokenSet, config: Mapping[str, str]) -> CalendarSource | None:
        return self.client.calendar(tokens.access_token)

    def inventory(self, tokens: TokenSet, config: Mapping[str, str]) -> InventorySource | None:
        return self.client.inventory(tokens.access_token)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
