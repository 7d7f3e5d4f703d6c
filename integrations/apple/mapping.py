"""iCalendar VEVENTs (as CalDAV returns them) as ``ExternalAppointment`` records."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Final

import icalendar

from domain.model import Provider
from domain.sync import AppointmentStatus, ExternalAppointment, ExternalCustomer

_NON_CUSTOMER_CUTYPES: Final = frozenset({"GROUP", "RESOURCE", "ROOM"})


def appointment_from_vevent(
    event: icalendar.Component, *, owner: str | None = None
) -> ExternalAppointment | None:
    """The appointment a VEVENT stands for, or None (all-day, no UID or no DTSTART).

    ``owner`` is the account's own calendar address (lower case, without ``mailto:``), never taken
    as the customer.
    """
    uid = _text(event, "UID")
    raw_start = _decoded(event, "DTSTART")
    if not uid or not isinstance(raw_start, datetime):
        return None
    starts_at = _pinned(raw_start)
    raw_end = _decoded(event, "DTEND")
    raw_duration = _decoded(event, "DURATION")
    if isinstance(raw_end, datetime):
        ends_at = _pinned(raw_end)
    elif raw_end is not None:
        return None  # a DATE end on a DATE-TIME start: not a valid event
    elif isinstance(raw_duration, timedelta):
        ends_at = _add_duration(starts_at, raw_duration)
    else:
        ends_at = starts_at
    external_id = uid
    recurrence_id = _decoded(event, "RECURRENCE-ID")
    if isinstance(recurrence_id, datetime):
        external_id = f"{uid}#{_pinned(recurrence_id).astimezone(UTC):%Y%m%dT%H%M%SZ}"
    elif isinstance(recurrence_id, date):
        external_id = f"{uid}#{recurrence_id:%Y%m%d}"
    status: AppointmentStatus = "cancelled" if _text(event, "STATUS").upper() == "CANCELLED" else "booked"
    return ExternalAppointment(
        provider=Provider.APPLE,
        external_id=external_id,
        title=_text(event, "SUMMARY").strip(),
        starts_at=starts_at.astimezone(UTC),
        ends_at=ends_at.astimezone(UTC),
        status=status,
        customer=_customer(event, owner=owner),
        shared_reference=uid,
    )


def as_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value.astimezone(UTC)


def _pinned(value: datetime) -> datetime:
    """An aware datetime; a floating time is read as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None or value.utcoffset() is None else value


def _add_duration(start: datetime, duration: timedelta) -> datetime:
    """RFC 5545 §3.3.6: days and weeks are nominal (wall-clock days), hours and less exact."""
    nominal = timedelta(days=duration.days)
    return (start + nominal).astimezone(UTC) + (duration - nominal)


def _decoded(component: icalendar.Component, name: str) -> object:
    if name not in component:
        return None
    value: object = component.decoded(name)
    return value


def _text(component: icalendar.Component, name: str) -> str:
    value: object = component.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value is not None else ""


def _addresses(component: icalendar.Component, name: str) -> list[icalendar.vCalAddress]:
    value: object = component.get(name)
    values: Iterable[object] = value if isinstance(value, list) else () if value is None else (value,)
    return [item for item in values if isinstance(item, icalendar.vCalAddress)]


def _param(address: icalendar.vCalAddress, name: str) -> str | None:
    value: object = address.params.get(name)
    text = str(value).strip() if value is not None else ""
    return text or None


def _address_key(address: str) -> str:
    text = address.strip()
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:") :]
    return text.casefold()


def _customer(event: icalendar.Component, *, owner: str | None) -> ExternalCustomer | None:
    organizers = _addresses(event, "ORGANIZER")
    organizer = organizers[0] if organizers else None
    not_customers = {key for key in (owner, organizer and _address_key(organizer)) if key}
    attendees = [
        attendee
        for attendee in _addresses(event, "ATTENDEE")
        if (_param(attendee, "CUTYPE") or "INDIVIDUAL").upper() not in _NON_CUSTOMER_CUTYPES
    ]
    for attendee in attendees:
        if _address_key(attendee) not in not_customers:
            customer = _as_customer(attendee)
            if customer is not None:
                return customer
    # Invited by someone else: no attendee but the account itself, so the inviter is the customer.
    if (
        organizer is not None
        and owner
        and _address_key(organizer) != owner
        and any(_address_key(attendee) == owner for attendee in attendees)
    ):
        return _as_customer(organizer)
    return None


def _as_customer(address: icalendar.vCalAddress) -> ExternalCustomer | None:
    value = address.strip()
    scheme, _, rest = value.partition(":")
    email = _param(address, "EMAIL")
    phone = None
    if scheme.lower() == "mailto" and rest.strip():
        email = rest.strip()
    elif scheme.lower() == "tel" and rest.strip():
        phone = rest.strip()
    name = _param(address, "CN")
    if name is not None and email is not None and name.casefold() == email.casefold():
        name = None  # clients often repeat the address as the name
    if email is None and phone is None and name is None:
        return None
    return ExternalCustomer(external_id=None, name=name, email=email, phone=phone)
