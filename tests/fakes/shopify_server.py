"""A local fake of Shopify's Admin REST API and OAuth endpoints, for one or more shops.

uvicorn serves it from a background thread on 127.0.0.1 and a free port. Every shop lives under
``/shops/{shop}``, so ``base_url_for(shop)`` is ``http://127.0.0.1:<port>/shops/<shop>`` and real
Shopify paths follow it:

* ``GET  /admin/oauth/authorize`` redirects to ``redirect_uri`` with ``code``, ``hmac``, ``host``,
  ``shop``, ``state``, ``timestamp``, signed as Shopify signs them (the consent screen, accepted);
* ``POST /admin/oauth/access_token`` with JSON ``client_id``, ``client_secret``, ``code`` (one use);
* ``GET  /admin/api/{version}/shop.json``, ``products.json``, ``inventory_levels.json``;
* ``POST   /admin/api/{version}/webhooks.json`` (a subscription; 422 when topic and address exist);
* ``DELETE /admin/api_permissions/current.json`` (uninstall: the token stops working).

Paging is Shopify's cursor paging: ``Link: <...?limit=250&page_info=...>; rel="previous",
<...?limit=250&page_info=...>; rel="next"``, and a request with ``page_info`` may carry ``limit``
and nothing else (400 otherwise). ``X-Shopify-Access-Token`` is checked on every API call (401).
Failures are injected with ``fail(status, ...)``: 429 comes with ``Retry-After``.

No pytest here::

    with FakeShopify(client_id="id", client_secret="secret") as fake:
        shop = fake.add_shop(generate_shop("a.myshopify.com", variants=5_000, locations=2))
        fake.base_url_for("a.myshopify.com")
        fake.requests  # every call, in order
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.fakes.serving import ServedFake

__all__ = [
    "Failure",
    "FakeProduct",
    "FakeShop",
    "FakeShopify",
    "FakeVariant",
    "RecordedRequest",
    "generate_shop",
]

MAX_LIMIT = 250
MAX_INVENTORY_ITEM_IDS = 50
_VERSION = re.compile(r"\d{4}-\d{2}|unstable")


@dataclass
class FakeVariant:
    id: int
    product_id: int
    title: str
    sku: str
    price_cents: int
    inventory_item_id: int
    tracked: bool = True  # False: Shopify does not track its stock (available: null everywhere)

    @property
    def price(self) -> str:
        return f"{self.price_cents // 100}.{self.price_cents % 100:02d}"

    def wire(self, position: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "product_id": self.product_id,
            "title": self.title,
            "price": self.price,
            "position": position,
            "compare_at_price": None,
            "option1": self.title,
            "sku": self.sku,
            "inventory_item_id": self.inventory_item_id,
            "inventory_management": "shopify" if self.tracked else None,
            "inventory_policy": "deny",
            "requires_shipping": True,
            "taxable": True,
        }


@dataclass
class FakeProduct:
    id: int
    title: str
    variants: list[FakeVariant]

    def wire(self, fields: Sequence[str] | None) -> dict[str, Any]:
        full: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "vendor": "Fake Vendor",
            "product_type": "Hair care",
            "status": "active",
            "handle": f"product-{self.id}",
            "variants": [v.wire(i) for i, v in enumerate(self.variants, start=1)],
        }
        return {k: full[k] for k in fields if k in full} if fields else full


@dataclass
class FakeShop:
    domain: str
    access_token: str
    products: list[FakeProduct]
    location_ids: list[int]
    # inventory_item_id -> location_id -> available (None: not tracked at that location)
    levels: dict[int, dict[int, int | None]]
    currency: str = "USD"
    shop_id: int = 1
    revoked_tokens: set[str] = field(default_factory=set)  # uninstalled: refused with 401
    webhooks: list[dict[str, Any]] = field(default_factory=list)  # subscriptions, as the API lists them

    def variants(self) -> list[FakeVariant]:
        return [v for p in self.products for v in p.variants]

    def available(self, inventory_item_id: int) -> int | None:
        """Stock summed over locations; None when the item is not tracked (every level null)."""
        levels = self.levels.get(inventory_item_id, {})
        if levels and all(a is None for a in levels.values()):
            return None
        return sum(a for a in levels.values() if a is not None)

    def untrack(self, variant: FakeVariant) -> None:
        """Turn stock tracking off, as the Shopify admin does: every level's available becomes null."""
        variant.tracked = False
        self.levels[variant.inventory_item_id] = dict.fromkeys(self.location_ids)


