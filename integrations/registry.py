"""Builds each provider's client from configuration; implements ``domain.sync.ProviderRegistry``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.model import Provider
from domain.sync import CalendarSource, InventorySource, OAuthClient, TokenSet


@dataclass(frozen=True)
class ProviderSettings:
    """Client ids, secrets and base URLs (tests point base URLs at local fakes)."""

    square_client_id: str | None = None
    square_client_secret: str | None = None
    square_base_url: str = "https://connect.squareup.com"
    acuity_client_id: str | None = None
    acuity_client_secret: str | None = None
    acuity_base_url: str = "https://acuityscheduling.com"
    google_client_id: str | None = None
    google_client_secret: str | None = None
    google_auth_base_url: str = "https://accounts.google.com"
    google_token_base_url: str = "https://oauth2.googleapis.com"  # noqa: S105 - a URL, not a secret
    google_api_base_url: str = "https://www.googleapis.com"
    shopify_client_id: str | None = None
    shopify_client_secret: str | None = None
    shopify_api_version: str = "2024-10"
    # Tests only: "shop=base_url,..." maps shops to a local fake instead of https://{shop}.
    shopify_base_url_overrides: Mapping[str, str] | None = None
    apple_caldav_url: str = "https://caldav.icloud.com"


class ProviderClients:
    """One client per provider, made on first use inside the running event loop."""

    def __init__(self, settings: ProviderSettings) -> None:
        self._s = settings
        self._clients: dict[Provider, Any] = {}

    @property
    def apple_url(self) -> str:
        return self._s.apple_caldav_url

    def configured(self, provider: Provider) -> bool:
        s = self._s
        return {
            Provider.SQUARE: bool(s.square_client_id and s.square_client_secret),
            Provider.ACUITY: True,  # API-key connections need no app credentials
            Provider.GOOGLE: bool(s.google_client_id and s.google_client_secret),
            Provider.SHOPIFY: bool(s.shopify_client_id and s.shopify_client_secret),
            Provider.APPLE: True,
            Provider.HUBSPOT: False,
        }[provider]

    def _client(self, provider: Provider) -> Any:
        if provider in self._clients:
            return self._clients[provider]
        s = self._s
        client: Any
        if provider is Provider.SQUARE:
            from integrations.square.client import SquareClient

            client = SquareClient(
                client_id=s.square_client_id or "",
                client_secret=s.square_client_secret or "",
                base_url=s.square_base_url,
            )
        elif provider is Provider.ACUITY:
            from integrations.acuity.client import AcuityClient

            client = AcuityClient(
                client_id=s.acuity_client_id or "",
                client_secret=s.acuity_client_secret or "",
                base_url=s.acuity_base_url,
            )
        elif provider is Provider.GOOGLE:
            from integrations.google.client import GoogleCalendarClient

            client = GoogleCalendarClient(
                client_id=s.google_client_id or "",
                client_secret=s.google_client_secret or "",
                auth_base_url=s.google_auth_base_url,
                token_base_url=s.google_token_base_url,
                api_base_url=s.google_api_base_url,
            )
        elif provider is Provider.SHOPIFY:
            from integrations.shopify.client import ShopifyClient

            overrides = dict(s.shopify_base_url_overrides or {})
            client = ShopifyClient(
                client_id=s.shopify_client_id or "",
                client_secret=s.shopify_client_secret or "",
                api_version=s.shopify_api_version,
                shop_base_url=(lambda shop: overrides.get(shop, f"https://{shop}")) if overrides else None,
            )
        else:
            raise ValueError(f"{provider.value} has no client")
        self._clients[provider] = client
        return client

    def client(self, provider: Provider) -> Any:
        return self._client(provider)

    def oauth(self, provider: Provider) -> OAuthClient | None:
        if provider is Provider.ACUITY and not (self._s.acuity_client_id and self._s.acuity_client_secret):
            return None  # API-key connections: nothing to refresh or revoke
        if provider in (Provider.SQUARE, Provider.ACUITY, Provider.GOOGLE) and self.configured(provider):
            oauth: OAuthClient = self._client(provider)
            return oauth
        return None

    def shopify_oauth(self, shop: str) -> OAuthClient | None:
        if not self.configured(Provider.SHOPIFY):
            return None
        oauth: OAuthClient = self._client(Provider.SHOPIFY).for_shop(shop)
        return oauth

    def calendar(
        self, provider: Provider, tokens: TokenSet, config: Mapping[str, str]
    ) -> CalendarSource | None:
        source: CalendarSource
        if provider is Provider.SQUARE:
            source = self._client(provider).calendar(tokens.access_token)
        elif provider is Provider.ACUITY:
            client = self._client(provider)
            source = (
                client.calendar_basic(config["user_id"], tokens.access_token)
                if config.get("mode") == "basic"
                else client.calendar_oauth(tokens.access_token)
            )
        elif provider is Provider.GOOGLE:
            source = self._client(provider).calendar(
                tokens.access_token, config.get("calendar_id", "primary")
            )
        elif provider is Provider.APPLE:
            from integrations.apple.caldav_source import AppleCalendarSource

            source = AppleCalendarSource(
                url=config.get("url", self._s.apple_caldav_url),
                username=config["username"],
                app_password=tokens.access_token,
            )
        else:
            return None
        return source

    def inventory(
        self, provider: Provider, tokens: TokenSet, config: Mapping[str, str]
    ) -> InventorySource | None:
        source: InventorySource
        if provider is Provider.SQUARE:
            source = self._client(provider).inventory(tokens.access_token)
        elif provider is Provider.SHOPIFY:
            source = self._client(provider).inventory(config["shop"], tokens.access_token)
        else:
            return None
        return source

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
