"""ShopifyClient over real HTTP against FakeShopify on 127.0.0.1 (no mocks, no real provider)."""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import math
import weakref
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from domain.model import Provider
from domain.sync import ExternalInventoryItem, OAuthClient, ProviderError, TokenSet
from integrations.http import ProviderHttp, RetryPolicy
from integrations.shopify import (
    INVENTORY_IDS_PER_CALL,
    PAGE_LIMIT,
    SCOPES,
    WEBHOOK_TOPICS,
    InvalidShopDomain,
    ShopifyClient,
    missing_scopes,
    next_page_params,
    normalize_shop,
    verify_webhook,
)
from tests.fakes.shopify_server import FakeShop, FakeShopify, generate_shop

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "shpss_test_0123456789abcdef"
BIG = "big-salon.myshopify.com"
WIDE = "wide-salon.myshopify.com"
SMALL = "small-salon.myshopify.com"
UNINSTALL = "leaving-salon.myshopify.com"
REDIRECT = "https://app.brandvx.test/oauth/shopify/callback"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeShopify]:
    with FakeShopify(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as server:
        server.add_shop(
            generate_shop(BIG, variants=5_000, locations=2, seed=1, currency="CAD", untracked_every=97)
        )
        server.add_shop(generate_shop(WIDE, variants=130, locations=7, seed=2))
        server.add_shop(generate_shop(SMALL, variants=12, locations=2, seed=3))
        server.add_shop(generate_shop(UNINSTALL, variants=3, locations=1, seed=4))
        yield server


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(fake: FakeShopify, sleeps: Sleeps) -> AsyncIterator[ShopifyClient]:
    fake.reset()

    def http(base_url: str) -> ProviderHttp:
        return ProviderHttp("Shopify", base_url=base_url, retry=RetryPolicy(attempts=3), sleep=sleeps)

    shopify = ShopifyClient(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, shop_base_url=fake.base_url_for, http_factory=http
    )
    yield shopify
    await shopify.aclose()


async def read_all(client: ShopifyClient, shop: FakeShop) -> list[ExternalInventoryItem]:
    source = client.inventory(shop.domain, shop.access_token)
    return [item async for page in source.items() for item in page.items]


def expected_items(shop: FakeShop) -> dict[str, ExternalInventoryItem]:
    expected = {}
    for product in shop.products:
        for variant in product.variants:
            name = (
                product.title
                if variant.title == "Default Title"
                else f"{product.title} \u2013 {variant.title}"
            )
            expected[str(variant.id)] = ExternalInventoryItem(
                provider=Provider.SHOPIFY,
                external_id=str(variant.id),
                sku=variant.sku or str(variant.id),
                name=name,
                quantity=shop.available(variant.inventory_item_id),
                price_cents=variant.price_cents,
                currency=shop.currency,
                low_stock_threshold=None,
            )
    return expected


# --- inventory ---


async def test_5000_variants_each_once_with_summed_quantities_and_prices(
    client: ShopifyClient, fake: FakeShopify
) -> None:
    shop = fake.shop(BIG)
    assert len(shop.variants()) == 5_000
    assert len(shop.products) > 2 * PAGE_LIMIT  # several products pages

    items = await read_all(client, shop)

    assert len(items) == 5_000
    assert len({item.external_id for item in items}) == 5_000
    assert {item.external_id: item for item in items} == expected_items(shop)
    assert {item.currency for item in items} == {"CAD"}
    assert any(item.price_cents == 29 for item in items)  # "0.29" is not 28 cents
    assert any(item.sku == item.external_id for item in items)  # empty SKU falls back to the id
    # Oversold stock is reported as Shopify has it.
    assert any(item.quantity is not None and item.quantity < 0 for item in items)
    assert sum(1 for item in items if item.quantity is None) == 5_000 // 97  # untracked: None, not 0


async def test_untracked_stock_is_none_by_either_signal(client: ShopifyClient, fake: FakeShopify) -> None:
    shop = fake.add_shop(generate_shop("untracked-salon.myshopify.com", variants=4, locations=2, seed=9))
    first, second, third, fourth = shop.variants()
    shop.untrack(first)  # inventory_management null and every level null
    shop.levels[second.inventory_item_id] = dict.fromkeys(shop.location_ids)  # levels null only
    third.tracked = False  # inventory_management null only
    shop.levels[fourth.inventory_item_id] = {}  # tracked, stocked at no location

    by_id = {item.external_id: item.quantity for item in await read_all(client, shop)}

    assert by_id == {str(first.id): None, str(second.id): None, str(third.id): None, str(fourth.id): 0}


async def test_products_are_walked_by_page_info_with_only_limit(
    client: ShopifyClient, fake: FakeShopify
) -> None:
    shop = fake.shop(BIG)
    pages = [page async for page in client.inventory(BIG, shop.access_token).items()]

    calls = fake.requests_to("/products.json")
    assert len(calls) == len(pages) == math.ceil(len(shop.products) / PAGE_LIMIT)
    assert calls[0].path == "/admin/api/2024-10/products.json"
    assert calls[0].params == {"limit": ["250"], "fields": ["id,title,variants"]}
    for call in calls[1:]:
        assert set(call.params) == {"limit", "page_info"}
    assert all(call.status == 200 for call in fake.requests)
    assert all(call.token == shop.access_token for call in fake.requests)


async def test_inventory_levels_are_asked_in_chunks_of_at_most_50(
    client: ShopifyClient, fake: FakeShopify
) -> None:
    shop = fake.shop(BIG)
    await read_all(client, shop)

    calls = fake.requests_to("/inventory_levels.json")
    asked = [int(i) for call in calls for i in call.params["inventory_item_ids"][0].split(",")]
    assert all(
        len(call.params["inventory_item_ids"][0].split(",")) <= INVENTORY_IDS_PER_CALL for call in calls
    )
    assert all(call.params["limit"] == ["250"] for call in calls)
    # 2 locations x 50 ids fit in one page of 250: one call per chunk, per products page.
    expected_calls = sum(
        math.ceil(
            sum(len(p.variants) for p in shop.products[start : start + PAGE_LIMIT]) / INVENTORY_IDS_PER_CALL
        )
        for start in range(0, len(shop.products), PAGE_LIMIT)
    )
    assert len(calls) == expected_calls
    assert sorted(asked) == sorted(v.inventory_item_id for v in shop.variants())


async def test_inventory_levels_follow_their_own_paging(client: ShopifyClient, fake: FakeShopify) -> None:
    shop = fake.shop(WIDE)  # 7 locations: 50 items are 350 levels, two pages of 250
    items = await read_all(client, shop)

    assert {item.external_id: item for item in items} == expected_items(shop)
    calls = fake.requests_to("/inventory_levels.json")
    followed = [call for call in calls if "page_info" in call.params]
    assert len(followed) == 2  # 130 ids in chunks of 50, 50, 30: 350, 350 and 210 levels
    assert all(set(call.params) == {"limit", "page_info"} for call in followed)


async def test_the_fake_rejects_other_parameters_beside_page_info(fake: FakeShopify) -> None:
    shop = fake.shop(BIG)
    url = fake.base_url_for(BIG) + "/admin/api/2024-10/products.json"
    headers = {"X-Shopify-Access-Token": shop.access_token}
    async with httpx.AsyncClient() as http:
        first = await http.get(url, params={"limit": 250}, headers=headers)
        next_params = next_page_params(first.headers["link"])
        assert next_params is not None
        second = await http.get(url, params=next_params, headers=headers)
        assert 'rel="previous"' in second.headers["link"]
        assert 'rel="next"' in second.headers["link"]
        rejected = await http.get(url, params={**next_params, "fields": "id"}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert rejected.status_code == 400


def test_link_header_parsing() -> None:
    url = "https://a.myshopify.com/admin/api/2024-10/products.json?limit=250&page_info="
    link = f'<{url}prev123>; rel="previous", <{url}next456>; rel="next"'
    assert next_page_params(link) == {"limit": "250", "page_info": "next456"}
    assert next_page_params('<https://a.myshopify.com/x.json?page_info=p1>; rel="previous"') is None
    assert next_page_params(None) is None


async def test_a_read_response_is_freed_without_the_cycle_collector(fake: FakeShopify) -> None:
    # httpx links a response and its stream both ways; a page body held in that cycle waited for a
    # full collection in the worker (bench/README.md, inventory memory).
    shop = fake.shop(SMALL)
    http = ProviderHttp("Shopify", base_url=fake.base_url_for(SMALL))
    enabled = gc.isenabled()
    gc.disable()
    try:
        response = await http.request(
            "GET", "/admin/api/2024-10/products.json", headers={"X-Shopify-Access-Token": shop.access_token}
        )
        assert response.json()["products"]
        freed = weakref.ref(response)
        del response
        assert freed() is None
    finally:
        if enabled:
            gc.enable()
        await http.aclose()


# --- failures ---


async def test_429_waits_for_retry_after_and_finishes(
    client: ShopifyClient, fake: FakeShopify, sleeps: Sleeps
) -> None:
    shop = fake.shop(SMALL)
    fake.fail(429, path="products.json", retry_after="1")
    fake.fail(429, path="inventory_levels.json", retry_after="1")

    items = await read_all(client, shop)

    assert {item.external_id: item for item in items} == expected_items(shop)
    assert sleeps.delays == [1.0, 1.0]
    assert [r.status for r in fake.requests_to("/products.json")] == [429, 200]


async def test_500_is_retried_then_reported_as_transient(
    client: ShopifyClient, fake: FakeShopify, sleeps: Sleeps
) -> None:
    shop = fake.shop(SMALL)
    fake.fail(500, path="products.json")
    assert len(await read_all(client, shop)) == 12

    fake.fail(500, times=10, path="products.json")
    with pytest.raises(ProviderError) as caught:
        await read_all(client, shop)
    assert caught.value.kind == "transient"
    fake.reset()


async def test_401_is_an_auth_error_without_the_token(client: ShopifyClient, fake: FakeShopify) -> None:
    bad_token = "shpat_wrong_0000000000000000"
    with pytest.raises(ProviderError) as caught:
        _ = [page async for page in client.inventory(SMALL, bad_token).items()]
    assert caught.value.kind == "auth"
    assert caught.value.status == 401
    assert bad_token not in str(caught.value)
    assert len(fake.requests) == 1  # not retried


async def test_injected_401_is_an_auth_error(client: ShopifyClient, fake: FakeShopify) -> None:
    fake.fail(401, path="inventory_levels.json")
    with pytest.raises(ProviderError) as caught:
        await read_all(client, fake.shop(SMALL))
    assert caught.value.kind == "auth"


# --- shop domains ---


@pytest.mark.parametrize(
    "shop",
    [
        "evil.com",
        "x.myshopify.com.evil.com",
        "x.myshopify.com/evil",
        "x.myshopify.com:8443",
        "x.myshopify.com@evil.com",
        "evil.com#x.myshopify.com",
        "-x.myshopify.com",
        ".myshopify.com",
        "a.b.myshopify.com",
        "x.myshopify.com\n",
        " x.myshopify.com",
        "x\u0131.myshopify.com",
        "",
    ],
)
async def test_shop_domains_other_than_myshopify_are_refused(client: ShopifyClient, shop: str) -> None:
    with pytest.raises(InvalidShopDomain):
        normalize_shop(shop)
    with pytest.raises(InvalidShopDomain):
        client.authorize_url(state="s", redirect_uri=REDIRECT, shop=shop)
    with pytest.raises(InvalidShopDomain):
        client.inventory(shop, "token")
    with pytest.raises(InvalidShopDomain):
        client.for_shop(shop)
    with pytest.raises(InvalidShopDomain):
        await client.exchange_code(code="c", redirect_uri=REDIRECT, shop=shop)


def test_shop_domains_are_normalised() -> None:
    assert normalize_shop("My-Salon-2.MyShopify.com") == "my-salon-2.myshopify.com"
    assert (
        ShopifyClient(client_id="i", client_secret="s").base_url("a.myshopify.com")
        == "https://a.myshopify.com"
    )


# --- OAuth ---


def test_authorize_url(client: ShopifyClient) -> None:
    production = ShopifyClient(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    url = urlsplit(production.authorize_url(state="st4te", redirect_uri=REDIRECT, shop="a.myshopify.com"))
    assert (url.scheme, url.netloc, url.path) == ("https", "a.myshopify.com", "/admin/oauth/authorize")
    assert parse_qs(url.query) == {
        "client_id": [CLIENT_ID],
        "scope": ["read_products,read_inventory,read_locations"],
        "redirect_uri": [REDIRECT],
        "state": ["st4te"],
    }


def test_callback_hmac_matches_shopifys_documented_example() -> None:
    shopify = ShopifyClient(client_id="id", client_secret="hush")
    query = {
        "code": "0907a61c0c8d55e99db179b68161bc00",
        "shop": "some-shop.myshopify.com",
        "state": "0.6784241404160823",
        "timestamp": "1337178173",
        "hmac": "700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328fc4bf",
    }
    assert shopify.verify_callback(query)
    assert not shopify.verify_callback({**query, "state": "0.1"})
    assert not shopify.verify_callback({**query, "extra": "1"})
    assert not shopify.verify_callback({k: v for k, v in query.items() if k != "hmac"})
    assert not ShopifyClient(client_id="id", client_secret="other").verify_callback(query)


def test_callback_hmac_refuses_a_signed_foreign_shop() -> None:
    shopify = ShopifyClient(client_id="id", client_secret="hush")
    query = {"code": "c", "shop": "evil.com", "state": "s", "timestamp": "1"}
    signed = hmac.new(b"hush", b"code=c&shop=evil.com&state=s&timestamp=1", hashlib.sha256).hexdigest()
    assert not shopify.verify_callback({**query, "hmac": signed})


async def test_install_flow_through_the_fake(client: ShopifyClient, fake: FakeShopify) -> None:
    oauth: OAuthClient = client.for_shop(SMALL)
    async with httpx.AsyncClient() as browser:
        consent = await browser.get(oauth.authorize_url(state="n0nce", redirect_uri=REDIRECT))
    assert consent.status_code == 302
    callback = {k: v[0] for k, v in parse_qs(urlsplit(consent.headers["location"]).query).items()}
    assert callback["state"] == "n0nce"
    assert callback["shop"] == SMALL
    assert client.verify_callback(callback)
    assert not client.verify_callback({**callback, "shop": BIG})

    token = await oauth.exchange_code(code=callback["code"], redirect_uri=REDIRECT)

    assert token.access_token == fake.shop(SMALL).access_token
    assert token.account_id == SMALL
    assert token.scopes == SCOPES
    assert missing_scopes(token.scopes) == ()
    exchange = fake.requests_to("/admin/oauth/access_token")[0]
    assert exchange.method == "POST"
    with pytest.raises(ProviderError) as reused:
        await oauth.exchange_code(code=callback["code"], redirect_uri=REDIRECT)
    assert reused.value.kind == "permanent"
    assert callback["code"] not in str(reused.value)


async def test_refresh_is_permanent(client: ShopifyClient) -> None:
    with pytest.raises(ProviderError) as caught:
        await client.for_shop(SMALL).refresh("anything")
    assert caught.value.kind == "permanent"


async def test_revoke_uninstalls_and_is_idempotent(client: ShopifyClient, fake: FakeShopify) -> None:
    shop = fake.shop(UNINSTALL)
    token = TokenSet(access_token=shop.access_token, account_id=UNINSTALL)
    assert len(await read_all(client, shop)) == 3

    await client.for_shop(UNINSTALL).revoke(token)
    await client.revoke(token)  # the token is already refused: nothing left to do

    calls = fake.requests_to("/admin/api_permissions/current.json")
    assert [(c.method, c.status) for c in calls] == [("DELETE", 200), ("DELETE", 401)]
    with pytest.raises(ProviderError) as caught:
        await read_all(client, shop)
    assert caught.value.kind == "auth"
    with pytest.raises(ProviderError):
        await client.for_shop(SMALL).revoke(token)  # a token of another shop


def test_missing_scopes() -> None:
    assert missing_scopes(["write_products", "read_inventory"]) == ("read_locations",)
    assert missing_scopes(["write_products", "read_inventory", "read_locations"]) == ()


# --- webhooks ---


def test_webhook_hmac() -> None:
    body = b'{"id":788032119674292922,"title":"Example T-Shirt"}'
    header = base64.b64encode(hmac.new(CLIENT_SECRET.encode(), body, hashlib.sha256).digest()).decode()

    assert verify_webhook(client_secret=CLIENT_SECRET, body=body, hmac_header=header)
    assert not verify_webhook(client_secret=CLIENT_SECRET, body=body + b" ", hmac_header=header)
    assert not verify_webhook(client_secret="another-secret", body=body, hmac_header=header)
    assert not verify_webhook(client_secret=CLIENT_SECRET, body=body, hmac_header=None)
    assert not verify_webhook(client_secret=CLIENT_SECRET, body=body, hmac_header="")
    assert not verify_webhook(client_secret=CLIENT_SECRET, body=body, hmac_header="not base64!")
    hex_digest = hmac.new(CLIENT_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert not verify_webhook(client_secret=CLIENT_SECRET, body=body, hmac_header=hex_digest)


async def test_webhook_subscriptions_are_created_once_per_topic(
    client: ShopifyClient, fake: FakeShopify
) -> None:
    shop = fake.shop(SMALL)
    address = "https://hooks.brandvx.test/webhooks/shopify"
    assert await client.subscribe_webhooks(SMALL, shop.access_token, address) == list(WEBHOOK_TOPICS)
    # Installed again (a reconnect): Shopify answers 422 for each existing subscription, which is kept.
    assert await client.subscribe_webhooks(SMALL, shop.access_token, address) == []
    assert sorted(w["topic"] for w in shop.webhooks) == sorted(WEBHOOK_TOPICS)
    with pytest.raises(ProviderError) as refused:
        await client.subscribe_webhooks(SMALL, "shpat_wrong", address)
    assert refused.value.kind == "auth"
