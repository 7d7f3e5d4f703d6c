"""Square as a ``CalendarSource`` (Bookings API) and an ``InventorySource`` (Catalog + Inventory APIs).

Bookings: ``GET /v2/bookings`` filters on ``start_at`` and refuses ranges over 31 days, so the asked
range is walked in windows of at most 31 days, each followed through its cursors to the end. A
booking that starts a little before the range can still overlap it: the walk starts ``lookback``
earlier and keeps only bookings that overlap the asked range. Each booking id is yielded once, also
when a booking sits on the edge of two windows. The customers of a page are fetched together
(``POST /v2/customers/bulk-retrieve``, one call per page at most, each customer once per source), and
the names of the booked services together (``POST /v2/catalog/batch-retrieve``).

Inventory: ``GET /v2/catalog/list?types=ITEM`` page by page; for each page the IN_STOCK counts of its
variations (``POST /v2/inventory/counts/batch-retrieve``, 1,000 ids per call, cursors followed),
summed across locations. Appointment services (``product_type`` APPOINTMENTS_SERVICE) are not stock.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final, TypeVar

from domain.sync import (
    ExternalAppointment,
    ExternalCustomer,
    ExternalInventoryItem,
    FetchedPage,
    IncompleteSync,
    ProviderError,
)
from integrations.square.api import SquareApi
from integrations.square.mapping import (
    booking_span,
    display_name,
    map_booking,
    map_customer,
    map_variation,
    parse_quantity,
    rfc3339,
    service_variation_ids,
)

__all__ = [
    "BOOKINGS_WINDOW",
    "DEFAULT_LOOKBACK",
    "MAX_BOOKINGS_PAGE",
    "SquareCalendar",
    "SquareInventory",
    "windows",
]

log = logging.getLogger("brandvx.integrations.square")

# Square's own default for a missing start_at_max is start_at_min + 31 days: the widest range it takes.
BOOKINGS_WINDOW: Final = timedelta(days=31)
MAX_BOOKINGS_PAGE: Final = 100
MAX_CUSTOMER_IDS: Final = 100
MAX_CATALOG_IDS: Final = 1000
MAX_INVENTORY_IDS: Final = 1000
INVENTORY_PAGE: Final = 1000
# Longer than any salon appointment: a booking that started this long before the range has ended.
DEFAULT_LOOKBACK: Final = timedelta(hours=24)
T = TypeVar("T")


def windows(
    start: datetime, end: datetime, size: timedelta = BOOKINGS_WINDOW
) -> Iterator[tuple[datetime, datetime]]:
    if size <= timedelta(0):
        raise ValueError("window size must be positive")
    cursor = start
    while cursor < end:
        stop = min(cursor + size, end)
        yield cursor, stop
        cursor = stop


def _chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for index in range(0, len(values), size):
        yield values[index : index + size]


def _objects(body: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    values = body.get(key)
    return [value for value in values if isinstance(value, dict)] if isinstance(values, list) else []


def _next_cursor(body: Mapping[str, Any], seen: set[str], what: str) -> str | None:
    cursor = body.get("cursor")
    if not isinstance(cursor, str) or not cursor:
        return None
    if cursor in seen:
        # Following it again would loop forever; stopping here would return less than Square has.
        raise IncompleteSync(f"Square repeated a page cursor while {what}")
    seen.add(cursor)
    return cursor


class SquareCalendar:
    def __init__(
        self,
        api: SquareApi,
        access_token: str,
        *,
        page_size: int = MAX_BOOKINGS_PAGE,
        lookback: timedelta = DEFAULT_LOOKBACK,
        location_id: str | None = None,
    ) -> None:
        if not 1 <= page_size <= MAX_BOOKINGS_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_BOOKINGS_PAGE}")
        if lookback < timedelta(0):
            raise ValueError("lookback must not be negative")
        self._api = api
        self._authorization = f"Bearer {access_token}"
        self._page_size = page_size
        self._lookback = lookback
        self._location_id = location_id
        self._customers: dict[str, ExternalCustomer] = {}
        self._service_names: dict[str, str | None] = {}
        self._catalog_refused = False

    @property
    def next_sync_token(self) -> str | None:
        return None  # Square's Bookings API has no incremental sync token.

    async def appointments(
        self, start: datetime, end: datetime, *, sync_token: str | None = None
    ) -> AsyncIterator[FetchedPage[ExternalAppointment]]:
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        # Windows split by start time, so a booking can only come twice when it starts exactly on a
        # shared bound: remembering those (not every id) keeps memory flat in the number of bookings.
        edge: set[str] = set()
        for window_start, window_end in windows(start - self._lookback, end):
            shown = (max(window_start, start), window_end)
            yielded, edge = edge, set()
            cursor: str | None = None
            cursors: set[str] = set()
            while True:
                params = {
                    "start_at_min": rfc3339(window_start),
                    "start_at_max": rfc3339(window_end),
                    "limit": str(self._page_size),
                }
                if self._location_id is not None:
                    params["location_id"] = self._location_id
                if cursor is not None:
                    params["cursor"] = cursor
                body = await self._api.call(
                    "GET",
                    "/v2/bookings",
                    what="listing bookings",
                    authorization=self._authorization,
                    params=params,
                )
                fresh: list[dict[str, Any]] = []
                for booking in _objects(body, "bookings"):
                    booking_id = booking.get("id")
                    span = booking_span(booking)
                    if not isinstance(booking_id, str) or span is None or booking_id in yielded:
                        continue
                    starts_at, ends_at = span
                    # Square filters on start by whole windows; keep what overlaps [start, end).
                    if starts_at < end and (ends_at > start or starts_at >= start):
                        fresh.append(booking)
                        yielded.add(booking_id)
                        if starts_at >= window_end:
                            edge.add(booking_id)
                await self._resolve(fresh)
                items: list[ExternalAppointment] = []
                for booking in fresh:
                    customer_id = booking.get("customer_id")
                    customer = self._customers.get(customer_id) if isinstance(customer_id, str) else None
                    appointment = map_booking(booking, customer=customer, service_names=self._service_names)
                    if appointment is not None:
                        items.append(appointment)
                yield FetchedPage(items=items, window=shown)
                cursor = _next_cursor(body, cursors, "listing bookings")
                if cursor is None:
                    break

    async def _resolve(self, bookings: Sequence[Mapping[str, Any]]) -> None:
        customer_ids: list[str] = []
        variation_ids: list[str] = []
        for booking in bookings:
            customer_id = booking.get("customer_id")
            if isinstance(customer_id, str) and customer_id and customer_id not in self._customers:
                customer_ids.append(customer_id)
            for variation_id in service_variation_ids(booking):
                if variation_id not in self._service_names and variation_id not in variation_ids:
                    variation_ids.append(variation_id)
        await self._fetch_customers(list(dict.fromkeys(customer_ids)))
        await self._fetch_service_names(variation_ids)

    async def _fetch_customers(self, customer_ids: Sequence[str]) -> None:
        for chunk in _chunks(customer_ids, MAX_CUSTOMER_IDS):
            body = await self._api.call(
                "POST",
                "/v2/customers/bulk-retrieve",
                what="retrieving customers",
                authorization=self._authorization,
                json={"customer_ids": list(chunk)},
            )
            responses = body.get("responses")
            found: Mapping[str, Any] = responses if isinstance(responses, dict) else {}
            for customer_id in chunk:
                entry = found.get(customer_id)
                customer = entry.get("customer") if isinstance(entry, dict) else None
                self._customers[customer_id] = map_customer(
                    customer_id, customer if isinstance(customer, dict) else None
                )

    async def _fetch_service_names(self, variation_ids: Sequence[str]) -> None:
        if self._catalog_refused:
            return
        for chunk in _chunks(variation_ids, MAX_CATALOG_IDS):
            try:
                body = await self._api.call(
                    "POST",
                    "/v2/catalog/batch-retrieve",
                    what="retrieving booked services",
                    authorization=self._authorization,
                    json={"object_ids": list(chunk), "include_related_objects": True},
                )
            except ProviderError as error:
                if error.kind != "permanent":
                    raise
                # Titles are a nicety: a connection without ITEMS_READ still syncs its bookings.
                log.warning("Square service names unavailable, using default titles: %s", error.message)
                self._catalog_refused = True
                return
            items = {
                obj["id"]: obj
                for obj in _objects(body, "related_objects") + _objects(body, "objects")
                if obj.get("type") == "ITEM" and isinstance(obj.get("id"), str)
            }
            for obj in _objects(body, "objects"):
                data = obj.get("item_variation_data")
                if obj.get("type") != "ITEM_VARIATION" or not isinstance(data, dict):
                    continue
                item = items.get(data.get("item_id"), {})
                item_data = item.get("item_data")
                item_name = item_data.get("name") if isinstance(item_data, dict) else None
                name = display_name(
                    item_name if isinstance(item_name, str) else None,
                    data.get("name") if isinstance(data.get("name"), str) else None,
                )
                self._service_names[str(obj.get("id"))] = name or None
            for variation_id in chunk:
                self._service_names.setdefault(variation_id, None)


class SquareInventory:
    def __init__(
        self, api: SquareApi, access_token: str, *, location_ids: Sequence[str] | None = None
    ) -> None:
        self._api = api
        self._authorization = f"Bearer {access_token}"
        self._location_ids = list(location_ids) if location_ids else None

    async def items(self) -> AsyncIterator[FetchedPage[ExternalInventoryItem]]:
        cursor: str | None = None
        cursors: set[str] = set()
        while True:
            params = {"types": "ITEM"}
            if cursor is not None:
                params["cursor"] = cursor
            body = await self._api.call(
                "GET",
                "/v2/catalog/list",
                what="listing catalog items",
                authorization=self._authorization,
                params=params,
            )
            variations = list(_stocked_variations(_objects(body, "objects")))
            quantities = await self._quantities([str(variation["id"]) for _, variation in variations])
            items: list[ExternalInventoryItem] = []
            for item, variation in variations:
                mapped = map_variation(item, variation, quantities.get(str(variation["id"]), Decimal(0)))
                if mapped is not None:
                    items.append(mapped)
            yield FetchedPage(items=items)
            cursor = _next_cursor(body, cursors, "listing catalog items")
            if cursor is None:
                return

    async def _quantities(self, variation_ids: Sequence[str]) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = {}
        for chunk in _chunks(variation_ids, MAX_INVENTORY_IDS):
            cursor: str | None = None
            cursors: set[str] = set()
            while True:
                payload: dict[str, Any] = {
                    "catalog_object_ids": list(chunk),
                    "states": ["IN_STOCK"],
                    "limit": INVENTORY_PAGE,
                }
                if self._location_ids is not None:
                    payload["location_ids"] = self._location_ids
                if cursor is not None:
                    payload["cursor"] = cursor
                body = await self._api.call(
                    "POST",
                    "/v2/inventory/counts/batch-retrieve",
                    what="reading inventory counts",
                    authorization=self._authorization,
                    json=payload,
                )
                for count in _objects(body, "counts"):
                    object_id = count.get("catalog_object_id")
                    if count.get("state") == "IN_STOCK" and isinstance(object_id, str):
                        totals[object_id] = totals.get(object_id, Decimal(0)) + parse_quantity(
                            count.get("quantity")
                        )
                cursor = _next_cursor(body, cursors, "reading inventory counts")
                if cursor is None:
                    break
        return totals


def _stocked_variations(objects: Sequence[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for item in objects:
        data = item.get("item_data")
        if item.get("type") != "ITEM" or item.get("is_deleted") or not isinstance(data, dict):
            continue
        if data.get("product_type") == "APPOINTMENTS_SERVICE":
            continue
        variations = data.get("variations")
        for variation in variations if isinstance(variations, list) else []:
            if (
                isinstance(variation, dict)
                and variation.get("type") == "ITEM_VARIATION"
                and isinstance(variation.get("id"), str)
                and not variation.get("is_deleted")
            ):
                yield item, variation
