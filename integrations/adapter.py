"""The default adapter: supports nothing. Each provider's adapter overrides what it offers."""

from __future__ import annotations

from collections.abc import Mapping

from domain.errors import InvalidInput
from domain.model import Provider
from domain.providers import (
    Capability,
    ConnectForm,
    ConnectMode,
    FormResult,
    WebhookVerifier,
)
from domain.sync import CalendarSource, InventorySource, OAuthClient, TokenSet


class BaseAdapter:
    provider: Provider
    capabilities: frozenset[Capability] = frozenset()
    webhooks: WebhookVerifier | None = None

    def connect_mode(self) -> ConnectMode | None:
        return None

    def connect_form(self) -> ConnectForm | None:
        return None

    async def submit_form(self, values: Mapping[str, str], *, state: str, callback_url: str) -> FormResult:
        raise InvalidInput(f"{self.provider.value.title()} connects through its own sign-in page")

    def oauth(self, config: Mapping[str, str] | None = None) -> OAuthClient | None:
        return None

    def verify_callback(self, params: Mapping[str, str]) -> bool:
        return True

    def callback_config(self, params: Mapping[str, str]) -> dict[str, str]:
        return {}

    def grant_problem(self, tokens: TokenSet) -> str | None:
        return None

    def calendar(self, tokens: TokenSet, config: Mapping[str, str]) -> CalendarSource | None:
        return None

    def inventory(self, tokens: TokenSet, config: Mapping[str, str]) -> InventorySource | None:
        return None

    async def aclose(self) -> None:
        return None


def field_values(values: Mapping[str, str], *names: str, missing: str | None = None) -> list[str]:
    """The form's fields, trimmed, in the order asked; with ``missing``, each one is required."""
    found = [values.get(name, "").strip() for name in names]
    if missing is not None and not all(found):
        raise InvalidInput(missing)
    return found
