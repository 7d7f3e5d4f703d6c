"""A local fake of Acuity Scheduling's API v1, served over HTTP on 127.0.0.1.

uvicorn runs it in a background thread on a free port. It behaves like the real API where our
client depends on it, including the trap that cost the old import 94 % of its appointments:

* ``GET /api/v1/appointments`` returns at most ``max`` appointments (default 100) and gives no sign
  that it stopped early: no total, no cursor, no header.
* ``direction`` defaults to ``DESC`` (newest first); ``ASC`` is oldest first. Ties keep id order.
* Canceled appointments are left out unless ``showall=true`` (both) or ``canceled=true`` (only them).
* ``minDate`` / ``maxDate`` are inclusive, read in the account's timezone (``timezone=``). Our reading
  of Acuity's "this date and after / this date and before": a bare date ``YYYY-MM-DD`` means the whole
  local day (``maxDate=2025-03-05`` includes 23:59 that day); a date-time ``YYYY-MM-DDTHH:MM[:SS]``
  (``T`` or a space) is an instant, naive values local, an explicit offset honoured; an appointment
  starting exactly on either bound is included. ``bounds="date"`` makes the fake drop the time of day,
  as an account that honours only dates would.
* Auth: HTTP Basic (user id, API key) or ``Bearer`` with a token from ``/oauth2/token`` (or
  ``issue_token()``); anything else is 401 with Acuity's error JSON.
* ``GET /oauth2/authorize`` redirects to ``redirect_uri`` with ``code`` and ``state`` (no login page);
  ``POST /oauth2/token`` checks client id/secret, code and redirect URI; codes are single-use.
* ``fail_next(n, status=..., retry_after=...)`` makes the next n requests fail (500, 429, 401...).

No pytest here, so a benchmark can use it too::

    with FakeAcuity(timezone="America/New_York") as fake:
        fake.seed(2_000, date(2025, 3, 1), 60, busy={20: 350})
        ...  # AcuityClient(base_url=fake.base_url, ...), fake.calendar_basic credentials
"""

from __future__ import annotations

import base64
import binascii
import bisect
import random
import secrets
import sys
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tests.fakes.serving import ServedFake

__all__ = ["FakeAcuity", "RecordedRequest"]

_FIRST_NAMES = ("Ana", "Bea", "Cleo", "Dana", "Eve", "Faye", "Gia", "Hana", "Iris", "Jade")
_LAST_NAMES = ("Moss", "Reed", "Stone", "Vale", "Wren", "Lane", "Fox", "Hale", "Brook", "Shaw")
_TYPES = ((101, "Haircut", 60), (102, "Color", 120), (103, "Blowout", 45), (104, "Brow Lamination", 30))
_CALENDARS = ((5001, "Jane"), (5002, "Kim"), (5003, "Lou"))


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    form: dict[str, str]
    status: int
    returned: int | None  # how many appointments a list answer held


@dataclass
class _Failure:
    status: int
    retry_after: float | None


@dataclass
class _Appointment:
    id: int
    starts_at: datetime  # aware, in the account's zone
    calendar_id: int
    calendar: str
    duration: int = 60
    first_name: str = "Ana"
    last_name: str = "Moss"
    email: str = "ana.moss@example.com"
    phone: str = "+15555550100"
    type_id: int = 101
    type_name: str = "Haircut"
    canceled: bool = False
    no_show: bool = False
    timestamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.timestamp = self.starts_at.timestamp()

    def to_json(self, zone: str) -> dict[str, Any]:
        start, end = self.starts_at, self.starts_at + timedelta(minutes=self.duration)
        created = start - timedelta(days=3)
        return {
            "id": self.id,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "phone": self.phone,
            "email": self.email,
            "date": _acuity_date(start),
            "time": _acuity_clock(start),
            "endTime": _acuity_clock(end),
            "dateCreated": _acuity_date(created),
            "datetimeCreated": created.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "datetime": start.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "price": "50.00",
            "priceSold": "50.00",
            "paid": "no",
            "amountPaid": "0.00",
            "type": self.type_name,
            "appointmentTypeID": self.type_id,
            "classID": None,
            "addonIDs": [],
            "category": "",
            "duration": str(self.duration),
            "calendar": self.calendar,
            "calendarID": self.calendar_id,
            "certificate": None,
            "confirmationPage": f"https://app.acuityscheduling.com/schedule.php?action=appt&id={self.id}",
            "location": "",
            "notes": "",
            "timezone": zone,
            "calendarTimezone": zone,
            "canceled": self.canceled,
            "canClientCancel": not self.canceled,
            "canClientReschedule": not self.canceled,
            "labels": [{"id": 1, "name": "No-show", "color": "red"}] if self.no_show else None,
            "noShow": self.no_show,
            "forms": [],
            "formsText": "",
            "isVerified": False,
            "scheduledBy": None,
        }


