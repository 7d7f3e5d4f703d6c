"""Apple Calendar as an adapter: our form (Apple ID + app-specific password, checked over CalDAV)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from domain.model import Provider
from domain.providers import (
    Capability,
    ConnectForm,
    ConnectMode,
    Credentials,
    FormField,
    FormResult,
)
from domain.sync import CalendarSource, TokenSet
from integrations.adapter import BaseAdapter, field_values
from integrations.apple.caldav_source import AppleCalendarSource

if TYPE_CHECKING:
    from integrations.registry import ProviderSettings

FORM = ConnectForm(
    "Connect Apple Calendar",
    (
        FormField("username", "Apple ID (email)", "email"),
        FormField("password", "App-specific password", "password"),
    ),
)


class AppleAdapter(BaseAdapter):
    provider = Provider.APPLE
    capabilities = frozenset({Capability.CALENDAR})

    def __init__(self, settings: ProviderSettings) -> None:
        self._url = settings.apple_caldav_url

    def connect_mode(self) -> ConnectMode | None:
        return "form"

    def connect_form(self) -> ConnectForm | None:
        return FORM

    async def submit_form(self, values: Mapping[str, str], *, state: str, callback_url: str) -> FormResult:
        username, password = field_values(
            values, "username", "password", missing="Enter your Apple ID and an app-specific password"
        )
        await AppleCalendarSource(url=self._url, username=username, app_password=password).verify()
        return Credentials(
            TokenSet(access_token=password, account_id=username), {"username": username, "url": self._url}
        )

    def calendar(self, tokens: TokenSet, config: Mapping[str, str]) -> CalendarSource | None:
        return AppleCalendarSource(
            url=config.get("url", self._url), username=config["username"], app_password=tokens.access_token
        )
