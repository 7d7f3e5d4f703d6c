"""Apple Calendar (iCloud) over CalDAV: a user's appointments for the sync engine.

iCloud serves CalDAV at ``https://caldav.icloud.com`` to an Apple ID with an app-specific password
(HTTP Basic over TLS; Apple has no OAuth for calendars). The ``caldav`` client finds the account's
principal, its calendar home (on iCloud a partition host such as ``p42-caldav.icloud.com``) and the
calendars in it, then runs one time-range search per calendar. The client is synchronous, so every
call to it runs in ``asyncio.to_thread``: a sync never blocks the event loop. Each ``appointments``
call opens a client of its own, so one source can serve concurrent syncs.

Calendars: every calendar that holds events (``supported-calendar-component-set`` with VEVENT, so
Reminders lists are left out), or only those named in ``calendar_names`` (display names, compared
case-insensitively; a name that matches no event calendar is a permanent error rather than a sync
that silently reads less).

Events become ``ExternalAppointment`` records:

* Recurring events are expanded by the client into one record per occurrence in the window, each
  carrying RECURRENCE-ID. ``external_id`` is the UID, plus ``#`` and the RECURRENCE-ID in UTC
  (``20250304T150000Z``) for an occurrence; ``shared_reference`` is the UID.
* DTSTART and DTEND (else DTSTART + DURATION, else DTSTART itself, as RFC 5545 §3.6.1 says) are
  returned in UTC. A floating time (no time zone) is read as UTC: CalDAV gives no zone for it and
  the calendar's own ``calendar-timezone`` is not consulted. The search window is sent in UTC too,
  so floating times are matched the same way.
* All-day events (DTSTART a DATE) are not appointments and are skipped, as are events without a
  UID or a DTSTART.
* STATUS:CANCELLED becomes ``cancelled``; everything else is ``booked``.
* The customer is the first individual ATTENDEE that is neither the ORGANIZER nor the account's own
  Apple ID (CN as name, ``mailto:`` or the EMAIL parameter as email, ``tel:`` as phone). When the
  account was invited by someone else (only the account among the attendees), the organizer is the
  customer.

Change detection with RFC 6578 ``sync-collection`` (iCloud and Radicale support it): before a full
read, each calendar's current sync token is taken (a ``sync-collection`` REPORT without a token), and
``next_sync_token`` carries them with the calendars' URLs and the window's end. The next sync asks each
calendar what changed since its token. When no calendar reports an added, changed or deleted
resource, the set of calendars is the same and the window's far end has moved less than
``FULL_READ_EVERY`` past the one read, nothing is read and nothing reconciled (an incremental sync).
Otherwise (a change, an expired token, a server that refuses the REPORT) the whole window is read
again, ``full_resync`` is True, and the sync engine reconciles: what the window no longer holds
(a deleted event, a deleted series, an occurrence removed by a later EXDATE) is cancelled. Changed
resources are not fetched one by one: a recurring event's occurrences depend on the window, and a
deleted resource's href says nothing about which occurrences it held, so a full read is what keeps
the reconciliation exact. A server without ``sync-collection`` support gets no token
(``next_sync_token`` None) and a full read with reconciliation on every sync.

Errors become ``ProviderError``: HTTP 401 is ``auth`` (the app-specific password was revoked or
mistyped), 429 is ``rate_limited``, connection failures, timeouts and 5xx are ``transient``, any
other refusal ``permanent``. Messages never carry the password or calendar data.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

from caldav.calendarobjectresource import CalendarObjectResource
from caldav.collection import Calendar
from caldav.davclient import DAVClient
from caldav.lib import error as caldav_error
from caldav.lib.http_sync import requests as caldav_http

from domain.sync import ExternalAppointment, FetchedPage, ProviderError
from integrations.apple.mapping import appointment_from_vevent, as_utc

__all__ = [
    "ICLOUD_CALDAV_URL",
    "PROVIDER_NAME",
    "AppleCalendarSource",
    "appointment_from_vevent",
    "provider_error",
]

PROVIDER_NAME: Final = "Apple"
ICLOUD_CALDAV_URL: Final = "https://caldav.icloud.com"
_LOOPBACK_HOSTS: Final = frozenset({"localhost"})
# An unchanged account is still read in full this often: the window's far end moves with the clock,
# and occurrences of an unchanged series that enter the window are only found by a read.
FULL_READ_EVERY: Final = timedelta(days=1)

log = logging.getLogger("brandvx.integrations.apple")
T = TypeVar("T")
P = ParamSpec("P")


class AppleCalendarSource:
    """``CalendarSource`` for one iCloud account (Apple ID + app-specific password)."""

    def __init__(
        self,
        *,
        url: str = ICLOUD_CALDAV_URL,
        username: str,
        app_password: str,
        calendar_names: Sequence[str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("the CalDAV URL must be an absolute http(s) URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            # Basic auth sends the password with every request: only TLS may carry it off the host.
            raise ValueError("the CalDAV URL must use https")
        if not username or not app_password:
            raise ValueError("an Apple ID and an app-specific password are required")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._url = url
        self._username = username
        self._password = app_password
        self._calendar_names = tuple(calendar_names) if calendar_names is not None else None
        # The caldav client declares whole seconds; rounding up never cuts a call short.
        self._timeout = math.ceil(timeout)
        self._next_sync_token: str | None = None
        # After an iteration: True when a stored token led to a full read (a change, or no support).
        self.full_resync = False

    def __repr__(self) -> str:
        return f"AppleCalendarSource(url={self._url!r}, username={self._username!r})"

    @property
    def next_sync_token(self) -> str | None:
        """After an iteration: the calendars' sync tokens, or None where the server has none."""
        return self._next_sync_token

    async def verify(self) -> str:
        """Log in and return the account's principal URL; ProviderError when Apple refuses."""
        client = await _off_loop(self._open)
        try:
            return await _off_loop(_principal_url, client)
        finally:
            await asyncio.to_thread(client.close)

    async def appointments(
        self, start: datetime, end: datetime, *, sync_token: str | None = None
    ) -> AsyncIterator[FetchedPage[ExternalAppointment]]:
        """One page per event calendar, with every appointment overlapping [start, end).

        With a ``sync_token`` from an earlier sync: no page at all when no calendar changed since (see
        the module notes), else the full read with ``full_resync`` set.
        """
        window = (as_utc(start, "start"), as_utc(end, "end"))
        self._next_sync_token = None
        self.full_resync = False
        if window[1] <= window[0]:
            return
        client = await _off_loop(self._open)
        try:
            calendars = await _off_loop(self._event_calendars, client)
            stored = _read_token(sync_token)
            if stored is not None:
                tokens = await _off_loop(_unchanged, calendars, stored, window[1])
                if tokens is not None:
                    self._next_sync_token = _write_token(tokens, stored[1])
                    return
                self.full_resync = True
            # Taken before the read: a change made during it shows up next time.
            tokens = await _off_loop(_current_tokens, calendars)
            seen: set[str] = set()
            for calendar in calendars:
                records = await _off_loop(self._calendar_appointments, calendar, window)
                # An event can sit in two calendars (an invitation copied into another one).
                page = [record for record in records if record.external_id not in seen]
                seen.update(record.external_id for record in page)
                log.debug(
                    "apple: %d appointments in a calendar, %d already seen",
                    len(records),
                    len(records) - len(page),
                )
                yield FetchedPage(items=page)
            self._next_sync_token = _write_token(tokens, window[1]) if tokens is not None else None
        finally:
            await asyncio.to_thread(client.close)

    # The methods below run in a worker thread: they block on the network.

    def _open(self) -> DAVClient:
        return DAVClient(
            url=self._url,
            username=self._username,
            password=self._password,
            auth_type="basic",
            timeout=self._timeout,
            enable_rfc6764=False,
        )

    def _event_calendars(self, client: DAVClient) -> list[Calendar]:
        calendars = client.get_calendars(client.get_principal())
        if self._calendar_names is None:
            return [calendar for calendar in calendars if _holds_events(calendar)]
        by_name: dict[str, list[Calendar]] = {}
        for calendar in calendars:
            name = _sync_result(calendar.get_display_name())
            if name is not None:
                by_name.setdefault(_name_key(name), []).append(calendar)
        chosen: list[Calendar] = []
        missing: list[str] = []
        wanted: set[str] = set()
        for name in self._calendar_names:
            key = _name_key(name)
            if key in wanted:
                continue
            wanted.add(key)
            matches = [calendar for calendar in by_name.get(key, []) if _holds_events(calendar)]
            if not matches:
                missing.append(name)
            chosen.extend(matches)
        if missing:
            raise ProviderError(
                "permanent",
                f"{PROVIDER_NAME} has no event calendar named {', '.join(repr(m) for m in missing)}",
            )
        return chosen

    def _calendar_appointments(
        self, calendar: Calendar, window: tuple[datetime, datetime]
    ) -> list[ExternalAppointment]:
        # caldav leaves the result's element type open; an event search yields calendar objects.
        found = cast(
            list[CalendarObjectResource],
            _sync_result(calendar.search(start=window[0], end=window[1], event=True, expand=True)),
        )
        owner = self._username.casefold() if "@" in self._username else None
        records: list[ExternalAppointment] = []
        skipped = 0
        for resource in found:
            for component in resource.get_icalendar_instance().walk("VEVENT"):
                record = appointment_from_vevent(component, owner=owner)
                if record is None:
                    skipped += 1
                elif _overlaps(record, *window):
                    records.append(record)
        if skipped:
            log.debug("apple: %d events were not appointments (all-day or incomplete)", skipped)
        return records


