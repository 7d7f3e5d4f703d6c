"""Square: OAuth (code flow), bookings as a ``CalendarSource``, catalog stock as an ``InventorySource``,
and webhook verification. Every call goes through ``ProviderHttp``; see ``api.py`` for errors and
``sources.py`` for paging."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from domain.sync import CalendarSource, InventorySource, OAuthClient, ProviderError, TokenSet
from integrations.http import ProviderHttp
from integrations.square import webhooks
from integrations.square.api import PROVIDER_NAME, SquareApi
from integrations.square.mapping import parse_time
from integrations.square.sources import DEFAULT_LOOKBACK, MAX_BOOKINGS_PAGE, SquareCalendar, SquareInventory

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_SQUARE_VERSION", "SCOPES", "SquareClient"]

DEFAULT_BASE_URL: Final = "https://connect.squareup.com"
DEFAULT_SQUARE_VERSION: Final = "2024-10-17"
SCOPES: Final = (
    "APPOINTMENTS_READ",
    "APPOINTMENTS_ALL_READ",
    "CUSTOMERS_READ",
    "ITEMS_READ",
    "INVENTORY_READ",
    "MERCHANT_PROFILE_READ",
)


class SquareClient:
    """One Square application (client id and secret); per-seller sources are made from access tokens.

    ``http``, when given, must already point at ``base_url``; whoever built it closes it.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        base_url: str = DEFAULT_BASE_URL,
        http: ProviderHttp | None = None,
        square_version: str = DEFAULT_SQUARE_VERSION,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self._own_http = http is None
        self._http = http if http is not None else ProviderHttp(PROVIDER_NAME, base_url=self.base_url)
        self._api = SquareApi(self._http, square_version=square_version)

    def __repr__(self) -> str:
        return f"SquareClient(client_id={self.client_id!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # --- OAuth ---

    def authorize_url(self, *, state: str, redirect_uri: str) -> str:
        # session=false sends the seller to the real sign-in page rather than a logged-in session.
        query = "&".join(
            (
                f"client_id={quote(self.client_id, safe='')}",
                "scope=" + "+".join(SCOPES),
                "session=false",
                f"state={quote(state, safe='')}",
                f"redirect_uri={quote(redirect_uri, safe='')}",
            )
        )
        return f"{self.base_url}/oauth2/authorize?{query}"

    async def exchange_code(self, *, code: str, redirect_uri: str) -> TokenSet:
        body = await self._api.call(
            "POST",
            "/oauth2/token",
            what="exchanging the authorization code",
            authorization=None,
            credential="the app credentials or the authorization code",
            json={
                "client_id": self.client_id,
                "client_secret": self._client_secret,
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
            },
        )
        return _token_set(body, previous_refresh=None)

    async def refresh(self, refresh_token: str) -> TokenSet:
        try:
            body = await self._api.call(
                "POST",
                "/oauth2/token",
                what="refreshing the access token",
                authorization=None,
                credential="the refresh token",
                json={
                    "client_id": self.client_id,
                    "client_secret": self._client_secret,
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                },
            )
        except ProviderError as error:
            if error.kind == "permanent" and error.status == 400:
                # A refresh token Square will not take back cannot be retried: the seller must reconnect.
                raise ProviderError("auth", error.message, status=error.status) from error
            raise
        # Code-flow refresh tokens do not rotate; Square repeats the same one, or may leave it out.
        return _token_set(body, previous_refresh=refresh_token)

    async def revoke(self, token: TokenSet) -> None:
        payload = {"client_id": self.client_id}
        if token.access_token:
            payload["access_token"] = token.access_token
        elif token.account_id:
            payload["merchant_id"] = token.account_id
        else:
            return
        try:
            await self._api.call(
                "POST",
                "/oauth2/revoke",
                what="revoking the access token",
                authorization=f"Client {self._client_secret}",
                credential="the app credentials",
                json=payload,
            )
        except ProviderError as error:
            if error.kind == "permanent" and error.status == 404:
                return  # Square no longer knows the token: it is as revoked as it gets.
            raise

    # --- data ---

    def calendar(
        self,
        access_token: str,
        *,
        page_size: int = MAX_BOOKINGS_PAGE,
        lookback: timedelta = DEFAULT_LOOKBACK,
        location_id: str | None = None,
    ) -> SquareCalendar:
        return SquareCalendar(
            self._api, access_token, page_size=page_size, lookback=lookback, location_id=location_id
        )

    def inventory(self, access_token: str, *, location_ids: Sequence[str] | None = None) -> SquareInventory:
        return SquareInventory(self._api, access_token, location_ids=location_ids)

    # --- webhooks ---

    @staticmethod
    def verify_webhook(
        *, signature_key: str, notification_url: str, body: bytes, signature: str | None
    ) -> bool:
        return webhooks.verify_webhook(
            signature_key=signature_key, notification_url=notification_url, body=body, signature=signature
        )


def _token_set(body: Mapping[str, Any], *, previous_refresh: str | None) -> TokenSet:
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise ProviderError("permanent", "Square answered the token request without an access token")
    refresh_token = body.get("refresh_token")
    merchant_id = body.get("merchant_id")
    extra: dict[str, str] = {}
    for key in ("token_type", "refresh_token_expires_at"):
        value = body.get(key)
        if isinstance(value, str) and value:
            extra[key] = value
    if isinstance(body.get("short_lived"), bool):
        extra["short_lived"] = str(body["short_lived"]).lower()
    scope = body.get("scope")
    # Sellers approve the requested scopes as a whole; Square's token answer does not list them.
    scopes = tuple(scope.split()) if isinstance(scope, str) and scope.strip() else SCOPES
    return TokenSet(
        access_token=access_token,
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else previous_refresh,
        expires_at=parse_time(body.get("expires_at")),
        scopes=scopes,
        account_id=merchant_id if isinstance(merchant_id, str) and merchant_id else None,
        extra=extra,
    )


if TYPE_CHECKING:
    # Static proof that the client and its sources satisfy the domain's ports.
    def _ports(client: SquareClient) -> tuple[OAuthClient, CalendarSource, InventorySource]:
        return client, client.calendar(""), client.inventory("")
