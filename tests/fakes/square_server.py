"""A local fake of the Square APIs BrandVX reads, speaking Square's wire shapes over real HTTP.

It runs uvicorn in a background thread on 127.0.0.1 and a free port and serves:

* OAuth: ``GET /oauth2/authorize`` (redirects straight back with a code, as if the seller approved),
  ``POST /oauth2/token`` (authorization_code and refresh_token grants; client id and secret checked),
  ``POST /oauth2/revoke`` (``Authorization: Client <secret>``; revokes every token of the merchant);
* Bookings: ``GET /v2/bookings`` (``start_at_min``/``start_at_max`` at most 31 days apart, else 400
  like Square; ``limit``; opaque ``cursor``) and ``GET /v2/bookings/{id}``;
* Customers: ``POST /v2/customers/bulk-retrieve`` (1-100 ids, per-id NOT_FOUND errors);
* Catalog: ``GET /v2/catalog/list`` (``types``, cursor, ``catalog_page_size`` objects a page) and
  ``POST /v2/catalog/batch-retrieve`` (``include_related_objects``);
* Inventory: ``POST /v2/inventory/counts/batch-retrieve`` (1-1000 ids, ``states``, ``location_ids``,
  ``limit`` 1-1000, cursor).

Every data call needs ``Authorization: Bearer <token>`` for a live token with the right scope
(401 UNAUTHORIZED / ACCESS_TOKEN_EXPIRED / ACCESS_TOKEN_REVOKED, 403 INSUFFICIENT_SCOPES), and every
API call a ``Square-Version`` header: stricter than Square, which falls back to the app's version.
Errors are Square's ``{"errors": [{"category", "code", "detail"}]}``. Failures can be injected.

No pytest here: a benchmark can use it as well::

    with FakeSquare() as fake:
        fake.seed_bookings(10_000, datetime(2025, 1, 1, tzinfo=UTC), days=365)
        fake.fail_next(2, status=500)
        ...  # SquareClient(base_url=fake.base_url, client_id=fake.client_id, ...)
        fake.count("/v2/customers/bulk-retrieve")
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import json
import random
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.fakes.serving import ServedFake

__all__ = ["FakeSquare", "RecordedCall"]

ALL_SCOPES = (
    "APPOINTMENTS_READ",
    "APPOINTMENTS_ALL_READ",
    "CUSTOMERS_READ",
    "ITEMS_READ",
    "INVENTORY_READ",
    "MERCHANT_PROFILE_READ",
)
BOOKING_STATUSES = (
    "ACCEPTED",
    "PENDING",
    "CANCELLED_BY_CUSTOMER",
    "CANCELLED_BY_SELLER",
    "DECLINED",
    "NO_SHOW",
)
MAX_BOOKINGS_RANGE = timedelta(days=31)
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
_CATEGORIES = {
    400: ("INVALID_REQUEST_ERROR", "BAD_REQUEST"),
    401: ("AUTHENTICATION_ERROR", "UNAUTHORIZED"),
    403: ("AUTHENTICATION_ERROR", "INSUFFICIENT_SCOPES"),
    404: ("INVALID_REQUEST_ERROR", "NOT_FOUND"),
    429: ("RATE_LIMIT_ERROR", "RATE_LIMITED"),
    503: ("API_ERROR", "SERVICE_UNAVAILABLE"),
}
_FIRST_NAMES = ("Ava", "Maya", "Zoe", "Lena", "Iris", "Nora", "Jade", "Ruby", "Cleo", "Tess")
_LAST_NAMES = ("Hart", "Lopez", "Nguyen", "Okafor", "Silva", "Kim", "Moreau", "Rossi", "Patel", "Berg")
_SERVICES = ("Haircut", "Color", "Blowout", "Manicure", "Pedicure", "Brow shaping", "Facial", "Balayage")
_SIZES = ("Small", "Medium", "Large", "Travel", "Refill", "Salon size")


@dataclass(frozen=True)
class RecordedCall:
    method: str
    path: str
    params: dict[str, str]
    body: Any
    status: int
    authorization: str | None
    square_version: str | None
    at: float  # time.monotonic() when the call arrived


@dataclass(frozen=True)
class _Failure:
    status: int
    code: str
    retry_after: float | None
    path: str | None


@dataclass
class _Token:
    merchant_id: str
    scopes: frozenset[str]
    expires_at: datetime
    state: str = "live"  # live | expired | revoked


class _Reject(Exception):
    def __init__(
        self, status: int, code: str | None = None, detail: str = "", field: str | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.field = status, code, detail, field


def _error(status: int, code: str | None = None, detail: str = "", field: str | None = None) -> JSONResponse:
    category, default_code = _CATEGORIES.get(status, ("API_ERROR", "INTERNAL_SERVER_ERROR"))
    error: dict[str, str] = {"category": category, "code": code or default_code, "detail": detail or "Error."}
    if field:
        error["field"] = field
    return JSONResponse({"errors": [error]}, status_code=status)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Reject(400, "INVALID_TIME", f"Invalid RFC 3339 timestamp in `{name}`.", name) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _square_id(
    rng: random.Random, length: int = 24, alphabet: str = string.ascii_uppercase + string.digits
) -> str:
    return "".join(rng.choices(alphabet, k=length))


def _fingerprint(query: Any) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cursor(offset: int, query: Any) -> str:
    raw = json.dumps({"o": offset, "q": _fingerprint(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _offset(cursor: str | None, query: Any) -> int:
    """Square's cursors are opaque and only good for the query that produced them."""
    if not cursor:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset, fingerprint = int(decoded["o"]), decoded["q"]
    except (ValueError, KeyError, TypeError):
        raise _Reject(400, "INVALID_CURSOR", "The cursor is not valid.", "cursor") from None
    if fingerprint != _fingerprint(query) or offset < 0:
        raise _Reject(400, "INVALID_CURSOR", "The cursor does not belong to this query.", "cursor")
    return offset