def provider_error(exc: BaseException) -> ProviderError | None:
    """A caldav or HTTP failure classified for the job runner; None for anything else (a bug)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, caldav_error.RateLimitError):
        if exc.status == 503:
            return ProviderError(
                "transient", _unavailable(503), status=503, retry_after=exc.retry_after_seconds
            )
        return ProviderError(
            "rate_limited",
            f"{PROVIDER_NAME} is rate limiting requests",
            status=exc.status,
            retry_after=exc.retry_after_seconds,
        )
    if isinstance(exc, caldav_error.AuthorizationError):
        if exc.status == 401:
            return ProviderError("auth", f"{PROVIDER_NAME} refused the app-specific password", status=401)
        return ProviderError(
            "permanent",
            f"{PROVIDER_NAME} refused access to the calendars (HTTP {exc.status})",
            status=exc.status,
        )
    if isinstance(exc, caldav_error.DAVError):
        status = exc.status
        if status is not None and (status >= 500 or status == 408):
            return ProviderError("transient", _unavailable(status), status=status)
        if status == 429:
            return ProviderError("rate_limited", f"{PROVIDER_NAME} is rate limiting requests", status=status)
        detail = f"HTTP {status}" if status is not None else type(exc).__name__
        return ProviderError(
            "permanent", f"{PROVIDER_NAME} rejected a calendar request ({detail})", status=status
        )
    if isinstance(exc, caldav_http.exceptions.Timeout):
        return ProviderError("transient", f"{PROVIDER_NAME} did not answer in time")
    if isinstance(exc, caldav_http.exceptions.ConnectionError):
        return ProviderError("transient", f"{PROVIDER_NAME}'s calendar server could not be reached")
    if isinstance(exc, caldav_http.exceptions.RequestException):
        return ProviderError("permanent", f"{PROVIDER_NAME}'s calendar server could not be called")
    if isinstance(exc, OSError):
        return ProviderError("transient", f"{PROVIDER_NAME}'s calendar server could not be reached")
    return None


async def _off_loop(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a worker thread, its failures as ProviderError."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except Exception as exc:
        classified = provider_error(exc)
        if classified is None:
            raise
        if classified is not exc:
            log.info("apple: %s (%s)", classified.message, type(exc).__name__)
            raise classified from exc
        raise


def _read_token(token: str | None) -> tuple[dict[str, str], datetime] | None:
    """(calendar URL -> sync token, the window end read) from ``next_sync_token``; None if unusable."""
    if not token:
        return None
    try:
        data = json.loads(token)
        tokens = data["calendars"]
        until = datetime.fromisoformat(data["until"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(tokens, dict) or not all(isinstance(v, str) for v in tokens.values()):
        return None
    if until.tzinfo is None:
        return None
    return {str(k): v for k, v in tokens.items()}, until


def _write_token(tokens: dict[str, str], until: datetime) -> str:
    return json.dumps({"v": 1, "calendars": tokens, "until": until.isoformat()}, sort_keys=True)


def _no_sync_support(exc: caldav_error.DAVError) -> bool:
    """A refused or failed sync-collection REPORT that a full read answers (not a login problem)."""
    if isinstance(exc, caldav_error.RateLimitError):
        return False
    return not (isinstance(exc, caldav_error.AuthorizationError) and exc.status == 401)


def _current_tokens(calendars: Sequence[Calendar]) -> dict[str, str] | None:
    """Each calendar's sync token now; None when the server does not support sync-collection."""
    tokens: dict[str, str] = {}
    for calendar in calendars:
        try:
            collection = _sync_result(calendar.get_objects_by_sync_token(None, False, True))
        except caldav_error.DAVError as exc:
            if not _no_sync_support(exc):
                raise
            log.info("apple: the server has no sync-collection (%s): full reads", type(exc).__name__)
            return None
        token = collection.sync_token
        if not isinstance(token, str) or not token or token.startswith("fake-"):
            return None
        tokens[str(calendar.url)] = token
    return tokens


