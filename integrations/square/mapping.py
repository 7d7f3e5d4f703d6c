"""Square's wire shapes (Bookings, Customers, Catalog, Inventory) mapped to the domain's records.

Pure functions over decoded JSON: no HTTP here, so every rule can be tested on a dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from domain.model import Provider
from domain.sync import AppointmentStatus, ExternalAppointment, ExternalCustomer, ExternalInventoryItem

__all__ = [
    "DEFAULT_TITLE",
    "booking_span",
    "booking_status",
    "display_name",
    "floor_quantity",
    "low_stock_threshold",
    "map_booking",
    "map_customer",
    "map_variation",
    "parse_quantity",
    "parse_time",
    "rfc3339",
    "service_variation_ids",
]

DEFAULT_TITLE: Final = "Square booking"
# Square's default name for the only variation of an item; it adds nothing to the item's name.
DEFAULT_VARIATION_NAME: Final = "Regular"

_STATUSES: Final[Mapping[str, AppointmentStatus]] = {
    "ACCEPTED": "booked",
    "PENDING": "booked",
    "CANCELLED_BY_CUSTOMER": "cancelled",
    "CANCELLED_BY_SELLER": "cancelled",
    "DECLINED": "cancelled",
    "NO_SHOW": "no_show",
}


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp as Square writes it (``2024-10-20T16:00:00Z``, optional fraction)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def booking_status(value: object) -> AppointmentStatus:
    # Square has no "completed": a past ACCEPTED booking stays "booked" until the domain decides.
    return _STATUSES.get(value, "booked") if isinstance(value, str) else "booked"


def booking_span(booking: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
    """Start, and start plus the segments' durations; None when the booking has no usable start."""
    starts_at = parse_time(booking.get("start_at"))
    if starts_at is None:
        return None
    minutes = 0
    segments = booking.get("appointment_segments")
    for segment in segments if isinstance(segments, list) else []:
        duration = _mapping(segment).get("duration_minutes")
        if isinstance(duration, int) and not isinstance(duration, bool) and duration > 0:
            minutes += duration
    return starts_at, starts_at + timedelta(minutes=minutes)


def service_variation_ids(booking: Mapping[str, Any]) -> list[str]:
    segments = booking.get("appointment_segments")
    ids: list[str] = []
    for segment in segments if isinstance(segments, list) else []:
        variation_id = _text(_mapping(segment), "service_variation_id")
        if variation_id is not None and variation_id not in ids:
            ids.append(variation_id)
    return ids


def map_customer(customer_id: str, customer: Mapping[str, Any] | None) -> ExternalCustomer:
    """A Square customer; a customer Square no longer has (deleted, merged) keeps only its id."""
    if not customer:
        return ExternalCustomer(external_id=customer_id)
    parts = [part for part in (_text(customer, "given_name"), _text(customer, "family_name")) if part]
    name = " ".join(parts) or _text(customer, "company_name")
    return ExternalCustomer(
        external_id=customer_id,
        name=name,
        email=_text(customer, "email_address"),
        phone=_text(customer, "phone_number"),
    )


def map_booking(
    booking: Mapping[str, Any],
    *,
    customer: ExternalCustomer | None,
    service_names: Mapping[str, str | None],
) -> ExternalAppointment | None:
    booking_id = _text(booking, "id")
    span = booking_span(booking)
    if booking_id is None or span is None:
        return None
    names: list[str] = []
    for variation_id in service_variation_ids(booking):
        name = service_names.get(variation_id)
        if name and name not in names:
            names.append(name)
    return ExternalAppointment(
        provider=Provider.SQUARE,
        external_id=booking_id,
        title=" + ".join(names) or DEFAULT_TITLE,
        starts_at=span[0],
        ends_at=span[1],
        status=booking_status(booking.get("status")),
        customer=customer,
    )


def display_name(item_name: str | None, variation_name: str | None) -> str:
    """``Item (Variation)``, or just the item when the variation is the default "Regular"."""
    item = (item_name or "").strip()
    variation = (variation_name or "").strip()
    if not variation or variation in (DEFAULT_VARIATION_NAME, item):
        return item or variation
    if not item:
        return variation
    return f"{item} ({variation})"


def parse_quantity(value: object) -> Decimal:
    """Square sends quantities as decimal strings (``"3"``, ``"2.5"``, ``"-1"``)."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return Decimal(0)
    try:
        quantity = Decimal(value)
    except InvalidOperation:
        return Decimal(0)
    return quantity if quantity.is_finite() else Decimal(0)


def floor_quantity(value: Decimal) -> int:
    return math.floor(value)


def low_stock_threshold(variation_data: Mapping[str, Any]) -> int | None:
    """The alert threshold, per location where overrides exist, else the variation's own.

    Quantities are summed across locations, so per-location thresholds are summed too: one
    location with threshold 5 and another with 3 alert on a total at or below 8.
    """
    overrides = variation_data.get("location_overrides")
    total: int | None = None
    for override in overrides if isinstance(overrides, list) else []:
        threshold = _mapping(override).get("inventory_alert_threshold")
        if isinstance(threshold, int) and not isinstance(threshold, bool):
            total = (total or 0) + threshold
    if total is not None:
        return total
    threshold = variation_data.get("inventory_alert_threshold")
    if isinstance(threshold, int) and not isinstance(threshold, bool):
        return threshold
    return None


def map_variation(
    item: Mapping[str, Any], variation: Mapping[str, Any], quantity: Decimal
) -> ExternalInventoryItem | None:
    variation_id = _text(variation, "id")
    if variation_id is None:
        return None
    item_data = _mapping(item.get("item_data"))
    data = _mapping(variation.get("item_variation_data"))
    price = _mapping(data.get("price_money"))
    amount = price.get("amount")
    return ExternalInventoryItem(
        provider=Provider.SQUARE,
        external_id=variation_id,
        sku=_text(data, "sku") or "",
        name=display_name(_text(item_data, "name"), _text(data, "name")),
        quantity=floor_quantity(quantity),
        price_cents=amount if isinstance(amount, int) and not isinstance(amount, bool) else 0,
        currency=_text(price, "currency") or "USD",
        low_stock_threshold=low_stock_threshold(data),
    )
