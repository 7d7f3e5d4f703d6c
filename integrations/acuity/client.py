"""Acuity Scheduling API v1: OAuth, appointments walked by date windows, one appointment by id.

``GET /api/v1/appointments`` has no cursor and reports no total: it answers at most ``max``
appointments between ``minDate`` and ``maxDate`` and says nothing when it cut the list short. The old
BrandVX import trusted one page and lost 94 % of a salon's appointments. Here a window that comes back
with ``max`` appointments is never taken as complete: it is split in half and both halves are fetched
again, down to ``min_window``. A window that is still full at that width raises ``IncompleteSync``;
nothing is dropped silently.

Date bounds. Acuity documents ``minDate`` / ``maxDate`` as inclusive ("this date and after", "this date
and before"), read in the account's timezone, and accepts a time of day after the date. We send naive
local date-times (``YYYY-MM-DDTHH:MM:SS`` in the timezone ``GET /api/v1/me`` reports) and rely on no
finer reading of a boundary than this: two neighbouring windows send the same string for the bound they
share, so whatever instant Acuity makes of it (DST folds included), their union covers the range. An
appointment on a shared bound comes back in both windows and is kept once (deduplicated by id). Should
an account ignore the time of day, sub-day windows stop shrinking their results, and a busy day ends in
``IncompleteSync`` rather than in lost appointments.

Acuity filters by start time, so each walk begins ``OVERLAP_LOOKBACK`` before the asked range: an
appointment that started earlier and is still running is part of "overlapping [start, end)".

Credentials: an OAuth access token (Bearer; Acuity's tokens do not expire and cannot be refreshed) or
an account's user id and API key (HTTP Basic). Every call goes through ``ProviderHttp``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx

from domain.sync import (
    ExternalAppointment,
    FetchedPage,
    IncompleteSync,
    ProviderError,
    TokenSet,
)
from integrations.acuity.mapping import to_external_appointment, zone_named
from integrations.http import ProviderHttp

__all__ = [
    "DEFAULT_BASE_URL",
    "OAUTH_SCOPE",
    "OVERLAP_LOOKBACK",
    "AcuityAuth",
    "AcuityBasic",
    "AcuityBearer",
    "AcuityCalendar",
    "AcuityClient",
    "to_external_appointment",
]

log = logging.getLogger("brandvx.integrations.acuity")

PROVIDER_NAME: Final = "Acuity"
DEFAULT_BASE_URL: Final = "https://acuityscheduling.com"
OAUTH_SCOPE: Final = "api-v1"
# Acuity filters appointments by start time; one that began up to this long before the range overlaps it.
OVERLAP_LOOKBACK: Final = timedelta(hours=24)
# When the account's timezone is unknown we send UTC; local readings can then be off by up to 14 hours.
UNKNOWN_TIMEZONE_PADDING: Final = timedelta(hours=14)
_LOCAL_FORMAT: Final = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class AcuityBearer:
    """An OAuth access token from ``exchange_code``."""

    access_token: str = field(repr=False)


@dataclass(frozen=True)
class AcuityBasic:
    """An account's own API credentials (Acuity: Integrations > API)."""

    user_id: str
    api_key: str = field(repr=False)


AcuityAuth = AcuityBearer | AcuityBasic