def _unchanged(
    calendars: Sequence[Calendar], stored: tuple[dict[str, str], datetime], end: datetime
) -> dict[str, str] | None:
    """The calendars' new tokens when nothing changed since ``stored``; None when a full read is due."""
    tokens, until = stored
    if end - until > FULL_READ_EVERY or set(tokens) != {str(c.url) for c in calendars}:
        return None
    fresh: dict[str, str] = {}
    for calendar in calendars:
        try:
            collection = _sync_result(
                calendar.get_objects_by_sync_token(tokens[str(calendar.url)], False, True)
            )
        except caldav_error.DAVError as exc:
            if not _no_sync_support(exc):
                raise
            return None  # an expired token, or support withdrawn
        if list(collection) or collection.deleted_urls or not isinstance(collection.sync_token, str):
            return None
        fresh[str(calendar.url)] = collection.sync_token
    return fresh


def _principal_url(client: DAVClient) -> str:
    principal = client.get_principal()
    return str(principal.url) if principal.url is not None else str(client.url)


def _sync_result(value: T | Coroutine[Any, Any, T]) -> T:
    """The value of a caldav call made through the synchronous client (which never returns a coroutine)."""
    if isinstance(value, Coroutine):
        value.close()
        raise TypeError("the caldav client returned a coroutine: an async client was used")
    return value


def _holds_events(calendar: Calendar) -> bool:
    components: list[object] = _sync_result(calendar.get_supported_components())
    return any(str(component).upper() == "VEVENT" for component in components)


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _overlaps(record: ExternalAppointment, start: datetime, end: datetime) -> bool:
    if record.starts_at >= end:
        return False
    return record.ends_at > start or record.starts_at >= start  # a zero-length event at `start` is in


def _unavailable(status: int) -> str:
    return f"{PROVIDER_NAME} had a temporary error (HTTP {status})"
