"""A local fake of Google's OAuth 2.0 endpoints and Calendar API v3 events, for real HTTP clients.

uvicorn in a background thread on 127.0.0.1 and a free port; ``base_url`` stands in for all three
Google hosts (accounts.google.com, oauth2.googleapis.com, www.googleapis.com). It serves:

* ``GET /o/oauth2/v2/auth``: the consent screen, answered at once for ``consent_as`` (302 back to
  ``redirect_uri`` with ``code``, ``state`` and ``scope``);
* ``POST /token``: ``authorization_code`` and ``refresh_token`` grants with Google's bodies and
  errors (``invalid_client`` 401, ``invalid_grant`` / ``redirect_uri_mismatch`` /
  ``unsupported_grant_type`` 400); ``email`` comes back as ``.../auth/userinfo.email`` like Google's;
* ``POST /revoke?token=``: revokes the whole grant (refresh and access tokens), ``invalid_token`` 400
  for a token already dead;
* ``GET /calendar/v3/calendars/{calendarId}/events``: Bearer checks, ``timeMin``/``timeMax``
  overlap filtering, ``orderBy=startTime`` (requires ``singleEvents=true``), ``showDeleted``,
  ``maxResults`` capped at ``max_page_size``, ``nextPageToken`` until the last page, which carries
  ``nextSyncToken``; ``syncToken`` lists every change since the token (the whole calendar, not the
  original range), rejects ``timeMin``/``timeMax``/``orderBy``/``updatedMin``/``q``/``iCalUID`` beside
  it (400) and answers 410 ``fullSyncRequired`` once ``expire_sync_tokens`` was called. A page token
  only works with the query that produced it. Deleted events come back as Google guarantees them:
  ``id`` and ``status`` only (``minimal_deleted=False`` sends them whole);
* ``POST /calendar/v3/calendars/{calendarId}/events``: insert, with client-chosen ids (409
  ``duplicate``) and ``sendUpdates``.

Failures are injected with ``fail_next`` (optionally after the work is done, as when a response is
lost). State is guarded by a lock, so tests mutate it from their own thread. No pytest here::

    with FakeGoogle() as fake:
        token = fake.add_account("owner@example.com")
        fake.seed_events(10_000, account="owner@example.com", seed=7)
"""

from __future__ import annotations

import base64
import json
import random
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.fakes.serving import ServedFake

__all__ = ["CALENDAR_SCOPE", "FakeGoogle", "RecordedRequest"]

CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar.events"
_FULL_SCOPES = ("openid", "https://www.googleapis.com/auth/userinfo.email", CALENDAR_SCOPE)
_SCOPE_ALIASES = {
    "email": "https://www.googleapis.com/auth/userinfo.email",
    "profile": "https://www.googleapis.com/auth/userinfo.profile",
}
_READ_SCOPES = {CALENDAR_SCOPE, "https://www.googleapis.com/auth/calendar"} | {
    CALENDAR_SCOPE + ".readonly",
    "https://www.googleapis.com/auth/calendar.readonly",
}
_WRITE_SCOPES = {CALENDAR_SCOPE, "https://www.googleapis.com/auth/calendar"}
_NOT_WITH_SYNC_TOKEN = ("timeMin", "timeMax", "orderBy", "updatedMin", "q", "iCalUID")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_DEFAULT_REASONS = {
    400: "invalid",
    401: "authError",
    403: "rateLimitExceeded",
    404: "notFound",
    409: "duplicate",
    410: "fullSyncRequired",
    429: "rateLimitExceeded",
}
_B32HEX = "0123456789abcdefghijklmnopqrstuv"
_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
_NAMES = ("Ana Ruiz", "Bea Chen", "Cara Okafor", "Dina Patel", "Eve Novak", "Fay Kim", "Gia Rossi")
_SERVICES = ("Cut & style", "Balayage", "Gel manicure", "Brow lamination", "Facial", "Blowout")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    form: dict[str, str]
    json: Any
    authorization: str | None


@dataclass
class _Failure:
    status: int
    path: str | None
    retry_after: float | None
    reason: str | None
    after: bool