class AcuityClient:
    """The Acuity ``OAuthClient``, and the factory of per-account ``CalendarSource`` objects."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        base_url: str = DEFAULT_BASE_URL,
        http: ProviderHttp | None = None,
        max_per_request: int = 1000,
        min_window: timedelta = timedelta(hours=1),
        initial_window: timedelta = timedelta(days=7),
    ) -> None:
        if max_per_request < 1:
            raise ValueError("max_per_request must be at least 1")
        # Bounds are sent to the second: a narrower window could not be told apart from its halves.
        if min_window < timedelta(seconds=1):
            raise ValueError("min_window must be at least one second")
        if initial_window <= timedelta(0):
            raise ValueError("initial_window must be positive")
        self.client_id = client_id
        self._client_secret = client_secret
        self.base_url = base_url.rstrip("/")
        self.max_per_request = max_per_request
        self.min_window = min_window
        self.initial_window = initial_window
        self._own_http = http is None
        self._http = http or ProviderHttp(PROVIDER_NAME, base_url=self.base_url)

    async def aclose(self) -> None:
        """Close the HTTP layer if this client built it (one passed in belongs to the caller)."""
        if self._own_http:
            await self._http.aclose()

    # --- OAuth ---

    def authorize_url(self, *, state: str, redirect_uri: str) -> str:
        query = urlencode(
            {
                "response_type": "code",
                "scope": OAUTH_SCOPE,
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "state": state,
            }
        )
        return f"{self.base_url}/oauth2/authorize?{query}"

    async def exchange_code(self, *, code: str, redirect_uri: str) -> TokenSet:
        """The token never expires and comes without a refresh token; the account id is ``/me``'s id."""
        response = await self._http.request(
            "POST",
            "/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": self.client_id,
                "client_secret": self._client_secret,
            },
            headers={"Accept": "application/json"},
        )
        payload = _json(response)
        access_token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(access_token, str) or not access_token:
            raise ProviderError("permanent", "Acuity's token response had no access token")
        me = await self.me(AcuityBearer(access_token))
        scope = payload.get("scope")
        scopes = tuple(scope.split()) if isinstance(scope, str) and scope.strip() else (OAUTH_SCOPE,)
        account_id = me.get("id")
        timezone = me.get("timezone")
        return TokenSet(
            access_token=access_token,
            refresh_token=None,
            expires_at=None,
            scopes=scopes,
            account_id=str(account_id) if account_id is not None else None,
            extra={"timezone": timezone} if isinstance(timezone, str) and timezone else {},
        )

    async def refresh(self, refresh_token: str) -> TokenSet:
        raise ProviderError("permanent", "Acuity tokens cannot be refreshed; reconnect")

    async def revoke(self, token: TokenSet) -> None:
        """A no-op: Acuity's API has no revocation endpoint.

        The token stays valid until the account owner removes the app in Acuity (Integrations); the
        caller forgets the stored token.
        """

    # --- per-account calls ---

    def calendar_oauth(self, access_token: str) -> AcuityCalendar:
        return AcuityCalendar(self, AcuityBearer(access_token))

    def calendar_basic(self, user_id: str, api_key: str) -> AcuityCalendar:
        return AcuityCalendar(self, AcuityBasic(user_id, api_key))

    async def me(self, auth: AcuityAuth) -> dict[str, Any]:
        """``GET /api/v1/me``: the account (``id``, ``timezone``, ...)."""
        payload = await self._get(auth, "/api/v1/me")
        if not isinstance(payload, dict):
            raise ProviderError("permanent", "Acuity's /me answer was not an object")
        return payload

    async def appointment(self, auth: AcuityAuth, appointment_id: str | int) -> ExternalAppointment:
        """``GET /api/v1/appointments/{id}``, e.g. for a webhook (which carries only the id).

        Canceled appointments are returned too (as ``cancelled``); an unknown id raises
        ``ProviderError`` permanent with status 404.
        """
        key = str(appointment_id).strip()
        if not key.isdigit():
            raise ValueError("an Acuity appointment id is a number")
        payload = await self._get(auth, f"/api/v1/appointments/{key}")
        if not isinstance(payload, dict):
            raise ProviderError("permanent", "Acuity's appointment answer was not an object")
        return to_external_appointment(payload)

    async def appointments_between(
        self, auth: AcuityAuth, min_date: str, max_date: str
    ) -> list[dict[str, Any]]:
        """One raw ``GET /api/v1/appointments`` (canceled included, oldest first, capped at ``max``)."""
        payload = await self._get(
            auth,
            "/api/v1/appointments",
            params={
                "minDate": min_date,
                "maxDate": max_date,
                "max": str(self.max_per_request),
                "direction": "ASC",
                "showall": "true",
                # Intake forms are personal data we do not store, and they make pages slow.
                "excludeForms": "true",
            },
        )
        if not isinstance(payload, list) or not all(isinstance(item, dict) for item in payload):
            raise ProviderError("permanent", "Acuity's appointment list was not a list of objects")
        return payload

    async def _get(self, auth: AcuityAuth, path: str, *, params: Mapping[str, str] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        basic: tuple[str, str] | None = None
        if isinstance(auth, AcuityBearer):
            headers["Authorization"] = f"Bearer {auth.access_token}"
        else:
            basic = (auth.user_id, auth.api_key)
        response = await self._http.request("GET", path, headers=headers, params=params, auth=basic)
        return _json(response)


class AcuityCalendar:
    """``CalendarSource`` for one Acuity account. Acuity has no incremental sync: no sync token."""

    def __init__(self, client: AcuityClient, auth: AcuityAuth) -> None:
        self._client = client
        self.auth = auth
        self._timezone: tuple[tzinfo, timedelta] | None = None
        # Observability for the job log and tests: windows split because they came back full.
        self.splits = 0
        self.requests = 0

    @property
    def next_sync_token(self) -> str | None:
        return None

    async def appointment(self, appointment_id: str | int) -> ExternalAppointment:
        return await self._client.appointment(self.auth, appointment_id)

    async def appointments(
        self, start: datetime, end: datetime, *, sync_token: str | None = None
    ) -> AsyncIterator[FetchedPage[ExternalAppointment]]:
        """One page per accepted window, in time order; the windows are contiguous.

        The walk runs from ``start - OVERLAP_LOOKBACK`` to ``end`` (a little past it when ``end`` falls
        in a repeated autumn hour, and 14 hours wider each side when the account's timezone is unknown);
        pages hold only appointments overlapping [start, end), each id once. ``sync_token`` is ignored.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        if end <= start:
            return
        zone, padding = await self._account_timezone()
        walk_end = _past_fold(end + padding, zone)
        cursor = start - OVERLAP_LOOKBACK - padding
        seen: set[str] = set()
        while cursor < walk_end:
            chunk_end = min(cursor + self._client.initial_window, walk_end)
            pending = [(cursor, chunk_end)]
            while pending:
                low, high = pending.pop()
                raw = await self._fetch(low, high, zone)
                if len(raw) >= self._client.max_per_request:
                    middle = _split_point(low, high)
                    if high - low <= self._client.min_window or middle is None:
                        raise IncompleteSync(
                            f"Acuity returned its {self._client.max_per_request}-appointment ceiling for "
                            f"{low.isoformat()} to {high.isoformat()}, a window that cannot be split further "
                            f"(smallest window {self._client.min_window}); the range was not fully read"
                        )
                    self.splits += 1
                    log.info(
                        "Acuity window %s..%s came back full (%d); splitting at %s",
                        low.isoformat(),
                        high.isoformat(),
                        len(raw),
                        middle.isoformat(),
                    )
                    pending.append((middle, high))
                    pending.append((low, middle))
                    continue
                items: list[ExternalAppointment] = []
                for record in raw:
                    appointment = to_external_appointment(record)
                    if appointment.external_id in seen or not _overlaps(appointment, start, end):
                        continue
                    seen.add(appointment.external_id)
                    items.append(appointment)
                yield FetchedPage(items=items, window=(low, high))
            cursor = chunk_end

    async def _fetch(self, low: datetime, high: datetime, zone: tzinfo) -> list[dict[str, Any]]:
        self.requests += 1
        return await self._client.appointments_between(
            self.auth,
            low.astimezone(zone).strftime(_LOCAL_FORMAT),
            high.astimezone(zone).strftime(_LOCAL_FORMAT),
        )

    async def _account_timezone(self) -> tuple[tzinfo, timedelta]:
        if self._timezone is None:
            zone = zone_named((await self._client.me(self.auth)).get("timezone"))
            if zone is None:
                log.warning(
                    "Acuity account timezone unknown; walking in UTC with %s padding",
                    UNKNOWN_TIMEZONE_PADDING,
                )
                self._timezone = (ZoneInfo("UTC"), UNKNOWN_TIMEZONE_PADDING)
            else:
                self._timezone = (zone, timedelta(0))
        return self._timezone


def _past_fold(moment: datetime, zone: tzinfo) -> datetime:
    """``moment``, or the first half hour after it whose local time is unambiguous.

    Where clocks go back, the last bound could be read as the earlier of two instants and the final
    hour missed; appointments past the asked end are filtered out anyway.
    """
    for _ in range(8):
        local = moment.astimezone(zone).replace(tzinfo=None)
        if local.replace(tzinfo=zone, fold=0).utcoffset() == local.replace(tzinfo=zone, fold=1).utcoffset():
            return moment
        moment += timedelta(minutes=30)
    return moment


def _split_point(low: datetime, high: datetime) -> datetime | None:
    middle = low + (high - low) / 2
    middle -= timedelta(microseconds=middle.microsecond)
    return middle if low < middle < high else None


def _overlaps(appointment: ExternalAppointment, start: datetime, end: datetime) -> bool:
    if appointment.starts_at >= end:
        return False
    return appointment.ends_at > start or appointment.starts_at >= start


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as error:
        raise ProviderError("permanent", "Acuity answered with something that is not JSON") from error