@dataclass(frozen=True)
class RecordedRequest:
    shop: str
    method: str
    path: str  # the Shopify path, without the /shops/{shop} prefix
    params: dict[str, list[str]]
    token: str | None
    status: int


@dataclass
class Failure:
    status: int
    times: int = 1
    path: str | None = None  # a substring of the Shopify path; None: any call
    retry_after: str | None = "1"


def generate_shop(
    domain: str,
    *,
    variants: int,
    locations: int = 2,
    seed: int = 0,
    max_variants_per_product: int = 9,
    access_token: str | None = None,
    currency: str = "USD",
    untracked_every: int = 0,
) -> FakeShop:
    """A seeded catalogue of exactly ``variants`` variants over products of 1..max variants each.

    ``untracked_every``: every n-th variant has no stock tracking (0: all are tracked).
    """
    rng = random.Random(seed)
    products: list[FakeProduct] = []
    levels: dict[int, dict[int, int | None]] = {}
    location_ids = [70_000_000 + 1_000 * seed + n for n in range(locations)]
    product_id = 8_000_000_000 + seed * 10_000_000
    variant_id = 40_000_000_000 + seed * 10_000_000
    left = variants
    made = 0
    while left:
        product_id += rng.randint(1, 5)
        count = min(left, rng.randint(1, max_variants_per_product))
        left -= count
        product_variants = []
        for n in range(count):
            variant_id += rng.randint(1, 3)
            title = "Default Title" if count == 1 else f"Size {n + 1}"
            sku = "" if rng.random() < 0.1 else f"SKU-{variant_id}"
            item_id = variant_id + 5_000_000_000
            product_variants.append(
                FakeVariant(
                    id=variant_id,
                    product_id=product_id,
                    title=title,
                    sku=sku,
                    # cents that binary floats get wrong (0.29 * 100 == 28.999...) turn up often
                    price_cents=rng.choice([29, 57, 115, 1999, 100_000, rng.randint(0, 50_000)]),
                    inventory_item_id=item_id,
                )
            )
            made += 1
            stock = {loc: (None if rng.random() < 0.02 else rng.randint(-2, 40)) for loc in location_ids}
            if untracked_every and made % untracked_every == 0:
                product_variants[-1].tracked = False
                stock = dict.fromkeys(location_ids)
            elif all(value is None for value in stock.values()):
                stock[location_ids[0]] = 0  # a tracked item has a level somewhere
            levels[item_id] = stock
        products.append(FakeProduct(id=product_id, title=f"Product {product_id}", variants=product_variants))
    return FakeShop(
        domain=domain,
        access_token=access_token or "shpat_" + secrets.token_hex(16),
        products=products,
        location_ids=location_ids,
        levels=levels,
        currency=currency,
    )


def _encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str) -> dict[str, Any] | None:
    try:
        payload = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, json.JSONDecodeError):
        return None
    if not isinstance(payload, dict) or payload.get("direction") not in ("next", "prev"):
        return None
    return payload


