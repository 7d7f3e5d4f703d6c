"""Shopify: per-shop OAuth, inventory from the Admin REST API, and webhook signatures.

Every shop is its own host (``https://{shop}``), so the shop domain is checked against
``[a-z0-9][a-z0-9-]*.myshopify.com`` before any URL is built from it: a connection can never point
BrandVX's HTTP client at another host. Paging links are not followed as URLs either; only their
``page_info`` cursor is taken and sent to the same path on the same shop.

Inventory is read page by page: ``products.json`` (250 products a page, cursor paging through the
``Link`` header), then for each page ``inventory_levels.json`` for its variants' inventory items, at
most 50 ids a call as the API allows, summing ``available`` over locations. Calls are sequential:
Shopify's REST bucket refills at 2 calls a second, and ProviderHttp honours ``Retry-After`` on 429.

Known limit of the REST products endpoint: it lists at most 100 variants per product; shops with
larger products need the GraphQL Admin API.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from domain.model import Provider
from domain.sync import (
    ExternalInventoryItem,
    FetchedPage,
    IncompleteSync,
    InventorySource,
    OAuthClient,
    ProviderError,
    TokenSet,
)
from integrations.http import ProviderHttp

__all__ = [
    "DEFAULT_API_VERSION",
    "INVENTORY_IDS_PER_CALL",
    "PAGE_LIMIT",
    "PRIVACY_TOPICS",
    "SCOPES",
    "WEBHOOK_TOPICS",
    "InvalidShopDomain",
    "ShopifyClient",
    "ShopifyInventory",
    "ShopifyShopOAuth",
    "missing_scopes",
    "next_page_params",
    "normalize_shop",
    "verify_webhook",
]

PROVIDER_NAME: Final = "Shopify"
DEFAULT_API_VERSION: Final = "2024-10"
SCOPES: Final = ("read_products", "read_inventory", "read_locations")
# Subscribed through the Admin API at install; every delivery is only a nudge to re-read the shop.
WEBHOOK_TOPICS: Final = ("inventory_levels/update", "products/update", "products/delete", "app/uninstalled")
# Shopify's mandatory privacy webhooks: set in the app's configuration (Partner Dashboard or
# shopify.app.toml), not through the API; served at the same address with the same signature.
PRIVACY_TOPICS: Final = ("customers/data_request", "customers/redact", "shop/redact")
PAGE_LIMIT: Final = 250
INVENTORY_IDS_PER_CALL: Final = 50
DEFAULT_VARIANT_TITLE: Final = "Default Title"
NAME_SEPARATOR: Final = " \u2013 "  # an en dash: "Shampoo \u2013 500 ml"

_SHOP = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
_API_VERSION = re.compile(r"\d{4}-\d{2}|unstable")
_LINK = re.compile(r"<([^>]*)>([^<]*)")
_REL = re.compile(r"""rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))""")
# What a paging link may carry back to Shopify; anything else in it is ignored.
_PAGE_PARAMS = ("limit", "page_info", "fields")


class InvalidShopDomain(ValueError):
    """Not a ``*.myshopify.com`` shop domain; the message never repeats the input."""


def normalize_shop(shop: str) -> str:
    """The shop's ``x.myshopify.com`` domain in lower case, or InvalidShopDomain."""
    if not isinstance(shop, str) or not shop.isascii() or len(shop) > 255:
        raise InvalidShopDomain("not a myshopify.com shop domain")
    domain = shop.lower()
    if not _SHOP.fullmatch(domain) or len(domain.split(".", 1)[0]) > 63:
        raise InvalidShopDomain("not a myshopify.com shop domain")
    return domain


def missing_scopes(granted: Iterable[str], wanted: Iterable[str] = SCOPES) -> tuple[str, ...]:
    """The wanted scopes a grant lacks; ``write_x`` implies ``read_x`` as Shopify grants it."""
    have = {scope.strip() for scope in granted}
    have |= {"read_" + scope.removeprefix("write_") for scope in have if scope.startswith("write_")}
    return tuple(scope for scope in wanted if scope not in have)