def _acuity_date(moment: datetime) -> str:
    return f"{moment:%B} {moment.day}, {moment.year}"


def _acuity_clock(moment: datetime) -> str:
    hour = moment.hour % 12 or 12
    return f"{hour}:{moment.minute:02d}{'am' if moment.hour < 12 else 'pm'}"


def _error(status: int, error: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    body = {"status_code": status, "message": message, "error": error}
    return Response(orjson.dumps(body), status, headers=dict(headers or {}), media_type="application/json")


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


class FakeAcuity(ServedFake):
    thread_name = "fake-acuity"

    def __init__(
        self,
        *,
        user_id: str = "21474",
        api_key: str = "fake-acuity-api-key-0123456789",
        client_id: str = "fake-acuity-client",
        client_secret: str = "fake-acuity-secret",  # noqa: S107 - a fake's own credential
        account_id: int = 21474,
        timezone: str = "America/New_York",
        bounds: Literal["datetime", "date"] = "datetime",
        host: str = "127.0.0.1",
    ) -> None:
        self.user_id = user_id
        self.api_key = api_key
        self.client_id = client_id
        self.client_secret = client_secret
        self.account_id = account_id
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        self.bounds = bounds
        super().__init__(host=host)
        self._lock = threading.Lock()
        self._appointments: list[_Appointment] = []  # sorted by (timestamp, id)
        self._keys: list[tuple[float, int]] = []
        self._by_id: dict[int, _Appointment] = {}
        self._next_id = 1_000_001
        self._tokens: set[str] = set()
        self._codes: dict[str, str] = {}  # code -> redirect_uri
        self._failures: deque[_Failure] = deque()
        # (list requests still answered, list requests then failed, status): a walk that breaks mid-way.
        self._list_failure: tuple[int, int, int] | None = None
        self._requests: list[RecordedRequest] = []
        self.app = Starlette(
            routes=[
                Route("/oauth2/authorize", self._authorize, methods=["GET"]),
                Route("/oauth2/token", self._token, methods=["POST"]),
                Route("/api/v1/me", self._me, methods=["GET"]),
                Route("/api/v1/appointments", self._list, methods=["GET"]),
                Route("/api/v1/appointments/{id}", self._one, methods=["GET"]),
            ]
        )

    # --- data (safe from any thread) ---

    def reset(self) -> None:
        """Forget appointments, failures, recorded requests, tokens and codes; keep the settings."""
        with self._lock:
            self._appointments.clear()
            self._keys.clear()
            self._by_id.clear()
            self._tokens.clear()
            self._codes.clear()
            self._failures.clear()
            self._list_failure = None
            self._requests.clear()

    def add(
        self,
        *,
        starts_at: datetime,
        duration_minutes: int = 60,
        canceled: bool = False,
        no_show: bool = False,
        first_name: str = "Ana",
        last_name: str = "Moss",
        email: str = "ana.moss@example.com",
        phone: str = "+15555550100",
        type_name: str = "Haircut",
        type_id: int = 101,
    ) -> int:
        """One appointment; a naive ``starts_at`` is local to the account. Returns its id."""
        with self._lock:
            appointment = self._new(
                starts_at,
                duration=duration_minutes,
                canceled=canceled,
                no_show=no_show,
                first_name=first_name,
                last_name=last_name,
                email=email,
                phone=phone,
                type_name=type_name,
                type_id=type_id,
            )
            self._insert([appointment])
            return appointment.id

    def seed(
        self,
        n: int,
        start: date | datetime,
        days: int,
        *,
        busy: Mapping[int, int] | None = None,
        cancel_every: int = 17,
        no_show_every: int = 29,
        rng_seed: int = 7,
    ) -> list[int]:
        """``n`` appointments over ``days`` local days from ``start``, 9:00 to 18:45 on 15-minute slots.

        ``busy`` maps a day offset to how many of the ``n`` fall on that day (a clustered day forces
        the client to split windows below a day); the rest spread evenly at random over all days.
        Every ``cancel_every``-th is canceled and every ``no_show_every``-th (not canceled) a no-show.
        """
        busy = dict(busy or {})
        if sum(busy.values()) > n or any(not 0 <= day < days for day in busy):
            raise ValueError("busy days must lie inside the range and hold at most n appointments")
        rng = random.Random(rng_seed)
        first_day = start.date() if isinstance(start, datetime) else start
        day_offsets = [day for day, count in busy.items() for _ in range(count)]
        day_offsets += [rng.randrange(days) for _ in range(n - len(day_offsets))]
        created: list[_Appointment] = []
        with self._lock:
            for index, offset in enumerate(day_offsets, start=1):
                slot = rng.randrange(40)
                local = datetime.combine(first_day + timedelta(days=offset), datetime.min.time())
                local += timedelta(hours=9, minutes=15 * slot)
                type_id, type_name, duration = _TYPES[rng.randrange(len(_TYPES))]
                first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
                canceled = index % cancel_every == 0
                appointment = self._new(
                    local,
                    duration=duration,
                    canceled=canceled,
                    no_show=not canceled and index % no_show_every == 0,
                    first_name=first,
                    last_name=last,
                    email=f"{first}.{last}{index}@example.com".lower(),
                    phone=f"+1555{index:07d}",
                    type_id=type_id,
                    type_name=type_name,
                )
                created.append(appointment)
            self._insert(created)
        return [appointment.id for appointment in created]

    def burst(self, count: int, at: datetime, *, duration_minutes: int = 30) -> list[int]:
        """``count`` appointments at the same minute (no window can separate them)."""
        with self._lock:
            created = [
                self._new(at, duration=duration_minutes, email=f"b{i}@example.com", phone="")
                for i in range(count)
            ]
            self._insert(created)
        return [appointment.id for appointment in created]

    def remove(self, appointment_id: int) -> None:
        """Delete an appointment outright: lists and look-ups no longer return it."""
        with self._lock:
            appointment = self._by_id.pop(appointment_id)
            position = self._keys.index((appointment.timestamp, appointment.id))
            del self._keys[position]
            del self._appointments[position]

    def ids(self) -> set[str]:
        with self._lock:
            return {str(appointment_id) for appointment_id in self._by_id}

    def issue_token(self) -> str:
        """A valid OAuth access token, as if an owner had connected the app."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
        return token

    def authorization_code(self, redirect_uri: str) -> str:
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._codes[code] = redirect_uri
        return code

    def fail_next(self, n: int = 1, *, status: int = 500, retry_after: float | None = None) -> None:
        with self._lock:
            self._failures.extend(_Failure(status, retry_after) for _ in range(n))

    def fail_list_after(self, answered: int, n: int, *, status: int = 500) -> None:
        """Answer ``answered`` more appointment-list requests, then fail the next ``n`` with ``status``."""
        with self._lock:
            self._list_failure = (answered, n, status)

    def _list_fails(self) -> int | None:
        with self._lock:
            if self._list_failure is None:
                return None
            answered, n, status = self._list_failure
            if answered > 0:
                self._list_failure = (answered - 1, n, status)
                return None
            self._list_failure = (0, n - 1, status) if n > 1 else None
            return status

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def list_requests(self) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path == "/api/v1/appointments"]

    def _new(self, starts_at: datetime, **fields: Any) -> _Appointment:
        if starts_at.tzinfo is None:
            starts_at = starts_at.replace(tzinfo=self.zone)
        calendar_id, calendar = _CALENDARS[self._next_id % len(_CALENDARS)]
        appointment = _Appointment(
            id=self._next_id,
            starts_at=starts_at.astimezone(self.zone),
            calendar_id=calendar_id,
            calendar=calendar,
            **fields,
        )
        self._next_id += 1
        return appointment

    def _insert(self, appointments: list[_Appointment]) -> None:
        for appointment in appointments:
            self._by_id[appointment.id] = appointment
        if len(appointments) > 16:
            self._appointments.extend(appointments)
            self._appointments.sort(key=lambda item: (item.timestamp, item.id))
            self._keys = [(item.timestamp, item.id) for item in self._appointments]
            return
        for appointment in appointments:
            key = (appointment.timestamp, appointment.id)
            position = bisect.bisect(self._keys, key)
            self._keys.insert(position, key)
            self._appointments.insert(position, appointment)

    # --- lifecycle ---

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeAcuity is not started")
        return f"http://{self.host}:{self._port}"

    def stop(self) -> None:
        super().stop()
        self._port = None  # unlike the other fakes, base_url fails once stopped

    # --- endpoints ---

    def _record(
        self,
        request: Request,
        status: int,
        form: Mapping[str, str] | None = None,
        returned: int | None = None,
    ) -> None:
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    params=dict(request.query_params),
                    form=dict(form or {}),
                    status=status,
                    returned=returned,
                )
            )

    def _injected(self, request: Request, form: Mapping[str, str] | None = None) -> Response | None:
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is None:
            return None
        self._record(request, failure.status, form)
        headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
        if failure.status == 401:
            return _error(401, "unauthorized", "Unauthorized", headers)
        if failure.status == 429:
            return _error(429, "too_many_requests", "Too many requests, slow down.", headers)
        return _error(failure.status, "server_error", "An unexpected error occurred.", headers)

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            with self._lock:
                return value.strip() in self._tokens
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, _, key = decoded.partition(":")
            return secrets.compare_digest(user, self.user_id) and secrets.compare_digest(key, self.api_key)
        return False

    def _guard(self, request: Request) -> Response | None:
        injected = self._injected(request)
        if injected is not None:
            return injected
        if not self._authorized(request):
            self._record(request, 401)
            return _error(401, "unauthorized", "Unauthorized")
        return None

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        redirect_uri = params.get("redirect_uri", "")
        if (
            params.get("response_type") != "code"
            or params.get("client_id") != self.client_id
            or params.get("scope") != "api-v1"
            or not redirect_uri
        ):
            self._record(request, 400)
            return _error(400, "invalid_request", "Invalid authorization request.")
        code = self.authorization_code(redirect_uri)
        self._record(request, 302)
        query = urlencode({"code": code, "state": params.get("state", "")})
        return RedirectResponse(f"{redirect_uri}?{query}", status_code=302)

    async def _token(self, request: Request) -> Response:
        # Parsed by hand: Starlette's form parser needs python-multipart, which the project does not install.
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        injected = self._injected(request, form)
        if injected is not None:
            return injected
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            self._record(request, 401, form)
            return _json(
                {"error": "invalid_client", "error_description": "Client authentication failed"}, 401
            )
        if form.get("grant_type") != "authorization_code":
            self._record(request, 400, form)
            return _json({"error": "unsupported_grant_type"}, 400)
        with self._lock:
            expected_redirect = self._codes.pop(form.get("code", ""), None)
        if expected_redirect is None or expected_redirect != form.get("redirect_uri"):
            self._record(request, 400, form)
            return _json({"error": "invalid_grant", "error_description": "Invalid authorization code"}, 400)
        token = self.issue_token()
        self._record(request, 200, form)
        return _json({"access_token": token, "token_type": "Bearer"})

    async def _me(self, request: Request) -> Response:
        denied = self._guard(request)
        if denied is not None:
            return denied
        self._record(request, 200)
        return _json(
            {
                "id": self.account_id,
                "email": "owner@example.com",
                "timezone": self.timezone,
                "name": "Fake Salon",
                "firstDayOfWeek": 0,
                "currency": "USD",
                "schedulingPage": f"https://app.acuityscheduling.com/schedule.php?owner={self.account_id}",
            }
        )

    async def _one(self, request: Request) -> Response:
        denied = self._guard(request)
        if denied is not None:
            return denied
        raw_id = request.path_params["id"]
        with self._lock:
            appointment = self._by_id.get(int(raw_id)) if raw_id.isdigit() else None
            payload = appointment.to_json(self.timezone) if appointment is not None else None
        if payload is None:
            self._record(request, 404)
            return _error(404, "not_found", "The appointment you were looking for could not be found.")
        self._record(request, 200)
        return _json(payload)

    async def _list(self, request: Request) -> Response:
        denied = self._guard(request)
        if denied is not None:
            return denied
        failing = self._list_fails()
        if failing is not None:
            self._record(request, failing)
            return _error(failing, "server_error", "An unexpected error occurred.", {})
        params = request.query_params
        try:
            limit = int(params.get("max", "100"))
            if limit < 1:
                raise ValueError
        except ValueError:
            self._record(request, 400)
            return _error(400, "invalid_max", "max must be a positive integer.")
        try:
            low = self._bound(params.get("minDate"), upper=False)
            high = self._bound(params.get("maxDate"), upper=True)
        except ValueError:
            self._record(request, 400)
            return _error(400, "invalid_date", "minDate and maxDate must be dates.")
        show_all = params.get("showall", "").lower() == "true"
        only_canceled = params.get("canceled", "").lower() == "true"
        descending = params.get("direction", "DESC").upper() != "ASC"
        with self._lock:
            first = 0 if low is None else bisect.bisect_left(self._keys, (low, -1))
            last = len(self._keys) if high is None else bisect.bisect_right(self._keys, (high, sys.maxsize))
            chosen = [
                appointment
                for appointment in (self._appointments[first:last])
                if show_all or appointment.canceled == only_canceled
            ]
            if descending:
                chosen.reverse()
            # The trap: the list just stops at `max`, with nothing to say there was more.
            payload = [appointment.to_json(self.timezone) for appointment in chosen[:limit]]
        self._record(request, 200, returned=len(payload))
        return _json(payload)

    def _bound(self, value: str | None, *, upper: bool) -> float | None:
        """A minDate/maxDate as an inclusive POSIX timestamp (see the module docstring)."""
        if value is None or not value.strip():
            return None
        text = value.strip()
        if len(text) == 10 or self.bounds == "date":
            day = date.fromisoformat(text[:10])
            start = datetime.combine(day, datetime.min.time(), tzinfo=self.zone)
            if not upper:
                return start.timestamp()
            next_day = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=self.zone)
            return next_day.timestamp() - 1e-6
        moment = datetime.fromisoformat(text.replace(" ", "T", 1))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)
        return moment.astimezone(UTC).timestamp()