def _error(status: int, errors: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": errors}, status_code=status, headers=headers)


class _Paged:
    """Cursor paging over records sorted by key, Shopify style."""

    def __init__(self, keys: list[Any], records: list[Any]) -> None:
        self.keys = keys
        self.records = records

    def page(self, cursor: dict[str, Any] | None, limit: int) -> tuple[list[Any], Any, Any, bool, bool]:
        """(records, first key, last key, has previous, has next)."""
        if cursor is None:
            start, end = 0, min(limit, len(self.records))
        elif cursor["direction"] == "next":
            start = bisect.bisect_right(self.keys, _key(cursor["last"]))
            end = min(start + limit, len(self.records))
        else:
            end = bisect.bisect_left(self.keys, _key(cursor["first"]))
            start = max(0, end - limit)
        chosen = self.records[start:end]
        first = self.keys[start] if chosen else None
        last = self.keys[end - 1] if chosen else None
        return chosen, first, last, start > 0 and cursor is not None, end < len(self.records)


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class FakeShopify(ServedFake):
    thread_name = "fake-shopify"

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",  # noqa: S107 - a fake app's test secret
        host: str = "127.0.0.1",
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        super().__init__(host=host)
        self._lock = threading.Lock()
        self._shops: dict[str, FakeShop] = {}
        self._codes: dict[str, str] = {}  # code -> shop
        self._failures: list[Failure] = []
        self._requests: list[RecordedRequest] = []
        prefix = "/shops/{shop}"
        api = prefix + "/admin/api/{version}"
        self.app = Starlette(
            routes=[
                Route(prefix + "/admin/oauth/authorize", self._authorize, methods=["GET"]),
                Route(prefix + "/admin/oauth/access_token", self._access_token, methods=["POST"]),
                Route(prefix + "/admin/api_permissions/current.json", self._uninstall, methods=["DELETE"]),
                Route(api + "/shop.json", self._shop, methods=["GET"]),
                Route(api + "/products.json", self._products, methods=["GET"]),
                Route(api + "/inventory_levels.json", self._inventory_levels, methods=["GET"]),
                Route(api + "/webhooks.json", self._create_webhook, methods=["POST"]),
            ]
        )

    # --- seeding, scripting and inspection (safe from any thread) ---

    def add_shop(self, shop: FakeShop) -> FakeShop:
        shop.products.sort(key=lambda p: p.id)
        with self._lock:
            self._shops[shop.domain] = shop
        return shop

    def shop(self, domain: str) -> FakeShop:
        with self._lock:
            return self._shops[domain]

    def issue_code(self, domain: str) -> str:
        code = secrets.token_hex(16)
        with self._lock:
            self._codes[code] = domain
        return code

    def fail(
        self, status: int, *, times: int = 1, path: str | None = None, retry_after: str | None = "1"
    ) -> None:
        with self._lock:
            self._failures.append(Failure(status, times, path, retry_after))

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()
            self._requests.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path_suffix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(path_suffix)]

    def base_url_for(self, shop: str) -> str:
        return f"{self.base_url}/shops/{shop}"

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeShopify is not started")
        return f"http://{self.host}:{self._port}"

    def sign_query(self, params: dict[str, str]) -> str:
        message = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        return hmac.new(self.client_secret.encode(), message.encode(), hashlib.sha256).hexdigest()

    # --- plumbing ---

    def _gate(self, request: Request, *, api: bool) -> tuple[FakeShop | None, Response | None]:
        """Record the call, apply an injected failure, check the shop and (for the API) the token."""
        domain = request.path_params["shop"]
        path = request.url.path.removeprefix(f"/shops/{domain}")
        token = request.headers.get("x-shopify-access-token")
        params: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            params.setdefault(key, []).append(value)
        with self._lock:
            shop = self._shops.get(domain)
            failure = next((f for f in self._failures if f.path is None or f.path in path), None)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
        response: Response | None = None
        if failure is not None:
            headers = (
                {"Retry-After": failure.retry_after} if failure.status == 429 and failure.retry_after else {}
            )
            response = _error(
                failure.status, _STATUS_ERRORS.get(failure.status, "Internal Server Error"), headers
            )
        elif shop is None:
            response = _error(404, "Not Found")
        elif api and (
            not token or not hmac.compare_digest(token, shop.access_token) or token in shop.revoked_tokens
        ):
            response = _error(401, _STATUS_ERRORS[401])
        elif "version" in request.path_params and not _VERSION.fullmatch(request.path_params["version"]):
            response = _error(404, "Not Found")
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    domain, request.method, path, params, token, response.status_code if response else 200
                )
            )
        return shop, response

    def _link(self, request: Request, cursors: list[tuple[str, dict[str, Any]]], limit: int) -> str:
        base = f"{self.base_url}{request.url.path}"
        links = [
            f'<{base}?{urlencode({"limit": limit, "page_info": _encode_cursor(c)})}>; rel="{rel}"'
            for rel, c in cursors
        ]
        return ", ".join(links)

    def _paging(self, request: Request) -> tuple[dict[str, Any] | None, int, dict[str, Any], Response | None]:
        """(cursor, limit, filters, error). With page_info the filters come from the cursor."""
        query = request.query_params
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            return None, 0, {}, _error(400, {"limit": "Invalid value."})
        if not 1 <= limit <= MAX_LIMIT:
            return None, 0, {}, _error(400, {"limit": f"must be between 1 and {MAX_LIMIT}"})
        if "page_info" not in query:
            return None, limit, {}, None
        extra = sorted(set(query.keys()) - {"page_info", "limit"})
        if extra:
            return None, 0, {}, _error(400, {"page_info": f"cannot be passed along with {', '.join(extra)}"})
        cursor = _decode_cursor(query["page_info"])
        if cursor is None:
            return None, 0, {}, _error(400, {"page_info": "Invalid value."})
        return cursor, limit, dict(cursor.get("filters", {})), None

    def _page_response(
        self,
        request: Request,
        key: str,
        paged: _Paged,
        cursor: dict[str, Any] | None,
        limit: int,
        filters: dict[str, Any],
        render: Callable[[Any], Any],
    ) -> Response:
        records, first, last, has_prev, has_next = paged.page(cursor, limit)
        links: list[tuple[str, dict[str, Any]]] = []
        if has_prev:
            links.append(("previous", {"direction": "prev", "first": first, "filters": filters}))
        if has_next:
            links.append(("next", {"direction": "next", "last": last, "filters": filters}))
        headers = {"X-Shopify-Shop-Api-Call-Limit": "1/40"}
        if links:
            headers["Link"] = self._link(request, links, limit)
        return JSONResponse({key: [render(r) for r in records]}, headers=headers)

    # --- endpoints ---

    async def _authorize(self, request: Request) -> Response:
        shop, error = self._gate(request, api=False)
        if error is not None or shop is None:
            return error or _error(404, "Not Found")
        query = request.query_params
        if query.get("client_id") != self.client_id or not query.get("redirect_uri"):
            return _error(400, "Oauth error invalid_request: The client_id or redirect_uri is invalid")
        params = {
            "code": self.issue_code(shop.domain),
            "host": base64.b64encode(f"{shop.domain}/admin".encode()).decode().rstrip("="),
            "shop": shop.domain,
            "state": query.get("state", ""),
            "timestamp": str(int(time.time())),
        }
        params["hmac"] = self.sign_query(params)
        return RedirectResponse(f"{query['redirect_uri']}?{urlencode(params)}", status_code=302)

    async def _json_call(
        self, request: Request, *, api: bool
    ) -> tuple[FakeShop | None, Any, Response | None]:
        """(shop, JSON body or None, error): the gate, then the body read as JSON."""
        shop, error = self._gate(request, api=api)
        if error is not None or shop is None:
            return None, None, error or _error(404, "Not Found")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        return shop, body, None

    async def _access_token(self, request: Request) -> Response:
        shop, body, error = await self._json_call(request, api=False)
        if error is not None or shop is None:
            return error or _error(404, "Not Found")
        if not isinstance(body, dict):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        if body.get("client_id") != self.client_id or body.get("client_secret") != self.client_secret:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client credentials are invalid"},
                status_code=400,
            )
        with self._lock:
            owner = self._codes.pop(str(body.get("code")), None)
        if owner != shop.domain:
            return JSONResponse(
                {
                    "error": "invalid_request",
                    "error_description": "The authorization code was not found or was already used",
                },
                status_code=400,
            )
        return JSONResponse(
            {"access_token": shop.access_token, "scope": "read_products,read_inventory,read_locations"}
        )

    async def _uninstall(self, request: Request) -> Response:
        shop, error = self._gate(request, api=True)
        if error is not None or shop is None:
            return error or _error(404, "Not Found")
        with self._lock:
            shop.revoked_tokens.add(shop.access_token)
        return JSONResponse({})

    async def _create_webhook(self, request: Request) -> Response:
        """``POST webhooks.json``: 201 with the subscription; 422 when the topic and address exist."""
        shop, body, error = await self._json_call(request, api=True)
        if error is not None or shop is None:
            return error or _error(404, "Not Found")
        hook = body.get("webhook") if isinstance(body, dict) else None
        if not isinstance(hook, dict) or not hook.get("topic") or not hook.get("address"):
            return _error(422, {"webhook": ["Required parameter missing or invalid"]})
        with self._lock:
            if any(w["topic"] == hook["topic"] and w["address"] == hook["address"] for w in shop.webhooks):
                return _error(422, {"address": ["for this topic has already been taken"]})
            created = {
                "id": 1_000_000 + len(shop.webhooks),
                "topic": hook["topic"],
                "address": hook["address"],
                "format": hook.get("format", "json"),
            }
            shop.webhooks.append(created)
        return JSONResponse({"webhook": created}, status_code=201)

    async def _shop(self, request: Request) -> Response:
        shop, error = self._gate(request, api=True)
        if error is not None or shop is None:
            return error or _error(404, "Not Found")
        full = {
            "id": shop.shop_id,
            "name": shop.domain.split(".")[0],
            "myshopify_domain": shop.domain,
            "currency": shop.currency,
        }
        fields = [f for f in request.query_params.get("fields", "").split(",") if f]
        return JSONResponse({"shop": {k: full[k] for k in fields if k in full} if fields else full})

    async def _products(self, request: Request) -> Response:
        shop, error = self._gate(request, api=True)
        if error is not None or shop is None:
            return error or _error(404, "Not Found")
        cursor, limit, filters, error = self._paging(request)
        if error is not None:
            return error
        if cursor is None:
            filters = {"fields": [f for f in request.query_params.get("fields", "").split(",") if f]}
        fields = filters.get("fields") or None
        products = shop.products
        paged = _Paged([p.id for p in products], products)
        return self._page_response(
            request, "products", paged, cursor, limit, filters, lambda p: p.wire(fields)
        )

    async def _inventory_levels(self, request: Request) -> Response:
        shop, error = self._gate(request, api=True)
        if error is not None or shop is None:
            return error or _error(404, "Not Found")
        cursor, limit, filters, error = self._paging(request)
        if error is not None:
            return error
        if cursor is None:
            try:
                item_ids = [
                    int(i) for i in request.query_params.get("inventory_item_ids", "").split(",") if i
                ]
                location_ids = [int(i) for i in request.query_params.get("location_ids", "").split(",") if i]
            except ValueError:
                return _error(422, {"inventory_item_ids": ["must be a list of ids"]})
            if not item_ids and not location_ids:
                return _error(422, "inventory_item_ids, location_ids, or both must be given")
            if len(item_ids) > MAX_INVENTORY_ITEM_IDS:
                return _error(
                    422, {"inventory_item_ids": [f"must have at most {MAX_INVENTORY_ITEM_IDS} ids"]}
                )
            filters = {"inventory_item_ids": item_ids, "location_ids": location_ids}
        wanted_items = set(filters.get("inventory_item_ids") or shop.levels)
        wanted_locations = set(filters.get("location_ids") or shop.location_ids)
        rows = sorted(
            (item_id, location_id, available)
            for item_id in wanted_items
            for location_id, available in shop.levels.get(item_id, {}).items()
            if location_id in wanted_locations
        )
        paged = _Paged([(r[0], r[1]) for r in rows], rows)
        return self._page_response(
            request,
            "inventory_levels",
            paged,
            cursor,
            limit,
            filters,
            lambda r: {
                "inventory_item_id": r[0],
                "location_id": r[1],
                "available": r[2],
                "updated_at": "2024-10-01T12:00:00-04:00",
            },
        )


_STATUS_ERRORS = {
    401: "[API] Invalid API key or access token (unrecognized login or wrong password)",
    402: "Unavailable Shop",
    403: "[API] This action requires merchant approval for read_products scope.",
    404: "Not Found",
    429: "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service.",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