def verify_webhook(*, client_secret: str, body: bytes, hmac_header: str | None) -> bool:
    """``X-Shopify-Hmac-Sha256``: base64 HMAC-SHA256 of the raw body with the app's client secret."""
    if not hmac_header or not client_secret:
        return False
    try:
        given = base64.b64decode(hmac_header.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = hmac.new(client_secret.encode(), body, hashlib.sha256).digest()
    return hmac.compare_digest(given, expected)


def _callback_message(query: Mapping[str, str]) -> str:
    # Shopify's escaping keeps a value from smuggling in another "k=v" pair.
    pairs = []
    for key, value in query.items():
        if key == "hmac":
            continue
        k = key.replace("%", "%25").replace("=", "%3D").replace("&", "%26")
        v = value.replace("%", "%25").replace("&", "%26")
        pairs.append(f"{k}={v}")
    return "&".join(sorted(pairs))


def next_page_params(link_header: str | None, *, limit: int = PAGE_LIMIT) -> dict[str, str] | None:
    """The query for the ``rel="next"`` page of a Shopify ``Link`` header, or None on the last page."""
    if not link_header:
        return None
    for match in _LINK.finditer(link_header):
        url, attributes = match.groups()
        rel = _REL.search(attributes)
        if rel is None or "next" not in (rel.group(1) or rel.group(2) or "").split():
            continue
        query = parse_qs(urlsplit(url).query, keep_blank_values=True)
        cursor = query.get("page_info", [""])[0]
        if not cursor:
            raise ProviderError("permanent", f"{PROVIDER_NAME} sent a next-page link without a cursor")
        params = {key: query[key][0] for key in _PAGE_PARAMS if key in query}
        params["limit"] = str(limit)
        return params
    return None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProviderError(
            "transient", f"{PROVIDER_NAME} sent a response that is not JSON", status=response.status_code
        ) from None
    if not isinstance(body, dict):
        raise ProviderError("permanent", f"{PROVIDER_NAME} sent a response of an unexpected shape")
    return body


def _quantity(variant: Mapping[str, Any], quantities: Mapping[int, int | None]) -> int | None:
    """The variant's stock, or None when Shopify does not track it.

    Untracked: ``inventory_management`` is null on the variant, or every level reads ``available: null``.
    """
    if "inventory_management" in variant and variant["inventory_management"] is None:
        return None
    return quantities.get(variant["inventory_item_id"], 0)


def _malformed(what: str) -> ProviderError:
    return ProviderError("permanent", f"{PROVIDER_NAME} sent {what} we could not read")


def _object_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(what)
    return value


def _price_cents(value: Any) -> int:
    if not isinstance(value, str):
        raise _malformed("a price")
    try:
        price = Decimal(value.strip())
        if not price.is_finite() or price < 0:
            raise _malformed("a price")
        # Shopify prices have two decimals; anything finer rounds to the nearest cent.
        return int((price * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except ArithmeticError:  # decimal.InvalidOperation, Overflow: not a number, or no price
        raise _malformed("a price") from None


class ShopifyInventory:
    """One shop's inventory as an ``InventorySource``: one FetchedPage per products page."""

    def __init__(self, http: ProviderHttp, *, shop: str, access_token: str, api_version: str) -> None:
        self._http = http
        self.shop = shop
        self._headers = {"X-Shopify-Access-Token": access_token, "Accept": "application/json"}
        self._api = f"/admin/api/{api_version}"

    async def items(self) -> AsyncIterator[FetchedPage[ExternalInventoryItem]]:
        currency = await self._currency()
        # Cursor paging can repeat a record the shop edited mid-walk: a variant already on this page
        # or the one before is skipped. Only those two pages' ids are kept, so memory does not grow
        # with the shop; a repeat further away is upserted again (idempotent) and counted twice.
        previous: set[int] = set()
        first = {"limit": str(PAGE_LIMIT), "fields": "id,title,variants"}
        async for products in self._pages(f"{self._api}/products.json", first, "products"):
            seen: set[int] = set()
            variants: list[tuple[str, dict[str, Any]]] = []
            for product in products:
                if not isinstance(product, dict) or not isinstance(product.get("variants"), list):
                    raise _malformed("a product")
                title = product.get("title")
                for variant in product["variants"]:
                    if not isinstance(variant, dict):
                        raise _malformed("a variant")
                    variant_id = _object_id(variant.get("id"), "a variant")
                    if variant_id in seen or variant_id in previous:
                        continue
                    seen.add(variant_id)
                    variants.append((title if isinstance(title, str) else "", variant))
            item_ids = {_object_id(v.get("inventory_item_id"), "a variant") for _, v in variants}
            quantities = await self._available(sorted(item_ids))
            items = [
                self._item(title, variant, _quantity(variant, quantities), currency)
                for title, variant in variants
            ]
            previous = seen
            yield FetchedPage(items=items)

    def _item(
        self, product_title: str, variant: Mapping[str, Any], quantity: int | None, currency: str
    ) -> ExternalInventoryItem:
        external_id = str(variant["id"])
        sku = variant.get("sku")
        sku = sku.strip() if isinstance(sku, str) else ""
        variant_title = variant.get("title")
        variant_title = variant_title.strip() if isinstance(variant_title, str) else ""
        name = product_title.strip()
        if variant_title and variant_title != DEFAULT_VARIANT_TITLE:
            name = f"{name}{NAME_SEPARATOR}{variant_title}" if name else variant_title
        return ExternalInventoryItem(
            provider=Provider.SHOPIFY,
            external_id=external_id,
            sku=sku or external_id,
            name=name or external_id,
            quantity=quantity,
            price_cents=_price_cents(variant.get("price")),
            currency=currency,
            low_stock_threshold=None,
        )

    async def _currency(self) -> str:
        response = await self._http.request(
            "GET", f"{self._api}/shop.json", headers=self._headers, params={"fields": "currency"}
        )
        shop = _json_object(response).get("shop")
        currency = shop.get("currency") if isinstance(shop, dict) else None
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            raise _malformed("the shop's currency")
        return currency

    async def _available(self, item_ids: list[int]) -> dict[int, int | None]:
        """Stock available per inventory item, summed over the shop's locations.

        None for an item whose levels all say ``available: null`` (Shopify does not track its stock);
        an item with no level at all is tracked and stocked nowhere (0).
        """
        totals: dict[int, int | None] = dict.fromkeys(item_ids)
        levelled: set[int] = set()
        for start in range(0, len(item_ids), INVENTORY_IDS_PER_CALL):
            chunk = item_ids[start : start + INVENTORY_IDS_PER_CALL]
            first = {"inventory_item_ids": ",".join(map(str, chunk)), "limit": str(PAGE_LIMIT)}
            async for levels in self._pages(f"{self._api}/inventory_levels.json", first, "inventory_levels"):
                for level in levels:
                    if not isinstance(level, dict):
                        raise _malformed("an inventory level")
                    item_id = _object_id(level.get("inventory_item_id"), "an inventory level")
                    available = level.get("available")
                    if item_id not in totals:
                        continue
                    levelled.add(item_id)
                    if available is None:  # not tracked
                        continue
                    totals[item_id] = (totals[item_id] or 0) + _object_id(available, "an inventory level")
        return {item_id: 0 if item_id not in levelled else total for item_id, total in totals.items()}

    async def _pages(self, path: str, first: Mapping[str, str], key: str) -> AsyncIterator[list[Any]]:
        params: dict[str, str] = dict(first)
        cursors: set[str] = set()
        while True:
            response = await self._http.request("GET", path, headers=self._headers, params=params)
            records = _json_object(response).get(key)
            if not isinstance(records, list):
                raise _malformed(f"a {key} page")
            yield records
            following = next_page_params(response.headers.get("link"))
            if following is None:
                return
            if following["page_info"] in cursors:
                raise IncompleteSync(f"{PROVIDER_NAME} repeated a page cursor for {key}")
            cursors.add(following["page_info"])
            params = following


class ShopifyClient:
    """The app's Shopify credentials, and one ProviderHttp per shop (each with its own breaker).

    ``shop_base_url`` maps a (validated) shop domain to its base URL; tests point it at a fake.
    ``http_factory`` builds the ProviderHttp for a base URL. Both are optional.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api_version: str = DEFAULT_API_VERSION,
        shop_base_url: Callable[[str], str] | None = None,
        http_factory: Callable[[str], ProviderHttp] | None = None,
    ) -> None:
        if not _API_VERSION.fullmatch(api_version):
            raise ValueError("api_version must look like 2024-10")
        self.client_id = client_id
        self._client_secret = client_secret
        self.api_version = api_version
        self._shop_base_url = shop_base_url
        self._http_factory = http_factory
        self._https: dict[str, ProviderHttp] = {}

    def base_url(self, shop: str) -> str:
        domain = normalize_shop(shop)
        if self._shop_base_url is not None:
            return self._shop_base_url(domain).rstrip("/")
        return f"https://{domain}"

    def _http(self, shop: str) -> ProviderHttp:
        domain = normalize_shop(shop)
        http = self._https.get(domain)
        if http is None:
            base = self.base_url(domain)
            if self._http_factory is not None:
                http = self._http_factory(base)
            else:
                http = ProviderHttp(PROVIDER_NAME, base_url=base)
            self._https[domain] = http
        return http

    async def aclose(self) -> None:
        https, self._https = list(self._https.values()), {}
        for http in https:
            await http.aclose()

    # --- OAuth (authorization code grant, offline tokens) ---

    def authorize_url(self, *, state: str, redirect_uri: str, shop: str) -> str:
        query = urlencode(
            {
                "client_id": self.client_id,
                "scope": ",".join(SCOPES),
                "redirect_uri": redirect_uri,
                "state": state,
            }
        )
        return f"{self.base_url(shop)}/admin/oauth/authorize?{query}"

    def verify_callback(self, query: Mapping[str, str]) -> bool:
        """The redirect's ``hmac``: hex HMAC-SHA256 of the other parameters, sorted, with the secret.

        The ``shop`` parameter must also be a valid shop domain. The caller still checks ``state``.
        """
        given = query.get("hmac")
        if not given or not self._client_secret:
            return False
        shop = query.get("shop")
        if shop is not None:
            try:
                normalize_shop(shop)
            except InvalidShopDomain:
                return False
        message = _callback_message(query).encode()
        expected = hmac.new(self._client_secret.encode(), message, hashlib.sha256).hexdigest()
        return hmac.compare_digest(given.strip().lower().encode(), expected.encode())

    async def exchange_code(self, *, code: str, redirect_uri: str, shop: str) -> TokenSet:
        """A permanent (offline) token; ``redirect_uri`` is not part of Shopify's token request."""
        domain = normalize_shop(shop)
        response = await self._http(domain).request(
            "POST",
            "/admin/oauth/access_token",
            headers={"Accept": "application/json"},
            json={"client_id": self.client_id, "client_secret": self._client_secret, "code": code},
        )
        body = _json_object(response)
        token = body.get("access_token")
        scope = body.get("scope")
        if not isinstance(token, str) or not token or not isinstance(scope, str):
            raise _malformed("a token response")
        scopes = tuple(s.strip() for s in scope.split(",") if s.strip())
        return TokenSet(access_token=token, scopes=scopes, account_id=domain)

    async def refresh(self, refresh_token: str) -> TokenSet:
        raise ProviderError(
            "permanent", f"{PROVIDER_NAME} offline tokens do not expire and cannot be refreshed"
        )

    async def revoke(self, token: TokenSet) -> None:
        """Uninstall the app from the shop (``token.account_id``); an already refused token is done."""
        if token.account_id is None:
            raise ProviderError("permanent", f"{PROVIDER_NAME} token has no shop to revoke it on")
        try:
            await self._http(token.account_id).request(
                "DELETE",
                "/admin/api_permissions/current.json",
                headers={"X-Shopify-Access-Token": token.access_token, "Accept": "application/json"},
            )
        except ProviderError as error:
            if error.kind != "auth":
                raise

    async def subscribe_webhooks(self, shop: str, access_token: str, address: str) -> list[str]:
        """``POST /admin/api/{version}/webhooks.json`` for every topic in WEBHOOK_TOPICS; the topics
        subscribed now. A topic already subscribed to this address (Shopify answers 422) is kept."""
        domain = normalize_shop(shop)
        headers = {"X-Shopify-Access-Token": access_token, "Accept": "application/json"}
        created: list[str] = []
        for topic in WEBHOOK_TOPICS:
            try:
                await self._http(domain).request(
                    "POST",
                    f"/admin/api/{self.api_version}/webhooks.json",
                    headers=headers,
                    json={"webhook": {"topic": topic, "address": address, "format": "json"}},
                )
            except ProviderError as error:
                if error.status != 422:  # "address for this topic has already been taken"
                    raise
                continue
            created.append(topic)
        return created

    def for_shop(self, shop: str) -> OAuthClient:
        return ShopifyShopOAuth(self, normalize_shop(shop))

    # --- data ---

    def inventory(self, shop: str, access_token: str) -> InventorySource:
        domain = normalize_shop(shop)
        return ShopifyInventory(
            self._http(domain), shop=domain, access_token=access_token, api_version=self.api_version
        )


class ShopifyShopOAuth:
    """``ShopifyClient`` bound to one shop, as the ``OAuthClient`` port."""

    def __init__(self, client: ShopifyClient, shop: str) -> None:
        self._client = client
        self.shop = normalize_shop(shop)

    def authorize_url(self, *, state: str, redirect_uri: str) -> str:
        return self._client.authorize_url(state=state, redirect_uri=redirect_uri, shop=self.shop)

    async def exchange_code(self, *, code: str, redirect_uri: str) -> TokenSet:
        return await self._client.exchange_code(code=code, redirect_uri=redirect_uri, shop=self.shop)

    async def refresh(self, refresh_token: str) -> TokenSet:
        return await self._client.refresh(refresh_token)

    async def on_connected(self, tokens: TokenSet, public_url: str) -> None:
        """After install: subscribe the shop's webhooks to ``{public_url}/webhooks/shopify``."""
        address = f"{public_url.rstrip('/')}/webhooks/shopify"
        await self._client.subscribe_webhooks(self.shop, tokens.access_token, address)

    async def revoke(self, token: TokenSet) -> None:
        account = token.account_id or self.shop
        if normalize_shop(account) != self.shop:
            raise ProviderError("permanent", f"{PROVIDER_NAME} token belongs to another shop")
        await self._client.revoke(TokenSet(access_token=token.access_token, account_id=self.shop))
