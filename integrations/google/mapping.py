"""Google Calendar events as ``ExternalAppointment`` records (see ``client.py`` for the rules)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.model import Provider
from domain.sync import ExternalAppointment, ExternalCustomer

log = logging.getLogger("brandvx.integrations.google")

# starts_at == ends_at == TIME_UNKNOWN: a cancellation whose times Google no longer sends.
TIME_UNKNOWN: Final = datetime(1970, 1, 1, tzinfo=UTC)

_NOT_APPOINTMENTS = frozenset({"outOfOffice", "focusTime", "workingLocation", "fromGmail", "birthday"})


def to_external_appointment(event: dict[str, Any], calendar_tz: str | None) -> ExternalAppointment | None:
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        return None
    if event.get("eventType") in _NOT_APPOINTMENTS or _is_all_day(event.get("start")):
        return None
    cancelled = event.get("status") == "cancelled"
    starts = _event_time(event.get("start"), calendar_tz)
    ends = _event_time(event.get("end"), calendar_tz)
    original = event.get("originalStartTime")
    if starts is None or ends is None:
        if not cancelled:
            log.warning("Google Calendar event %s has no start or end time; skipped", event_id)
            return None
        if _is_all_day(original):
            return None
        starts = ends = _event_time(original, calendar_tz) or TIME_UNKNOWN
    summary = event.get("summary")
    return ExternalAppointment(
        provider=Provider.GOOGLE,
        external_id=event_id,
        title=summary if isinstance(summary, str) else "",
        starts_at=starts,
        ends_at=ends,
        status="cancelled" if cancelled else "booked",
        customer=_customer(event.get("attendees")),
        shared_reference=_shared_reference(event, _event_time(original, calendar_tz)),
    )


def _is_all_day(value: object) -> bool:
    return isinstance(value, dict) and "date" in value and "dateTime" not in value


def _event_time(value: object, calendar_tz: str | None) -> datetime | None:
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        return None
    try:
        parsed = datetime.fromisoformat(value["dateTime"])
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # Google requires an offset unless timeZone is given; honour either.
        zone = value.get("timeZone")
        parsed = parsed.replace(tzinfo=_zone(zone if isinstance(zone, str) else calendar_tz))
    return parsed


@lru_cache(maxsize=64)
def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _customer(attendees: object) -> ExternalCustomer | None:
    """The first attendee who is neither the calendar's owner (``self``) nor a room (``resource``)."""
    if not isinstance(attendees, list):
        return None
    for attendee in attendees:
        if not isinstance(attendee, dict) or attendee.get("self") or attendee.get("resource"):
            continue
        name, email, profile = attendee.get("displayName"), attendee.get("email"), attendee.get("id")
        return ExternalCustomer(
            external_id=profile if isinstance(profile, str) else None,
            name=name if isinstance(name, str) and name else None,
            email=email if isinstance(email, str) and email else None,
        )
    return None


def _shared_reference(event: dict[str, Any], original_start: datetime | None) -> str | None:
    uid = event.get("iCalUID")
    if not isinstance(uid, str) or not uid:
        return None
    if event.get("recurringEventId") and original_start is not None:
        return f"{uid};RECURRENCE-ID={original_start.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    return uid
