"""Google OAuth 2.0 (web server flow) and Calendar API v3 events, every call through ``ProviderHttp``.

Reading a calendar (``events.list`` with ``singleEvents=true``, so recurring series arrive as
instances):

* a full listing covers events overlapping ``[start, end)`` (``timeMin`` is exclusive on the end
  time, ``timeMax`` exclusive on the start time) and ends with a ``nextSyncToken``;
* an incremental listing passes that ``syncToken`` and nothing that Google refuses beside it
  (``timeMin``, ``timeMax``, ``orderBy``). It returns every change since the token, which may lie
  outside ``[start, end)``: an event moved out of the range must still reach the engine;
* a 410 (sync token expired) falls back to a full listing of the range, marked by ``full_resync``.

Mapping to ``ExternalAppointment``:

* all-day events (``start.date``) are skipped: they are days off and reminders, not bookings;
  so are ``outOfOffice``/``focusTime``/``workingLocation``/``fromGmail``/``birthday`` event types;
* Google guarantees only ``id`` for deleted events. A cancelled event without times is still
  reported (a dropped cancellation would leave a phantom booking), at its ``originalStartTime``
  when it is a recurring instance, else at ``TIME_UNKNOWN`` with ``starts_at == ends_at``. The
  engine must take only the status from such a record;
* instances of one series share the series' ``iCalUID``, so theirs is qualified with the instance's
  RFC 5545 ``RECURRENCE-ID`` to stay one reference per booking.

Error bodies: ``ProviderHttp`` raises on any status >= 400 without handing back the response, but
Google says what went wrong in the body (``invalid_grant``, ``rateLimitExceeded`` on a 403). Each
call passes a ``_Observer`` as its ``httpx.Auth``: it adds the bearer token and keeps the last error
body, so failures can be classified properly. Messages never include tokens or event data.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, urlencode

from domain.sync import (
    ExternalAppointment,
    FetchedPage,
    IncompleteSync,
    ProviderError,
    TokenSet,
)
from integrations.google.api import (
    _api_failure,
    _events_url,
    _id_token_claims,
    _json_object,
    _Observer,
    _require_aware,
    _SyncTokenExpired,
    _time_param,
    _token_failure,
)
from integrations.google.mapping import to_external_appointment
from integrations.http import ProviderHttp

log = logging.getLogger("brandvx.integrations.google")

CALENDAR_SCOPE: Final = "https://www.googleapis.com/auth/calendar.events"
SCOPES: Final = (CALENDAR_SCOPE, "openid", "email")
PAGE_SIZE: Final = 250
# 2.5 million events at 250 a page: past this, paging is looping, not progressing.
MAX_PAGES: Final = 10_000
_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")  # base32hex, as Google requires for client-chosen ids


class GoogleCalendarClient:
    """OAuth for a Google account and access to its calendars.

    With ``http`` given, every host is reached through it (URLs are absolute); otherwise one
    ``ProviderHttp`` for the token endpoint and one for the Calendar API, so a failing API does not
    open the breaker in front of token refreshes.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        auth_base_url: str = "https://accounts.google.com",
        token_base_url: str = "https://oauth2.googleapis.com",  # noqa: S107 - a URL, not a secret
        api_base_url: str = "https://www.googleapis.com",
        http: ProviderHttp | None = None,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._auth_base = auth_base_url.rstrip("/")
        self._token_base = token_base_url.rstrip("/")
        self._api_base = api_base_url.rstrip("/")
        self._owned: tuple[ProviderHttp, ...]
        if http is not None:
            self._oauth_http = self._api_http = http
            self._owned = ()
        else:
            self._oauth_http = ProviderHttp("Google", base_url=self._token_base)
            self._api_http = ProviderHttp("Google Calendar", base_url=self._api_base)
            self._owned = (self._oauth_http, self._api_http)

    async def aclose(self) -> None:
        for http in self._owned:
            await http.aclose()

    async def __aenter__(self) -> GoogleCalendarClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- OAuth (implements domain.sync.OAuthClient) ---

    def authorize_url(self, *, state: str, redirect_uri: str) -> str:
        # prompt=consent with access_type=offline: Google sends a refresh token on every consent,
        # not only the first one, so reconnecting an account always yields a working grant.
        params = {
            "response_type": "code",
            "client_id": self._client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(SCOPES),
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
            "state": state,
        }
        return f"{self._auth_base}/o/oauth2/v2/auth?{urlencode(params, quote_via=quote)}"

    async def exchange_code(self, *, code: str, redirect_uri: str) -> TokenSet:
        """Tokens for a consent. ``scopes`` is what the user granted: check it holds ``CALENDAR_SCOPE``
        (Google lets users untick it). ``refresh_token`` is None only if Google sent none."""
        issued_at = datetime.now(UTC)
        body = await self._token_call(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        )
        return self._token_set(body, issued_at=issued_at, refresh_token=None)

    async def refresh(self, refresh_token: str) -> TokenSet:
        """A new access token. Google does not rotate refresh tokens: the one given is kept."""
        issued_at = datetime.now(UTC)
        body = await self._token_call({"grant_type": "refresh_token", "refresh_token": refresh_token})
        return self._token_set(body, issued_at=issued_at, refresh_token=refresh_token)

    async def revoke(self, token: TokenSet) -> None:
        """Revoke the grant. Revoking the refresh token (or, without one, the access token) ends both.

        The token goes in the form body, which Google's revocation endpoint accepts as well as
        ``?token=`` (RFC 7009): httpx logs request URLs at INFO, and a refresh token must not reach
        the logs. A token Google already considers expired or revoked counts as revoked.
        """
        observer = _Observer()
        target = token.refresh_token or token.access_token
        try:
            await self._oauth_http.request(
                "POST", f"{self._token_base}/revoke", data={"token": target}, auth=observer
            )
        except ProviderError as error:
            if error.status == 400 and observer.oauth_error == "invalid_token":
                return
            raise

    async def _token_call(self, form: dict[str, str]) -> dict[str, Any]:
        observer = _Observer()
        form = {**form, "client_id": self._client_id, "client_secret": self._client_secret}
        try:
            response = await self._oauth_http.request(
                "POST", f"{self._token_base}/token", data=form, auth=observer
            )
        except ProviderError as error:
            raise _token_failure(error, observer.oauth_error, form["grant_type"]) from error
        body = _json_object(response, "Google's token endpoint")
        if not isinstance(body.get("access_token"), str) or not body["access_token"]:
            raise ProviderError("permanent", "Google's token response had no access token")
        return body

    def _token_set(self, body: dict[str, Any], *, issued_at: datetime, refresh_token: str | None) -> TokenSet:
        # Counted from before the request, so the token is never believed valid longer than it is.
        expires_in = body.get("expires_in")
        expires_at = (
            issued_at + timedelta(seconds=float(expires_in))
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else None
        )
        scope = body.get("scope")
        new_refresh = body.get("refresh_token")
        claims = _id_token_claims(body.get("id_token"), audience=self._client_id)
        email, subject = claims.get("email"), claims.get("sub")
        return TokenSet(
            access_token=body["access_token"],
            refresh_token=new_refresh if isinstance(new_refresh, str) and new_refresh else refresh_token,
            expires_at=expires_at,
            scopes=tuple(scope.split()) if isinstance(scope, str) else (),
            account_id=email if isinstance(email, str) and email else None,
            extra={"sub": subject} if isinstance(subject, str) and subject else {},
        )

    # --- Calendar ---

    def calendar(self, access_token: str, calendar_id: str = "primary") -> GoogleCalendarSource:
        return GoogleCalendarSource(
            self._api_http, api_base_url=self._api_base, access_token=access_token, calendar_id=calendar_id
        )

    async def create_event(
        self,
        access_token: str,
        *,
        calendar_id: str,
        summary: str,
        start: datetime,
        end: datetime,
        attendee_email: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Insert a timed event and return its id. Google emails nobody (``sendUpdates=none``).

        The event id is chosen here (``event_id``, or a random one): a retry of an insert that
        Google committed before the connection failed gets a 409 ``duplicate``, which means done.
        Pass an id derived from the booking to make a job that runs twice create one event.
        """
        _require_aware(start, "start")
        _require_aware(end, "end")
        if end <= start:
            raise ValueError("end must be after start")
        event_id = event_id or uuid.uuid4().hex
        if not _EVENT_ID.fullmatch(event_id):
            raise ValueError("event_id must be 5-1024 characters of base32hex (a-v, 0-9)")
        event: dict[str, Any] = {
            "id": event_id,
            "summary": summary,
            "start": {"dateTime": start.isoformat(timespec="seconds")},
            "end": {"dateTime": end.isoformat(timespec="seconds")},
        }
        if attendee_email:
            event["attendees"] = [{"email": attendee_email}]
        observer = _Observer(access_token)
        try:
            response = await self._api_http.request(
                "POST",
                _events_url(self._api_base, calendar_id),
                params={"sendUpdates": "none"},
                json=event,
                auth=observer,
            )
        except ProviderError as error:
            if error.status == 409 and "duplicate" in observer.reasons:
                return event_id
            raise _api_failure(error, observer) from error
        created_id = _json_object(response, "Google Calendar").get("id")
        return created_id if isinstance(created_id, str) and created_id else event_id


class GoogleCalendarSource:
    """One calendar of one account (implements ``domain.sync.CalendarSource``).

    After an iteration: ``next_sync_token`` for the next incremental sync, and ``full_resync`` True
    when a sync token was given but had expired, so the range was listed in full instead.
    """

    def __init__(
        self,
        http: ProviderHttp,
        *,
        api_base_url: str,
        access_token: str,
        calendar_id: str = "primary",
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._http = http
        self._url = _events_url(api_base_url.rstrip("/"), calendar_id)
        self._access_token = access_token
        self._page_size = page_size
        self._next_sync_token: str | None = None
        self.full_resync = False

    @property
    def next_sync_token(self) -> str | None:
        return self._next_sync_token

    async def appointments(
        self, start: datetime, end: datetime, *, sync_token: str | None = None
    ) -> AsyncIterator[FetchedPage[ExternalAppointment]]:
        _require_aware(start, "start")
        _require_aware(end, "end")
        self._next_sync_token = None
        self.full_resync = False
        if sync_token is not None:
            try:
                async for page in self._walk({"syncToken": sync_token}):
                    yield page
                return
            except _SyncTokenExpired:
                log.info("Google Calendar sync token expired; listing the range in full")
                self.full_resync = True
        full = {"timeMin": _time_param(start, up=False), "timeMax": _time_param(end, up=True)}
        async for page in self._walk({**full, "orderBy": "startTime"}):
            yield page

    async def _walk(self, query: dict[str, str]) -> AsyncIterator[FetchedPage[ExternalAppointment]]:
        # singleEvents and showDeleted are sent in both modes: a sync token belongs to its query.
        base = {**query, "singleEvents": "true", "showDeleted": "true", "maxResults": str(self._page_size)}
        page_token: str | None = None
        seen_tokens: set[str] = set()
        for _ in range(MAX_PAGES):
            params = {**base, "pageToken": page_token} if page_token else base
            body = await self._list(params)
            zone = body.get("timeZone")
            calendar_tz = zone if isinstance(zone, str) else None
            items = body.get("items")
            records: list[ExternalAppointment] = []
            for item in items if isinstance(items, list) else []:
                record = to_external_appointment(item, calendar_tz) if isinstance(item, dict) else None
                if record is not None:
                    records.append(record)
            yield FetchedPage(items=records)
            next_page = body.get("nextPageToken")
            if isinstance(next_page, str) and next_page:
                if next_page in seen_tokens:
                    raise IncompleteSync("Google Calendar repeated a page token; the listing would loop")
                seen_tokens.add(next_page)
                page_token = next_page
                continue
            sync = body.get("nextSyncToken")
            self._next_sync_token = sync if isinstance(sync, str) and sync else None
            return
        raise IncompleteSync(f"Google Calendar returned more than {MAX_PAGES} pages; stopped")

    async def _list(self, params: dict[str, str]) -> dict[str, Any]:
        observer = _Observer(self._access_token)
        try:
            response = await self._http.request("GET", self._url, params=params, auth=observer)
        except ProviderError as error:
            if error.status == 410 and "syncToken" in params:
                raise _SyncTokenExpired from error
            raise _api_failure(error, observer) from error
        return _json_object(response, "Google Calendar")
