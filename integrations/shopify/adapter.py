"""Shopify as an adapter: our shop-domain form, then per-shop OAuth; inventory source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from domain.errors import InvalidInput
from domain.model import Provider
from domain.providers import (
    Capability,
    ConnectForm,
    ConnectMode,
    ContinueAt,
    FormField,
    FormResult,
)
from domain.sync import InventorySource, OAuthClient, TokenSet
from integrations.adapter import BaseAdapter, field_values
from integrations.shopify.client import InvalidShopDomain, ShopifyClient

if TYPE_CHECKING:
    from integrations.registry import ProviderSettings

FORM = ConnectForm(
    "Connect Shopify",
    (FormField("shop", "Shop domain (your-shop.myshopify.com)"),),
    # The form only names the shop; the link is spent when Shopify's consent comes back.
    spends_link=False,
)


class ShopifyAdapter(BaseAdapter):
    provider = Provider.SHOPIFY
    capabilities = frozenset({Capability.INVENTORY})

    def __init__(self, settings: ProviderSettings) -> None:
        self._s = settings
        self._client: ShopifyClient | None = None

    def _configured(self) -> bool:
        return bool(self._s.shopify_client_id and self._s.shopify_client_secret)

    @property
    def client(self) -> ShopifyClient:
        if self._client is None:
            overrides = dict(self._s.shopify_base_url_overrides or {})
            self._client = ShopifyClient(
                client_id=self._s.shopify_client_id or "",
                client_secret=self._s.shopify_client_secret or "",
                api_version=self._s.shopify_api_version,
                shop_base_url=(lambda shop: overrides.get(shop, f"https://{shop}")) if overrides else None,
            )
        return self._client

    def connect_mode(self) -> ConnectMode | None:
        return "form" if self._configured() else None

    def connect_form(self) -> ConnectForm | None:
        return FORM

    async def submit_form(self, values: Mapping[str, str], *, state: str, callback_url: str) -> FormResult:
        (shop,) = field_values(values, "shop")
        try:
            oauth = self.oauth({"shop": shop.lower()}) if shop else None
            if oauth is None:
                raise InvalidShopDomain(shop)
            # Shopify names the shop (under its HMAC) in the callback: the redirect URL stays exact.
            return ContinueAt(oauth.authorize_url(state=state, redirect_uri=callback_url))
        except (InvalidShopDomain, ValueError):
            raise InvalidInput(
                "Enter your shop's myshopify.com domain, e.g. glow-studio.myshopify.com"
            ) from None

    def oauth(self, config: Mapping[str, str] | None = None) -> OAuthClient | None:
        shop = (config or {}).get("shop")
        if not shop or not self._configured():
            return None
        return self.client.for_shop(shop)

    def verify_callback(self, params: Mapping[str, str]) -> bool:
        return self.client.verify_callback(params)

    def callback_config(self, params: Mapping[str, str]) -> dict[str, str]:
        shop = params.get("shop")
        return {"shop": shop} if shop else {}

    def inventory(self, tokens: TokenSet, config: Mapping[str, str]) -> InventorySource | None:
        return self.client.inventory(config["shop"], tokens.access_token)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
