"""Google Calendar as an adapter: OAuth connect (the calendar scope is required) and calendar source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from domain.model import Provider
from domain.providers import Capability, ConnectMode
from domain.sync import CalendarSource, OAuthClient, TokenSet
from integrations.adapter import BaseAdapter
from integrations.google.client import CALENDAR_SCOPE, GoogleCalendarClient

if TYPE_CHECKING:
    from integrations.registry import ProviderSettings


class GoogleAdapter(BaseAdapter):
    provider = Provider.GOOGLE
    capabilities = frozenset({Capability.CALENDAR})

    def __init__(self, settings: ProviderSettings) -> None:
        self._s = settings
        self._client: GoogleCalendarClient | None = None

    def _configured(self) -> bool:
        return bool(self._s.google_client_id and self._s.google_client_secret)

    @property
    def client(self) -> GoogleCalendarClient:
        if self._client is None:
            self._client = GoogleCalendarClient(
                client_id=self._s.google_client_id or "",
                client_secret=self._s.google_client_secret or "",
                auth_base_url=self._s.google_auth_base_url,
                token_base_url=self._s.google_token_base_url,
                api_base_url=self._s.google_api_base_url,
            )
        return self._client

    def connect_mode(self) -> ConnectMode | None:
        return "oauth" if self._configured() else None

    def oauth(self, config: Mapping[str, str] | None = None) -> OAuthClient | None:
        return self.client if self._configured() else None

    def grant_problem(self, tokens: TokenSet) -> str | None:
        # Google lets the operator untick the calendar scope on its consent page.
        if CALENDAR_SCOPE not in tokens.scopes:
            return "Google did not grant access to your calendar; connect again and allow it"
        return None

    def calendar(self, tokens: TokenSet, config: Mapping[str, str]) -> CalendarSource | None:
        return self.client.calendar(tokens.access_token, config.get("calendar_id", "primary"))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
