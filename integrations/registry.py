"""The one list of provider adapters; implements ``domain.sync.ProviderRegistry`` and
``domain.providers.ProviderCatalog``.

Adding a provider: a package ``integrations/<provider>/`` with an ``adapter.py`` (a ``BaseAdapter``
subclass implementing the ports it supports) and one line in ``ADAPTERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from domain.model import Provider
from domain.providers import Capability, ProviderAdapter
from domain.sync import CalendarSource, InventorySource, OAuthClient, TokenSet
from integrations.acuity.adapter import AcuityAdapter
from integrations.apple.adapter import AppleAdapter
from integrations.google.adapter import GoogleAdapter
from integrations.shopify.adapter import ShopifyAdapter
from integrations.square.adapter import SquareAdapter


@dataclass(frozen=True)
class ProviderSettings:
    """Client ids, secrets and base URLs (tests point base URLs at local fakes)."""

    square_client_id: str | None = None
    square_client_secret: str | None = None
    square_base_url: str = "https://connect.squareup.com"
    square_webhook_signature_key: str | None = None
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
    # How providers reach this API (webhook URLs some providers sign).
    public_url: str = "http://127.0.0.1:8000"


# One line per provider, in the order syncs visit them.
ADAPTERS: tuple[Callable[[ProviderSettings], ProviderAdapter], ...] = (
    SquareAdapter,
    AcuityAdapter,
    GoogleAdapter,
    AppleAdapter,
    ShopifyAdapter,
)


class ProviderClients:
    """Every provider's adapter; each makes its HTTP client on first use, inside the running loop."""

    def __init__(self, settings: ProviderSettings) -> None:
        adapters = [make(settings) for make in ADAPTERS]
        self._adapters: dict[Provider, ProviderAdapter] = {a.provider: a for a in adapters}

    def adapter(self, provider: Provider) -> ProviderAdapter | None:
        return self._adapters.get(provider)

    def supporting(self, capability: Capability) -> tuple[Provider, ...]:
        return tuple(p for p, a in self._adapters.items() if capability in a.capabilities)

    def oauth(self, provider: Provider, config: Mapping[str, str] | None = None) -> OAuthClient | None:
        adapter = self._adapters.get(provider)
        return adapter.oauth(config) if adapter else None

    def calendar(
        self, provider: Provider, tokens: TokenSet, config: Mapping[str, str]
    ) -> CalendarSource | None:
        adapter = self._adapters.get(provider)
        return adapter.calendar(tokens, config) if adapter else None

    def inventory(
        self, provider: Provider, tokens: TokenSet, config: Mapping[str, str]
    ) -> InventorySource | None:
        adapter = self._adapters.get(provider)
        return adapter.inventory(tokens, config) if adapter else None

    async def aclose(self) -> None:
        for adapter in self._adapters.values():
            await adapter.aclose()