def _limit(value: Any, *, default: int, maximum: int) -> int:
    if value is None:
        return default
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise _Reject(400, "INVALID_VALUE", "`limit` must be an integer.", "limit") from None
    if not 1 <= limit <= maximum:
        raise _Reject(400, "INVALID_VALUE", f"`limit` must be between 1 and {maximum}.", "limit")
    return limit


def _id_list(body: dict[str, Any], key: str, maximum: int, *, required: bool = True) -> list[str]:
    values = body.get(key)
    if values is None and not required:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _Reject(400, "EXPECTED_ARRAY", f"`{key}` must be an array of strings.", key)
    if (required and not values) or len(values) > maximum:
        raise _Reject(400, "INVALID_ARRAY_LENGTH", f"`{key}` must hold 1 to {maximum} ids.", key)
    return values


class FakeSquare(ServedFake):
    thread_name = "fake-square"

    def __init__(
        self,
        *,
        client_id: str = "sq0idp-fake-client",
        client_secret: str = "sq0csp-fake-secret",  # noqa: S107 - a fake's credential
        access_token: str = "EAAAfake-access-token",  # noqa: S107 - a fake's credential
        merchant_id: str = "MLFAKEMERCHANT",
        host: str = "127.0.0.1",
        catalog_page_size: int = 100,
        bookings_default_limit: int = 100,
        require_version: bool = True,
        latency: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_token = access_token
        self.merchant_id = merchant_id
        super().__init__(host=host)
        self.catalog_page_size = catalog_page_size
        self.bookings_default_limit = bookings_default_limit
        self.require_version = require_version
        self.latency = latency
        self._seed = seed
        self._lock = threading.RLock()
        self.reset()
        bearer = {
            "/v2/bookings": ("GET", self._list_bookings, "APPOINTMENTS_READ"),
            "/v2/bookings/{booking_id}": ("GET", self._retrieve_booking, "APPOINTMENTS_READ"),
            "/v2/customers/bulk-retrieve": ("POST", self._bulk_customers, "CUSTOMERS_READ"),
            "/v2/catalog/list": ("GET", self._list_catalog, "ITEMS_READ"),
            "/v2/catalog/batch-retrieve": ("POST", self._batch_catalog, "ITEMS_READ"),
            "/v2/inventory/counts/batch-retrieve": ("POST", self._batch_counts, "INVENTORY_READ"),
        }
        self.app = Starlette(
            routes=[
                Route("/oauth2/authorize", self._endpoint(self._authorize, auth="none"), methods=["GET"]),
                Route("/oauth2/token", self._endpoint(self._token, auth="none"), methods=["POST"]),
                Route("/oauth2/revoke", self._endpoint(self._revoke, auth="client"), methods=["POST"]),
                *(
                    Route(path, self._endpoint(handler, scope=scope), methods=[method])
                    for path, (method, handler, scope) in bearer.items()
                ),
            ]
        )

    # --- lifecycle ---

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeSquare is not started")
        return f"http://{self.host}:{self._port}"

    def reset(self) -> None:
        """Forget all data, tokens, codes, failures and recorded calls (the server keeps running)."""
        with self._lock:
            self._rng = random.Random(self._seed)
            self._tokens: dict[str, _Token] = {}
            self._refresh_tokens: dict[str, tuple[str, frozenset[str]]] = {}
            self._codes: dict[str, tuple[str | None, frozenset[str]]] = {}
            self._customers: dict[str, dict[str, Any]] = {}
            self._bookings: dict[str, dict[str, Any]] = {}
            self._booking_starts: list[datetime] = []
            self._booking_ids: list[str] = []
            self._bookings_sorted = True
            self._catalog: list[dict[str, Any]] = []
            self._catalog_by_id: dict[str, dict[str, Any]] = {}
            self._variation_item: dict[str, str] = {}
            self._counts: dict[str, list[dict[str, Any]]] = {}
            self._failures: deque[_Failure] = deque()
            self._calls: list[RecordedCall] = []
            self.authorized_scopes: list[tuple[str, ...]] = []
            self.add_token(self.access_token)

    # --- tokens and failures ---

    def add_token(
        self, token: str, *, scopes: Sequence[str] = ALL_SCOPES, expires_in: timedelta = timedelta(days=30)
    ) -> None:
        with self._lock:
            self._tokens[token] = _Token(self.merchant_id, frozenset(scopes), datetime.now(UTC) + expires_in)

    def expire_token(self, token: str) -> None:
        with self._lock:
            self._tokens[token].state = "expired"

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._tokens[token].state = "revoked"

    def token_state(self, token: str) -> str | None:
        with self._lock:
            found = self._tokens.get(token)
            return found.state if found else None

    def issue_code(self, *, redirect_uri: str | None = None, scopes: Sequence[str] = ALL_SCOPES) -> str:
        """An authorization code, as the seller's approval on the authorize page would produce."""
        code = "sq0cgp-" + secrets.token_urlsafe(16)
        with self._lock:
            self._codes[code] = (redirect_uri, frozenset(scopes))
        return code

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        code: str | None = None,
        retry_after: float | None = None,
        path: str | None = None,
    ) -> None:
        """The next ``n`` calls (to paths starting with ``path``, when given) fail with ``status``.

        401 defaults to ACCESS_TOKEN_EXPIRED; ``retry_after`` is sent as a Retry-After header.
        """
        default = (
            "ACCESS_TOKEN_EXPIRED"
            if status == 401
            else _CATEGORIES.get(status, ("", "INTERNAL_SERVER_ERROR"))[1]
        )
        with self._lock:
            for _ in range(n):
                self._failures.append(_Failure(status, code or default, retry_after, path))

    # --- observations ---

    @property
    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return list(self._calls)

    def count(self, path: str, *, method: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for call in self._calls
                if call.path == path and method in (None, call.method) and status in (None, call.status)
            )

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # --- data ---

    def add_customer(
        self,
        *,
        given_name: str | None = None,
        family_name: str | None = None,
        email_address: str | None = None,
        phone_number: str | None = None,
        customer_id: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            customer_id = customer_id or _square_id(self._rng, 26)
            now = _stamp(datetime.now(UTC))
            customer: dict[str, Any] = {"id": customer_id, "created_at": now, "updated_at": now}
            for key, value in (
                ("given_name", given_name),
                ("family_name", family_name),
                ("email_address", email_address),
                ("phone_number", phone_number),
            ):
                if value is not None:
                    customer[key] = value
            customer.update(
                {"preferences": {"email_unsubscribed": False}, "creation_source": "THIRD_PARTY", "version": 0}
            )
            self._customers[customer_id] = customer
            return customer

    def delete_customer(self, customer_id: str) -> None:
        with self._lock:
            self._customers.pop(customer_id, None)

    def seed_customers(self, n: int) -> list[dict[str, Any]]:
        created = []
        for index in range(n):
            given = _FIRST_NAMES[index % len(_FIRST_NAMES)]
            family = _LAST_NAMES[(index // len(_FIRST_NAMES)) % len(_LAST_NAMES)]
            created.append(
                self.add_customer(
                    given_name=given,
                    family_name=family,
                    email_address=f"{given.lower()}.{family.lower()}.{index}@example.com",
                    phone_number=f"+1415555{index % 10_000:04d}",
                )
            )
        return created

    def add_item(
        self,
        name: str,
        variations: Sequence[dict[str, Any]] = ({},),
        *,
        product_type: str = "REGULAR",
    ) -> dict[str, Any]:
        """A catalog ITEM; each variation dict may set ``name``, ``sku``, ``amount``, ``currency``,
        ``thresholds`` ({location: n}), ``counts`` ({location: "qty"}), ``other_counts`` ({state: "qty"})
        and ``duration_minutes`` (services)."""
        with self._lock:
            item_id = _square_id(self._rng)
            now = _stamp(datetime.now(UTC))
            built: list[dict[str, Any]] = []
            for ordinal, spec in enumerate(variations, start=1):
                variation_id = _square_id(self._rng)
                data: dict[str, Any] = {
                    "item_id": item_id,
                    "name": spec.get("name", "Regular"),
                    "ordinal": ordinal,
                    "pricing_type": "FIXED_PRICING",
                    "price_money": {
                        "amount": spec.get("amount", 1000),
                        "currency": spec.get("currency", "USD"),
                    },
                    "track_inventory": product_type != "APPOINTMENTS_SERVICE",
                    "sellable": True,
                    "stockable": True,
                }
                if spec.get("sku") is not None:
                    data["sku"] = spec["sku"]
                if spec.get("duration_minutes") is not None:
                    data["service_duration"] = spec["duration_minutes"] * 60_000
                    data["available_for_booking"] = True
                thresholds: dict[str, int] = spec.get("thresholds") or {}
                if thresholds:
                    data["location_overrides"] = [
                        {
                            "location_id": location,
                            "track_inventory": True,
                            "inventory_alert_type": "LOW_QUANTITY",
                            "inventory_alert_threshold": threshold,
                        }
                        for location, threshold in thresholds.items()
                    ]
                variation = {
                    "type": "ITEM_VARIATION",
                    "id": variation_id,
                    "updated_at": now,
                    "version": 1,
                    "is_deleted": False,
                    "present_at_all_locations": True,
                    "item_variation_data": data,
                }
                built.append(variation)
                self._catalog_by_id[variation_id] = variation
                self._variation_item[variation_id] = item_id
                counts = []
                for location, quantity in (spec.get("counts") or {}).items():
                    counts.append(self._count(variation_id, location, "IN_STOCK", str(quantity), now))
                for state, quantity in (spec.get("other_counts") or {}).items():
                    counts.append(self._count(variation_id, "L1", state, str(quantity), now))
                if counts:
                    self._counts[variation_id] = counts
            item = {
                "type": "ITEM",
                "id": item_id,
                "updated_at": now,
                "version": 1,
                "is_deleted": False,
                "present_at_all_locations": True,
                "item_data": {"name": name, "product_type": product_type, "variations": built},
            }
            self._catalog.append(item)
            self._catalog_by_id[item_id] = item
            return item

    @staticmethod
    def _count(variation_id: str, location: str, state: str, quantity: str, at: str) -> dict[str, Any]:
        return {
            "catalog_object_id": variation_id,
            "catalog_object_type": "ITEM_VARIATION",
            "state": state,
            "location_id": location,
            "quantity": quantity,
            "calculated_at": at,
        }

    def seed_services(self, n: int = 3) -> list[str]:
        """Bookable services (APPOINTMENTS_SERVICE items); returns their variation ids."""
        ids = []
        for index in range(n):
            item = self.add_item(
                _SERVICES[index % len(_SERVICES)] + ("" if index < len(_SERVICES) else f" {index}"),
                [{"name": "Regular", "amount": 4500 + 500 * index, "duration_minutes": 60}],
                product_type="APPOINTMENTS_SERVICE",
            )
            ids.append(item["item_data"]["variations"][0]["id"])
        return ids

    def seed_catalog(
        self, n_items: int, *, variations_per_item: int = 1, locations: Sequence[str] = ("L1", "L2")
    ) -> list[dict[str, Any]]:
        """Retail items with stock. Every 3rd variation has alert thresholds, every 7th a fractional
        quantity, every 11th no counts at all, every 5th SOLD/WASTE counts that are not stock."""
        rng = random.Random(self._seed + n_items)
        items = []
        serial = 0
        for index in range(n_items):
            specs = []
            for number in range(variations_per_item):
                serial += 1
                spec: dict[str, Any] = {
                    "name": "Regular" if variations_per_item == 1 else _SIZES[number % len(_SIZES)],
                    "sku": f"SKU-{index:05d}-{number}",
                    "amount": rng.randrange(500, 9000),
                }
                if serial % 11:
                    spec["counts"] = {
                        location: (
                            f"{rng.randrange(0, 40)}.25" if serial % 7 == 0 else str(rng.randrange(0, 60))
                        )
                        for location in locations
                    }
                if serial % 3 == 0:
                    spec["thresholds"] = {location: 2 + serial % 4 for location in locations}
                if serial % 5 == 0:
                    spec["other_counts"] = {"SOLD": "7", "WASTE": "1"}
                specs.append(spec)
            items.append(self.add_item(f"Product {index:05d}", specs))
        return items

    def inventory_counts(self, variation_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(count) for count in self._counts.get(variation_id, [])]

    def add_booking(
        self,
        *,
        start_at: datetime,
        duration_minutes: int | Sequence[int] = 60,
        status: str = "ACCEPTED",
        customer_id: str | None = None,
        service_variation_id: str | None = None,
        location_id: str = "L1",
        booking_id: str | None = None,
    ) -> dict[str, Any]:
        durations = [duration_minutes] if isinstance(duration_minutes, int) else list(duration_minutes)
        with self._lock:
            booking_id = booking_id or _square_id(self._rng, 14, string.ascii_lowercase + string.digits)
            now = _stamp(datetime.now(UTC))
            team_member = "TM" + _square_id(self._rng, 12)
            booking: dict[str, Any] = {
                "id": booking_id,
                "version": 0,
                "status": status,
                "created_at": now,
                "updated_at": now,
                "start_at": _stamp(start_at),
                "location_id": location_id,
                "customer_note": "",
                "seller_note": "",
                "appointment_segments": [
                    {
                        "duration_minutes": minutes,
                        "team_member_id": team_member,
                        "intermission_minutes": 0,
                        "any_team_member": False,
                        **(
                            {"service_variation_id": service_variation_id, "service_variation_version": 1}
                            if service_variation_id
                            else {}
                        ),
                    }
                    for minutes in durations
                ],
                "transition_time_minutes": 0,
                "all_day": False,
                "location_type": "BUSINESS_LOCATION",
                "creator_details": {"creator_type": "TEAM_MEMBER", "team_member_id": team_member},
                "source": "FIRST_PARTY_MERCHANT",
            }
            if customer_id is not None:
                booking["customer_id"] = customer_id
            if booking_id in self._bookings:
                raise ValueError(f"booking {booking_id} exists")
            self._bookings[booking_id] = booking
            self._booking_starts.append(start_at.astimezone(UTC).replace(microsecond=0))
            self._booking_ids.append(booking_id)
            self._bookings_sorted = False
            return booking

    def remove_booking(self, booking_id: str) -> None:
        """The booking is gone from Square's lists (deleted, or moved to a location we cannot see)."""
        with self._lock:
            del self._bookings[booking_id]
            index = self._booking_ids.index(booking_id)
            del self._booking_ids[index]
            del self._booking_starts[index]

    def seed_bookings(
        self,
        n: int,
        start: datetime,
        *,
        days: int = 90,
        customers: int | Sequence[str] = 50,
        services: int | Sequence[str] = 3,
        seed: int | None = None,
    ) -> list[dict[str, Any]]:
        """``n`` bookings starting on 15-minute marks in [start, start + days), all statuses, one or two
        segments, customers and services created when given as counts."""
        rng = random.Random(self._seed if seed is None else seed)
        customer_ids = (
            [c["id"] for c in self.seed_customers(customers)]
            if isinstance(customers, int)
            else list(customers)
        )
        service_ids = self.seed_services(services) if isinstance(services, int) else list(services)
        slots = days * 24 * 4
        weights = (60, 10, 10, 8, 6, 6)
        created = []
        for _ in range(n):
            segments = rng.choice((30, 45, 60, 90)) if rng.random() < 0.8 else [60, rng.choice((15, 30))]
            created.append(
                self.add_booking(
                    start_at=start + timedelta(minutes=15 * rng.randrange(slots)),
                    duration_minutes=segments,
                    status=rng.choices(BOOKING_STATUSES, weights)[0],
                    customer_id=rng.choice(customer_ids) if customer_ids else None,
                    service_variation_id=rng.choice(service_ids) if service_ids else None,
                )
            )
        return created

    # --- plumbing ---

    def _endpoint(
        self,
        handler: Callable[[Request, dict[str, Any]], Awaitable[Response]],
        *,
        auth: str = "bearer",
        scope: str | None = None,
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
            if self.latency:
                await asyncio.sleep(self.latency)
            try:
                response = self._check(request, body, auth=auth, scope=scope)
                if response is None:
                    response = await handler(request, body if isinstance(body, dict) else {})
            except _Reject as reject:
                response = _error(reject.status, reject.code, reject.detail, reject.field)
            with self._lock:
                self._calls.append(
                    RecordedCall(
                        method=request.method,
                        path=request.url.path,
                        params=dict(request.query_params),
                        body=body,
                        status=response.status_code,
                        authorization=request.headers.get("authorization"),
                        square_version=request.headers.get("square-version"),
                        at=time.monotonic(),
                    )
                )
            return response

        return endpoint

    def _check(self, request: Request, body: Any, *, auth: str, scope: str | None) -> Response | None:
        with self._lock:
            for failure in self._failures:
                if failure.path is None or request.url.path.startswith(failure.path):
                    self._failures.remove(failure)
                    response = _error(failure.status, failure.code, "Injected failure.")
                    if failure.retry_after is not None:
                        response.headers["Retry-After"] = f"{failure.retry_after:g}"
                    return response
        version = request.headers.get("square-version")
        if version is None and self.require_version and request.url.path != "/oauth2/authorize":
            raise _Reject(400, "INVALID_SQUARE_VERSION_FORMAT", "This fake requires a Square-Version header.")
        if version is not None and not _VERSION.fullmatch(version):
            raise _Reject(400, "INVALID_SQUARE_VERSION_FORMAT", "Square-Version must look like YYYY-MM-DD.")
        if request.method == "POST" and not isinstance(body, dict):
            raise _Reject(400, "INVALID_CONTENT_TYPE", "The body must be a JSON object.")
        header = request.headers.get("authorization", "")
        if auth == "client":
            if header != f"Client {self.client_secret}":
                raise _Reject(401, "UNAUTHORIZED", "This request could not be authorized.")
        elif auth == "bearer":
            if not header.startswith("Bearer "):
                raise _Reject(401, "UNAUTHORIZED", "This request could not be authorized.")
            with self._lock:
                token = self._tokens.get(header.removeprefix("Bearer "))
                if token is None:
                    raise _Reject(401, "UNAUTHORIZED", "This request could not be authorized.")
                if token.state == "live" and token.expires_at <= datetime.now(UTC):
                    token.state = "expired"
                if token.state == "expired":
                    raise _Reject(401, "ACCESS_TOKEN_EXPIRED", "The access token has expired.")
                if token.state == "revoked":
                    raise _Reject(401, "ACCESS_TOKEN_REVOKED", "The access token has been revoked.")
                if scope is not None and scope not in token.scopes:
                    raise _Reject(
                        403, "INSUFFICIENT_SCOPES", f"The merchant has not given you {scope} permission."
                    )
        return None

    def _sorted_bookings(self) -> tuple[list[datetime], list[str]]:
        if not self._bookings_sorted:
            order = sorted(
                range(len(self._booking_ids)), key=lambda i: (self._booking_starts[i], self._booking_ids[i])
            )
            self._booking_starts = [self._booking_starts[i] for i in order]
            self._booking_ids = [self._booking_ids[i] for i in order]
            self._bookings_sorted = True
        return self._booking_starts, self._booking_ids

    # --- OAuth ---

    async def _authorize(self, request: Request, body: dict[str, Any]) -> Response:
        params = request.query_params
        if params.get("client_id") != self.client_id:
            raise _Reject(400, "NOT_FOUND", "Unknown client_id.", "client_id")
        redirect_uri = params.get("redirect_uri")
        if not redirect_uri:
            raise _Reject(400, "MISSING_REQUIRED_PARAMETER", "No redirect_uri.", "redirect_uri")
        scopes = tuple(params.get("scope", "").replace("+", " ").split())
        unknown = set(scopes) - set(ALL_SCOPES)
        if not scopes or unknown:
            raise _Reject(400, "INVALID_SCOPE", "Unknown or missing scope.", "scope")
        self.authorized_scopes.append(scopes)
        code = self.issue_code(redirect_uri=redirect_uri, scopes=scopes)
        query = {"code": code, "response_type": "code"}
        if params.get("state") is not None:
            query["state"] = params["state"]
        return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", status_code=302)

    def _mint(self, scopes: frozenset[str], refresh_token: str | None = None) -> dict[str, Any]:
        access = "EAAA" + secrets.token_urlsafe(48)
        refresh = refresh_token or "EQAA" + secrets.token_urlsafe(48)
        expires_at = datetime.now(UTC) + timedelta(days=30)
        self._tokens[access] = _Token(self.merchant_id, scopes, expires_at)
        self._refresh_tokens[refresh] = (self.merchant_id, scopes)
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_at": _stamp(expires_at),
            "merchant_id": self.merchant_id,
            "refresh_token": refresh,
            "short_lived": False,
        }

    async def _token(self, request: Request, body: dict[str, Any]) -> Response:
        if body.get("client_id") != self.client_id or body.get("client_secret") != self.client_secret:
            raise _Reject(401, "UNAUTHORIZED", "Not Authorized.")
        grant = body.get("grant_type")
        with self._lock:
            if grant == "authorization_code":
                code = body.get("code")
                issued = self._codes.pop(code, None) if isinstance(code, str) else None
                if issued is None:
                    raise _Reject(400, "NOT_FOUND", "Authorization code not found.", "code")
                redirect_uri, scopes = issued
                if redirect_uri is not None and body.get("redirect_uri") != redirect_uri:
                    raise _Reject(400, "INVALID_VALUE", "redirect_uri does not match.", "redirect_uri")
                return JSONResponse(self._mint(scopes))
            if grant == "refresh_token":
                refresh = body.get("refresh_token")
                known = self._refresh_tokens.get(refresh) if isinstance(refresh, str) else None
                if known is None or not isinstance(refresh, str):
                    raise _Reject(401, "UNAUTHORIZED", "Invalid refresh token.", "refresh_token")
                # Code-flow refresh tokens do not rotate: the same one comes back.
                return JSONResponse(self._mint(known[1], refresh_token=refresh))
        raise _Reject(400, "INVALID_VALUE", "Unsupported grant_type.", "grant_type")

    async def _revoke(self, request: Request, body: dict[str, Any]) -> Response:
        if body.get("client_id") != self.client_id:
            raise _Reject(401, "UNAUTHORIZED", "Not Authorized.")
        access_token, merchant_id = body.get("access_token"), body.get("merchant_id")
        with self._lock:
            if isinstance(access_token, str):
                token = self._tokens.get(access_token)
                if token is None:
                    raise _Reject(404, "NOT_FOUND", "Access token not found.", "access_token")
                merchant_id = token.merchant_id
            elif not isinstance(merchant_id, str):
                raise _Reject(400, "MISSING_REQUIRED_PARAMETER", "access_token or merchant_id is required.")
            # Square revokes every token the merchant gave this app.
            for token in self._tokens.values():
                if token.merchant_id == merchant_id:
                    token.state = "revoked"
            for refresh in [r for r, (m, _) in self._refresh_tokens.items() if m == merchant_id]:
                del self._refresh_tokens[refresh]
        return JSONResponse({"success": True})

    # --- data endpoints ---

    async def _list_bookings(self, request: Request, body: dict[str, Any]) -> Response:
        params = request.query_params
        low = (
            _parse_stamp(params["start_at_min"], "start_at_min")
            if "start_at_min" in params
            else datetime.now(UTC)
        )
        high = (
            _parse_stamp(params["start_at_max"], "start_at_max")
            if "start_at_max" in params
            else low + MAX_BOOKINGS_RANGE
        )
        if high < low:
            raise _Reject(400, "BAD_REQUEST", "`start_at_max` must be after `start_at_min`.", "start_at_max")
        if high - low > MAX_BOOKINGS_RANGE:
            raise _Reject(400, "BAD_REQUEST", "The time range cannot exceed 31 days.", "start_at_max")
        limit = _limit(params.get("limit"), default=self.bookings_default_limit, maximum=10_000)
        filters = {
            key: params[key] for key in ("location_id", "customer_id", "team_member_id") if key in params
        }
        query = {"min": low.isoformat(), "max": high.isoformat(), **filters}
        offset = _offset(params.get("cursor"), query)
        with self._lock:
            starts, ids = self._sorted_bookings()
            matched = [
                self._bookings[i]
                for i in ids[bisect.bisect_left(starts, low) : bisect.bisect_right(starts, high)]
            ]
        if filters:
            matched = [
                b
                for b in matched
                if all(
                    (
                        b["appointment_segments"][0].get("team_member_id")
                        if key == "team_member_id"
                        else b.get(key)
                    )
                    == value
                    for key, value in filters.items()
                )
            ]
        page = matched[offset : offset + limit]
        answer: dict[str, Any] = {"bookings": page} if page else {}
        if offset + limit < len(matched):
            answer["cursor"] = _cursor(offset + limit, query)
        return JSONResponse(answer)

    async def _retrieve_booking(self, request: Request, body: dict[str, Any]) -> Response:
        booking_id = request.path_params["booking_id"]
        with self._lock:
            booking = self._bookings.get(booking_id)
        if booking is None:
            raise _Reject(404, "NOT_FOUND", f"Booking `{booking_id}` not found.")
        return JSONResponse({"booking": booking})

    async def _bulk_customers(self, request: Request, body: dict[str, Any]) -> Response:
        ids = _id_list(body, "customer_ids", 100)
        responses: dict[str, Any] = {}
        with self._lock:
            for customer_id in ids:
                customer = self._customers.get(customer_id)
                responses[customer_id] = (
                    {"customer": customer}
                    if customer is not None
                    else {
                        "errors": [
                            {
                                "category": "INVALID_REQUEST_ERROR",
                                "code": "NOT_FOUND",
                                "detail": f"Customer with ID `{customer_id}` not found.",
                            }
                        ]
                    }
                )
        return JSONResponse({"responses": responses})

    async def _list_catalog(self, request: Request, body: dict[str, Any]) -> Response:
        types = sorted(
            {t.strip().upper() for t in request.query_params.get("types", "").split(",") if t.strip()}
        )
        query = {"types": types}
        offset = _offset(request.query_params.get("cursor"), query)
        with self._lock:
            matched = [obj for obj in self._catalog if not types or obj["type"] in types]
        page = matched[offset : offset + self.catalog_page_size]
        answer: dict[str, Any] = {"objects": page} if page else {}
        if offset + self.catalog_page_size < len(matched):
            answer["cursor"] = _cursor(offset + self.catalog_page_size, query)
        return JSONResponse(answer)

    async def _batch_catalog(self, request: Request, body: dict[str, Any]) -> Response:
        ids = _id_list(body, "object_ids", 1000)
        with self._lock:
            objects = [self._catalog_by_id[i] for i in dict.fromkeys(ids) if i in self._catalog_by_id]
            related: dict[str, dict[str, Any]] = {}
            if body.get("include_related_objects"):
                for obj in objects:
                    item_id = self._variation_item.get(obj["id"])
                    if item_id is not None and item_id not in ids:
                        related[item_id] = self._catalog_by_id[item_id]
        answer: dict[str, Any] = {"objects": objects} if objects else {}
        if related:
            answer["related_objects"] = list(related.values())
        return JSONResponse(answer)

    async def _batch_counts(self, request: Request, body: dict[str, Any]) -> Response:
        ids = _id_list(body, "catalog_object_ids", 1000, required=False)
        locations = _id_list(body, "location_ids", 1000, required=False)
        states = _id_list(body, "states", 20, required=False)
        limit = _limit(body.get("limit"), default=100, maximum=1000)
        query = {"ids": ids, "locations": locations, "states": states}
        offset = _offset(body.get("cursor"), query)
        with self._lock:
            source = [self._counts.get(i, []) for i in ids] if ids else list(self._counts.values())
            matched = [
                count
                for counts in source
                for count in counts
                if (not locations or count["location_id"] in locations)
                and (not states or count["state"] in states)
            ]
        page = matched[offset : offset + limit]
        answer: dict[str, Any] = {"counts": page} if page else {}
        if offset + limit < len(matched):
            answer["cursor"] = _cursor(offset + limit, query)
        return JSONResponse(answer)