@dataclass
class _Event:
    id: str
    calendar: str
    summary: str
    start: datetime | date  # an aware datetime, or a date for an all-day event
    end: datetime | date
    attendees: list[dict[str, Any]]
    ical_uid: str
    created: datetime
    updated: datetime
    seq: int
    status: str = "confirmed"
    event_type: str = "default"
    recurring_event_id: str | None = None

    @property
    def start_key(self) -> datetime:
        return _as_instant(self.start)

    @property
    def end_key(self) -> datetime:
        return _as_instant(self.end)


@dataclass
class _Grant:
    account: str
    scopes: tuple[str, ...]
    refresh_token: str | None
    revoked: bool = False


@dataclass
class _Code:
    account: str
    scopes: tuple[str, ...]
    redirect_uri: str
    offline: bool
    used: bool = False


@dataclass
class _Cursor:
    calendar: str
    fingerprint: tuple[tuple[str, str], ...]
    ids: list[str]
    offset: int
    snapshot: int  # the change counter when the listing began: what its nextSyncToken covers


@dataclass
class _Calendar:
    owner: str
    events: dict[str, _Event] = field(default_factory=dict)


def _as_instant(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _rfc3339_utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def google_error(status: int, message: str, reason: str | None = None, **extra: str) -> dict[str, Any]:
    """The JSON error body of Google's APIs."""
    detail = {
        "message": message,
        "domain": "global",
        "reason": reason or _DEFAULT_REASONS.get(status, "backendError"),
    }
    if detail["reason"] in ("rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"):
        detail["domain"] = "usageLimits"
    detail.update(extra)
    error: dict[str, Any] = {"code": status, "message": message, "errors": [detail]}
    if status in _STATUS_NAMES:
        error["status"] = _STATUS_NAMES[status]
    return {"error": error}


class FakeGoogle(ServedFake):
    thread_name = "fake-google"

    def __init__(
        self,
        *,
        client_id: str = "fake-client.apps.googleusercontent.com",
        client_secret: str = "fake-client-secret",  # noqa: S107 - the fake's own, not a real secret
        host: str = "127.0.0.1",
        time_zone: str = "America/New_York",
        max_page_size: int = 250,
        minimal_deleted: bool = True,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        super().__init__(host=host)
        self.time_zone = time_zone
        self.max_page_size = max_page_size
        self.minimal_deleted = minimal_deleted
        self.consent_as = "owner@example.com"
        self.consent_scopes: tuple[str, ...] | None = None  # what the user grants; None: all asked
        self._zone = ZoneInfo(time_zone)
        self._lock = threading.Lock()
        self._seq = 0
        self._accounts: dict[str, str] = {}  # email -> sub
        self._calendars: dict[str, _Calendar] = {}
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}  # refresh token -> grant
        self._access: dict[str, _Grant] = {}
        self._expired_access: set[str] = set()
        self._sync_tokens: dict[str, tuple[str, int]] = {}
        self._expired_sync: set[str] = set()
        self._cursors: dict[str, _Cursor] = {}
        self._failures: deque[_Failure] = deque()
        self._requests: list[RecordedRequest] = []
        events = "/calendar/v3/calendars/{calendar_id}/events"
        self.app = Starlette(
            routes=[
                Route("/o/oauth2/v2/auth", self._authorize, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/revoke", self._revoke, methods=["POST"]),
                Route(events, self._list_events, methods=["GET"]),
                Route(events, self._insert_event, methods=["POST"]),
            ],
        )

    # --- accounts and tokens (safe to call from any thread) ---

    def add_account(self, email: str, *, scopes: tuple[str, ...] = _FULL_SCOPES) -> str:
        """Register an account with its primary calendar; return an access token for it."""
        with self._lock:
            self._ensure_account(email)
            return self._issue_access(_Grant(email, scopes, refresh_token=None))

    def add_calendar(self, account: str, calendar_id: str) -> None:
        with self._lock:
            self._ensure_account(account)
            self._calendars.setdefault(calendar_id, _Calendar(owner=account))

    def expire_access_token(self, token: str) -> None:
        with self._lock:
            self._expired_access.add(token)

    def revoke_grant(self, refresh_token: str) -> None:
        """As when the user removes the app's access in their Google account."""
        with self._lock:
            if refresh_token in self._grants:
                self._grants[refresh_token].revoked = True

    def expire_sync_tokens(self) -> None:
        with self._lock:
            self._expired_sync.update(self._sync_tokens)

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        path: str | None = None,
        retry_after: float | None = None,
        reason: str | None = None,
        after: bool = False,
    ) -> None:
        """The next ``times`` requests (whose path starts with ``path``) fail with ``status``.

        ``after``: do the work first, then fail, as when the response is lost on the way back.
        """
        with self._lock:
            self._failures.extend(_Failure(status, path, retry_after, reason, after) for _ in range(times))

    # --- events ---

    def add_event(
        self,
        *,
        account: str = "owner@example.com",
        calendar_id: str = "primary",
        summary: str = "Appointment",
        start: datetime | date,
        end: datetime | date,
        attendees: list[dict[str, Any]] | None = None,
        event_id: str | None = None,
        event_type: str = "default",
        recurring_event_id: str | None = None,
    ) -> str:
        with self._lock:
            calendar = self._calendar_of(account, calendar_id)
            return self._store(
                calendar,
                summary=summary,
                start=start,
                end=end,
                attendees=attendees or [],
                event_id=event_id,
                event_type=event_type,
                recurring_event_id=recurring_event_id,
            ).id

    def seed_events(
        self,
        count: int,
        *,
        account: str = "owner@example.com",
        calendar_id: str = "primary",
        first_day: date = date(2026, 1, 5),
        days: int = 60,
        seed: int = 0,
        all_day: bool = False,
    ) -> list[str]:
        """``count`` events spread over ``days`` days from ``first_day``, between 8:00 and 19:45 UTC.

        Each has the owner (``self``) and one client as attendees. Deterministic for a seed.
        """
        rng = random.Random(seed)
        ids: list[str] = []
        with self._lock:
            calendar = self._calendar_of(account, calendar_id)
            for _ in range(count):
                day = first_day + timedelta(days=rng.randrange(days))
                client = rng.randrange(10_000)
                name = rng.choice(_NAMES)
                attendees: list[dict[str, Any]] = [
                    {"email": account, "organizer": True, "self": True, "responseStatus": "accepted"},
                    {
                        "email": f"client{client}@example.com",
                        "displayName": name,
                        "responseStatus": "accepted",
                    },
                ]
                start: datetime | date
                end: datetime | date
                if all_day:
                    start, end = day, day + timedelta(days=1)
                else:
                    start = datetime(day.year, day.month, day.day, 8, tzinfo=UTC) + timedelta(
                        minutes=15 * rng.randrange(48)
                    )
                    end = start + timedelta(minutes=rng.choice((30, 45, 60, 90)))
                event_id = "".join(rng.choice(_B32HEX) for _ in range(26))
                event = self._store(
                    calendar,
                    summary=f"{rng.choice(_SERVICES)} - {name}",
                    start=start,
                    end=end,
                    attendees=attendees,
                    event_id=event_id,
                )
                ids.append(event.id)
        return ids

    def update_event(
        self,
        event_id: str,
        *,
        account: str = "owner@example.com",
        calendar_id: str = "primary",
        summary: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:
        with self._lock:
            event = self._calendar_of(account, calendar_id).events[event_id]
            event.summary = summary if summary is not None else event.summary
            event.start = start if start is not None else event.start
            event.end = end if end is not None else event.end
            self._touch(event)

    def cancel_event(
        self, event_id: str, *, account: str = "owner@example.com", calendar_id: str = "primary"
    ) -> None:
        with self._lock:
            event = self._calendar_of(account, calendar_id).events[event_id]
            event.status = "cancelled"
            self._touch(event)

    def event(
        self, event_id: str, *, account: str = "owner@example.com", calendar_id: str = "primary"
    ) -> dict[str, Any]:
        """The event as Google would render it in full."""
        with self._lock:
            return self._render(self._calendar_of(account, calendar_id).events[event_id], full=True)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeGoogle is not started")
        return f"http://{self.host}:{self._port}"

    # --- state helpers (called with the lock held) ---

    def _ensure_account(self, email: str) -> None:
        if email not in self._accounts:
            self._accounts[email] = str(100_000_000_000_000_000_000 + len(self._accounts))
            self._calendars[email] = _Calendar(owner=email)

    def _calendar_of(self, account: str, calendar_id: str) -> _Calendar:
        self._ensure_account(account)
        key = account if calendar_id == "primary" else calendar_id
        return self._calendars.setdefault(key, _Calendar(owner=account))

    def _issue_access(self, grant: _Grant) -> str:
        token = "ya29." + secrets.token_urlsafe(24)
        self._access[token] = grant
        return token

    def _touch(self, event: _Event) -> None:
        self._seq += 1
        event.seq = self._seq
        event.updated = datetime.now(UTC)

    def _store(
        self,
        calendar: _Calendar,
        *,
        summary: str,
        start: datetime | date,
        end: datetime | date,
        attendees: list[dict[str, Any]],
        event_id: str | None,
        event_type: str = "default",
        recurring_event_id: str | None = None,
    ) -> _Event:
        self._seq += 1
        now = datetime.now(UTC)
        event_id = event_id or "".join(secrets.choice(_B32HEX) for _ in range(26))
        if recurring_event_id is not None:
            event_id = f"{recurring_event_id}_{_as_instant(start).astimezone(UTC):%Y%m%dT%H%M%SZ}"
        uid = f"{recurring_event_id or event_id}@google.com"
        event = _Event(
            id=event_id,
            calendar=calendar.owner,
            summary=summary,
            start=start,
            end=end,
            attendees=attendees,
            ical_uid=uid,
            created=now,
            updated=now,
            seq=self._seq,
            event_type=event_type,
            recurring_event_id=recurring_event_id,
        )
        calendar.events[event_id] = event
        return event

    def _time(self, value: datetime | date) -> dict[str, str]:
        if isinstance(value, datetime):
            return {"dateTime": value.astimezone(self._zone).isoformat(), "timeZone": self.time_zone}
        return {"date": value.isoformat()}

    def _render(self, event: _Event, *, full: bool = False) -> dict[str, Any]:
        etag = f'"{3_180_000_000_000_000 + event.seq}"'
        if event.status == "cancelled" and self.minimal_deleted and not full:
            # What Google guarantees: the id; for a cancelled instance, its series and original start.
            minimal: dict[str, Any] = {
                "kind": "calendar#event",
                "etag": etag,
                "id": event.id,
                "status": "cancelled",
            }
            if event.recurring_event_id is not None:
                minimal["recurringEventId"] = event.recurring_event_id
                minimal["originalStartTime"] = self._time(event.start)
            return minimal
        rendered: dict[str, Any] = {
            "kind": "calendar#event",
            "etag": etag,
            "id": event.id,
            "status": event.status,
            "htmlLink": f"https://www.google.com/calendar/event?eid={_b64url(event.id.encode())}",
            "created": _rfc3339_utc(event.created),
            "updated": _rfc3339_utc(event.updated),
            "summary": event.summary,
            "creator": {"email": event.calendar, "self": True},
            "organizer": {"email": event.calendar, "self": True},
            "start": self._time(event.start),
            "end": self._time(event.end),
            "iCalUID": event.ical_uid,
            "sequence": 0,
            "reminders": {"useDefault": True},
            "eventType": event.event_type,
        }
        if event.attendees:
            rendered["attendees"] = [dict(a) for a in event.attendees]
        if event.recurring_event_id is not None:
            rendered["recurringEventId"] = event.recurring_event_id
            rendered["originalStartTime"] = self._time(event.start)
        return rendered

    async def _record(self, request: Request) -> tuple[dict[str, str], Any]:
        form: dict[str, str] = {}
        body: Any = None
        if request.method == "POST":
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("application/x-www-form-urlencoded"):
                form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            elif content_type.startswith("application/json"):
                try:
                    body = json.loads(await request.body())
                except ValueError:
                    body = None
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    params=dict(request.query_params),
                    form=form,
                    json=body,
                    authorization=request.headers.get("authorization"),
                )
            )
        return form, body

    def _take_failure(self, request: Request) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.path is None or request.url.path.startswith(failure.path):
                    self._failures.remove(failure)
                    return failure
        return None

    def _failure_response(self, failure: _Failure, path: str) -> Response:
        headers = {"retry-after": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
        if path.startswith("/calendar/"):
            body = google_error(failure.status, "Injected failure.", failure.reason)
        else:
            body = {"error": failure.reason or "internal_failure", "error_description": "Injected failure."}
        return JSONResponse(body, status_code=failure.status, headers=headers)

    def _bearer(self, request: Request, scopes: set[str]) -> _Grant | Response:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        with self._lock:
            grant = self._access.get(token) if token else None
            if grant is None or grant.revoked or token in self._expired_access:
                message = (
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                    "cookie or other valid authentication credential."
                )
                body = google_error(
                    401, message, "authError", location="Authorization", locationType="header"
                )
                return JSONResponse(
                    body, status_code=401, headers={"www-authenticate": 'Bearer realm="google"'}
                )
        if not scopes & set(grant.scopes):
            body = google_error(
                403, "Request had insufficient authentication scopes.", "insufficientPermissions"
            )
            return JSONResponse(body, status_code=403)
        return grant

    # --- OAuth endpoints ---

    async def _authorize(self, request: Request) -> Response:
        await self._record(request)
        q = request.query_params
        if q.get("client_id") != self.client_id:
            return Response("Error 401: invalid_client", status_code=401, media_type="text/plain")
        if q.get("response_type") != "code" or not q.get("redirect_uri") or not q.get("scope"):
            return Response("Error 400: invalid_request", status_code=400, media_type="text/plain")
        asked = tuple(_SCOPE_ALIASES.get(s, s) for s in q["scope"].split())
        granted = self.consent_scopes if self.consent_scopes is not None else asked
        code = "4/0" + secrets.token_urlsafe(32)
        with self._lock:
            self._ensure_account(self.consent_as)
            self._codes[code] = _Code(
                self.consent_as, granted, q["redirect_uri"], offline=q.get("access_type") == "offline"
            )
        params = {"state": q.get("state", ""), "code": code, "scope": " ".join(granted), "authuser": "0"}
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode(params)}", status_code=302)

    def _oauth_error(self, status: int, error: str, description: str) -> Response:
        return JSONResponse({"error": error, "error_description": description}, status_code=status)

    def _token_body(self, grant: _Grant, *, with_refresh: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self._issue_access(grant),
            "expires_in": 3599,
            "scope": " ".join(grant.scopes),
            "token_type": "Bearer",
        }
        if with_refresh and grant.refresh_token:
            body["refresh_token"] = grant.refresh_token
        if "openid" in grant.scopes:
            now = int(time.time())
            claims: dict[str, Any] = {
                "iss": "https://accounts.google.com",
                "azp": self.client_id,
                "aud": self.client_id,
                "sub": self._accounts[grant.account],
                "iat": now,
                "exp": now + 3599,
            }
            if _SCOPE_ALIASES["email"] in grant.scopes:
                claims.update(email=grant.account, email_verified=True)
            header = {"alg": "RS256", "kid": "fake-key", "typ": "JWT"}
            body["id_token"] = ".".join(
                (
                    _b64url(json.dumps(header).encode()),
                    _b64url(json.dumps(claims).encode()),
                    _b64url(secrets.token_bytes(256)),
                )
            )
        return body

    async def _token(self, request: Request) -> Response:
        form, _ = await self._record(request)
        failure = self._take_failure(request)
        if failure is not None and not failure.after:
            return self._failure_response(failure, request.url.path)
        response = self._token_grant(form, request.headers.get("authorization"))
        return self._failure_response(failure, request.url.path) if failure is not None else response

    def _token_grant(self, form: dict[str, str], authorization: str | None) -> Response:
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(authorization[6:]).decode().partition(":")
        if client_id != self.client_id or client_secret != self.client_secret:
            return self._oauth_error(401, "invalid_client", "Unauthorized")
        grant_type = form.get("grant_type", "")
        with self._lock:
            if grant_type == "authorization_code":
                code = self._codes.get(form.get("code", ""))
                if code is None or code.used:
                    return self._oauth_error(400, "invalid_grant", "Bad Request")
                if form.get("redirect_uri") != code.redirect_uri:
                    return self._oauth_error(400, "redirect_uri_mismatch", "Bad Request")
                code.used = True
                refresh = "1//0" + secrets.token_urlsafe(40) if code.offline else None
                grant = _Grant(code.account, code.scopes, refresh)
                if refresh:
                    self._grants[refresh] = grant
                return JSONResponse(self._token_body(grant, with_refresh=True))
            if grant_type == "refresh_token":
                found = self._grants.get(form.get("refresh_token", ""))
                if found is None or found.revoked:
                    return self._oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
                return JSONResponse(self._token_body(found, with_refresh=False))
        return self._oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    async def _revoke(self, request: Request) -> Response:
        form, _ = await self._record(request)
        failure = self._take_failure(request)
        if failure is not None:
            return self._failure_response(failure, request.url.path)
        token = request.query_params.get("token") or form.get("token", "")
        with self._lock:
            grant = self._grants.get(token) or self._access.get(token)
            if grant is None or grant.revoked or token in self._expired_access:
                return self._oauth_error(400, "invalid_token", "Token expired or revoked")
            grant.revoked = True
        return Response(status_code=200)

    # --- Calendar endpoints ---

    def _calendar_for(self, grant: _Grant, calendar_id: str) -> _Calendar | Response:
        key = grant.account if calendar_id == "primary" else calendar_id
        with self._lock:
            calendar = self._calendars.get(key)
        if calendar is None or calendar.owner != grant.account:
            return JSONResponse(google_error(404, "Not Found", "notFound"), status_code=404)
        return calendar

    async def _list_events(self, request: Request) -> Response:
        await self._record(request)
        failure = self._take_failure(request)
        if failure is not None:
            return self._failure_response(failure, request.url.path)
        grant = self._bearer(request, _READ_SCOPES)
        if isinstance(grant, Response):
            return grant
        calendar = self._calendar_for(grant, request.path_params["calendar_id"])
        if isinstance(calendar, Response):
            return calendar
        q = request.query_params

        def bad(message: str) -> Response:
            return JSONResponse(google_error(400, message, "invalid"), status_code=400)

        try:
            max_results = int(q.get("maxResults", "250"))
            time_min = datetime.fromisoformat(q["timeMin"]) if "timeMin" in q else None
            time_max = datetime.fromisoformat(q["timeMax"]) if "timeMax" in q else None
        except ValueError:
            return bad("Bad Request")
        if max_results < 1 or any(t is not None and t.tzinfo is None for t in (time_min, time_max)):
            return bad("Bad Request")
        sync_token = q.get("syncToken")
        if sync_token is not None:
            if any(name in q for name in _NOT_WITH_SYNC_TOKEN):
                return bad(
                    "Sync token cannot be used with other query parameters such as timeMin or orderBy."
                )
            if q.get("showDeleted") == "false":
                return bad("showDeleted cannot be false with a sync token.")
        if q.get("orderBy") not in (None, "startTime", "updated"):
            return bad("Invalid value for orderBy.")
        if q.get("orderBy") == "startTime" and q.get("singleEvents") != "true":
            return bad("The requested ordering is not available for the particular query.")
        fingerprint = tuple(sorted((k, v) for k, v in q.items() if k not in ("pageToken", "maxResults")))
        with self._lock:
            if sync_token is not None:
                if sync_token not in self._sync_tokens:
                    return bad("Invalid sync token value.")
                if sync_token in self._expired_sync:
                    message = "Sync token is no longer valid, a full sync is required."
                    return JSONResponse(google_error(410, message, "fullSyncRequired"), status_code=410)
            page_token = q.get("pageToken")
            if page_token is not None:
                cursor = self._cursors.get(page_token)
                if cursor is None or cursor.fingerprint != fingerprint or cursor.calendar != calendar.owner:
                    return bad("Invalid page token value.")
            else:
                cursor = self._start_listing(calendar, q, sync_token, time_min, time_max, fingerprint)
            size = min(max_results, self.max_page_size)
            page_ids = cursor.ids[cursor.offset : cursor.offset + size]
            items = [self._render(calendar.events[i]) for i in page_ids if i in calendar.events]
            body: dict[str, Any] = {
                "kind": "calendar#events",
                "etag": f'"{self._seq}"',
                "summary": calendar.owner,
                "description": "",
                "updated": _rfc3339_utc(datetime.now(UTC)),
                "timeZone": self.time_zone,
                "accessRole": "owner",
                "defaultReminders": [],
            }
            if cursor.offset + size < len(cursor.ids):
                token = secrets.token_urlsafe(24)
                self._cursors[token] = _Cursor(
                    cursor.calendar, fingerprint, cursor.ids, cursor.offset + size, cursor.snapshot
                )
                body["nextPageToken"] = token
            else:
                token = "CP" + secrets.token_urlsafe(24)
                self._sync_tokens[token] = (calendar.owner, cursor.snapshot)
                body["nextSyncToken"] = token
            body["items"] = items
        return JSONResponse(body)

    def _start_listing(
        self,
        calendar: _Calendar,
        q: Any,
        sync_token: str | None,
        time_min: datetime | None,
        time_max: datetime | None,
        fingerprint: tuple[tuple[str, str], ...],
    ) -> _Cursor:
        events = list(calendar.events.values())
        if sync_token is not None:
            since = self._sync_tokens[sync_token][1]
            chosen = sorted((e for e in events if e.seq > since), key=lambda e: e.seq)
        else:
            show_deleted = q.get("showDeleted") == "true"
            chosen = [
                e
                for e in events
                if (show_deleted or e.status != "cancelled")
                and (time_min is None or e.end_key > time_min)
                and (time_max is None or e.start_key < time_max)
            ]
            if q.get("orderBy") == "startTime":
                chosen.sort(key=lambda e: (e.start_key, e.id))
            elif q.get("orderBy") == "updated":
                chosen.sort(key=lambda e: e.seq)
        return _Cursor(calendar.owner, fingerprint, [e.id for e in chosen], 0, self._seq)

    async def _insert_event(self, request: Request) -> Response:
        _, body = await self._record(request)
        failure = self._take_failure(request)
        if failure is not None and not failure.after:
            return self._failure_response(failure, request.url.path)
        grant = self._bearer(request, _WRITE_SCOPES)
        if isinstance(grant, Response):
            return grant
        calendar = self._calendar_for(grant, request.path_params["calendar_id"])
        if isinstance(calendar, Response):
            return calendar
        response = self._insert(calendar, body)
        return self._failure_response(failure, request.url.path) if failure is not None else response

    def _parse_time(self, value: Any) -> datetime | date | None:
        if not isinstance(value, dict):
            return None
        try:
            if isinstance(value.get("dateTime"), str):
                parsed = datetime.fromisoformat(value["dateTime"])
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=ZoneInfo(value.get("timeZone") or self.time_zone))
                return parsed
            if isinstance(value.get("date"), str):
                return date.fromisoformat(value["date"])
        except (ValueError, KeyError):
            return None
        return None

    def _insert(self, calendar: _Calendar, body: Any) -> Response:
        def bad(status: int, message: str, reason: str) -> Response:
            return JSONResponse(google_error(status, message, reason), status_code=status)

        if not isinstance(body, dict):
            return bad(400, "Bad Request", "badRequest")
        start, end = self._parse_time(body.get("start")), self._parse_time(body.get("end"))
        if start is None:
            return bad(400, "Missing start time.", "required")
        if end is None:
            return bad(400, "Missing end time.", "required")
        if type(start) is not type(end) or _as_instant(end) < _as_instant(start):
            return bad(400, "The specified time range is empty.", "timeRangeEmpty")
        event_id = body.get("id")
        if event_id is not None and (not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id)):
            return bad(400, "Invalid resource id value.", "invalid")
        attendees = [
            {"email": a["email"], "responseStatus": "needsAction"}
            for a in body.get("attendees") or []
            if isinstance(a, dict) and isinstance(a.get("email"), str)
        ]
        with self._lock:
            if event_id is not None and event_id in calendar.events:
                return bad(409, "The requested identifier already exists.", "duplicate")
            summary = body.get("summary")
            event = self._store(
                calendar,
                summary=summary if isinstance(summary, str) else "",
                start=start,
                end=end,
                attendees=attendees,
                event_id=event_id,
            )
            return JSONResponse(self._render(event, full=True))
