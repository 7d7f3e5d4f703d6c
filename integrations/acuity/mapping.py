"""Acuity's appointment JSON as ``ExternalAppointment`` records."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.model import Provider
from domain.sync import AppointmentStatus, ExternalAppointment, ExternalCustomer, ProviderError

_TRUE_STRINGS: Final = frozenset({"true", "1", "yes"})


def to_external_appointment(raw: Mapping[str, Any]) -> ExternalAppointment:
    """Map one Acuity appointment object; raises ProviderError (permanent) when it has no id or start."""
    raw_id = raw.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, int | str) or not str(raw_id).strip():
        raise ProviderError("permanent", "Acuity returned an appointment without an id")
    external_id = str(raw_id).strip()
    starts_at = _parse_datetime(raw.get("datetime"), raw)
    if starts_at is None:
        raise ProviderError("permanent", f"Acuity appointment {external_id} has no readable start time")
    status: AppointmentStatus = "booked"
    if _flag(raw.get("canceled")):
        status = "cancelled"
    elif _flag(raw.get("noShow")):
        status = "no_show"
    title = raw.get("type")
    return ExternalAppointment(
        provider=Provider.ACUITY,
        external_id=external_id,
        title=title.strip() if isinstance(title, str) and title.strip() else "Appointment",
        starts_at=starts_at,
        ends_at=_ends_at(raw, starts_at),
        status=status,
        customer=_customer(raw),
        shared_reference=None,
    )


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in _TRUE_STRINGS


def _text(value: object) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def zone_named(name: object) -> tzinfo | None:
    if not isinstance(name, str) or not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _zone_of(raw: Mapping[str, Any]) -> tzinfo | None:
    return zone_named(raw.get("timezone")) or zone_named(raw.get("calendarTimezone"))


def _parse_datetime(value: object, raw: Mapping[str, Any]) -> datetime | None:
    """Acuity writes ``2024-03-05T09:00:00-0500``; a value without an offset takes the record's zone."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        zone = _zone_of(raw)
        return parsed.replace(tzinfo=zone) if zone is not None else None
    return parsed


def _ends_at(raw: Mapping[str, Any], starts_at: datetime) -> datetime:
    duration = raw.get("duration")
    if not isinstance(duration, bool) and isinstance(duration, int | str):
        try:
            minutes = int(str(duration).strip())
        except ValueError:
            minutes = -1
        if minutes >= 0:
            return starts_at + timedelta(minutes=minutes)
    end_time = _parse_clock(raw.get("endTime"))
    if end_time is None:
        return starts_at
    day = _parse_day(raw.get("date")) or starts_at.date()
    ends_at = datetime.combine(day, end_time, tzinfo=starts_at.tzinfo)
    # endTime is a clock time on the start's date; an earlier clock time means it ran past midnight.
    return ends_at if ends_at >= starts_at else ends_at + timedelta(days=1)


def _parse_clock(value: object) -> time | None:
    """Acuity clock times look like ``9:30am`` / ``12:00pm``."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip().lower(), "%I:%M%p").time()
    except ValueError:
        return None


def _parse_day(value: object) -> date | None:
    """Acuity dates look like ``March 5, 2024``."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip(), "%B %d, %Y").date()
    except ValueError:
        return None


def _customer(raw: Mapping[str, Any]) -> ExternalCustomer | None:
    """Acuity appointments carry the client's details but no client id; matching is by email/phone."""
    first, last = _text(raw.get("firstName")), _text(raw.get("lastName"))
    name = " ".join(part for part in (first, last) if part) or None
    email, phone = _text(raw.get("email")), _text(raw.get("phone"))
    if name is None and email is None and phone is None:
        return None
    return ExternalCustomer(external_id=None, name=name, email=email, phone=phone)
