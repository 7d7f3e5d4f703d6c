"""Shopify webhooks: subscribed at install through the Admin API (the fake checks the token), served at
``/webhooks/shopify``, verified with the app's client secret over the raw body, matched by shop,
deduplicated by webhook id, and only ever nudges: the inventory sync re-reads the shop, so deliveries
in any order end in what Shopify has. Every topic signed, forged, altered, duplicated, out of order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text

from brandvx.runtime import worker_runtime
from brandvx.settings import Settings
from domain.model import Provider
from integrations.shopify import PRIVACY_TOPICS, WEBHOOK_TOPICS
from jobs.context import WorkerRuntime
from jobs.syncs import SYSTEM_ROLE, sync_inventory
from schema.common import from_global_id
from tests.conftest import TenantFixture, app_client, gql, make_tenant
from tests.fakes.shopify_server import FakeShop, FakeShopify, generate_shop

PUBLIC_URL = "https://hooks.brandvx.test"
SHOP = "hook-salon.myshopify.com"
STRANGER = "never-installed.myshopify.com"
CHANGE_TOPICS = ("inventory_levels/update", "products/update", "products/delete")

CONNECT = """
mutation { connectProvider(input: {provider: SHOPIFY}) { authorizeUrl userErrors { message } } }
"""
ACCOUNTS = "{ connectedAccounts { provider status } }"
JOBS = "{ jobs(first: 50) { edges { node { id kind status } } } }"


@dataclass(frozen=True)
class Stack:
    shopify: FakeShopify
    settings: Settings
    http: httpx.AsyncClient
    browser: httpx.AsyncClient
    worker: WorkerRuntime


@pytest.fixture(scope="module")
def shopify() -> Iterator[FakeShopify]:
    with FakeShopify(client_secret="shpss_" + secrets.token_hex(16)) as fake:
        yield fake


@pytest.fixture(scope="module")
async def stack(migrated: Settings, shopify: FakeShopify) -> AsyncIterator[Stack]:
    settings = migrated.model_copy(
        update={
            "public_url": PUBLIC_URL,
            "shopify_client_id": shopify.client_id,
            "shopify_client_secret": shopify.client_secret,
            "shopify_base_url_overrides_raw": f"{SHOP}={shopify.base_url_for(SHOP)}",
        }
    )
    worker = await worker_runtime(settings)
    try:
        async with (
            app_client(settings) as (_, http),
            httpx.AsyncClient(follow_redirects=False, timeout=15) as browser,
        ):
            yield Stack(shopify, settings, http, browser, worker)
    finally:
        await worker.close()


@pytest.fixture
async def shop_tenant(stack: Stack) -> AsyncIterator[tuple[TenantFixture, FakeShop]]:
    """A fresh catalogue for SHOP, installed by a new tenant through the real form + OAuth flow
    (and removed afterwards: a shop's webhooks reach every tenant that connected it)."""
    shop = stack.shopify.add_shop(generate_shop(SHOP, variants=6, locations=1, seed=5))
    tenant = await make_tenant(stack.http, name="Hook Salon")
    body = await gql(stack.http, CONNECT, {}, token=tenant.owner.token, tenant=tenant.uuid)
    form_url = body["data"]["connectProvider"]["authorizeUrl"]
    state = parse_qs(urlsplit(form_url).query)["state"][0]
    posted = await stack.http.post("/connect/shopify", data={"state": state, "shop": SHOP})
    assert posted.status_code == 303, posted.text
    consent = await stack.browser.get(posted.headers["location"])
    assert consent.status_code == 302, consent.text
    back = urlsplit(consent.headers["location"])
    landed = await stack.http.get(f"{back.path}?{back.query}")
    assert landed.status_code == 303, landed.text
    assert "connected=SHOPIFY" in landed.headers["location"]
    yield tenant, shop
    async with stack.worker.db.transaction(tenant_id=uuid.UUID(tenant.uuid), role=SYSTEM_ROLE) as uow:
        await uow.connections.remove(Provider.SHOPIFY)


def _sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


async def deliver(
    s: Stack,
    topic: str,
    payload: dict[str, Any] | None = None,
    *,
    shop: str = SHOP,
    webhook_id: str | None = None,
    secret: str | None = None,
    alter: bool = False,
) -> httpx.Response:
    # app/uninstalled names the shop as myshopify_domain, the privacy topics as shop_domain.
    default = {"id": 1, "myshopify_domain": shop, "shop_domain": shop}
    body = json.dumps(payload or default, separators=(",", ":")).encode()
    signature = _sign(body, secret or s.shopify.client_secret)
    if alter:
        body = body.replace(b"}", b',"available":9999}')
    headers = {
        "content-type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": signature,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-API-Version": "2024-10",
    }
    return await s.http.post("/webhooks/shopify", content=body, headers=headers)


async def jobs_of(s: Stack, tenant: TenantFixture) -> list[dict[str, Any]]:
    body = await gql(s.http, JOBS, {}, token=tenant.owner.token, tenant=tenant.uuid)
    return [edge["node"] for edge in body["data"]["jobs"]["edges"]]


async def db_rows(s: Stack, tenant: TenantFixture, sql: str) -> list[Any]:
    async with s.worker.db.transaction(tenant_id=uuid.UUID(tenant.uuid), role=SYSTEM_ROLE) as uow:
        return list((await uow.connection.execute(text(sql))).all())


def _uuid(job_id: str) -> uuid.UUID:
    decoded = from_global_id(job_id)
    return decoded[1] if decoded is not None else uuid.UUID(job_id)


async def run_inventory(s: Stack, tenant: TenantFixture, job_id: str) -> str:
    ctx: Any = {"runtime": s.worker, "job_try": 1}
    return await sync_inventory(ctx, tenant.uuid, str(_uuid(job_id)), ["SHOPIFY"])


async def stored_variants(s: Stack, tenant: TenantFixture) -> dict[str, int | None]:
    found = await db_rows(
        s, tenant, "SELECT external_id, quantity FROM inventory_items WHERE provider = 'SHOPIFY'"
    )
    return {r[0]: r[1] for r in found}


def shopify_variants(shop: FakeShop) -> dict[str, int | None]:
    return {str(v.id): shop.available(v.inventory_item_id) for v in shop.variants()}


async def test_install_subscribes_the_topics_through_the_admin_api(
    stack: Stack, shop_tenant: tuple[TenantFixture, FakeShop]
) -> None:
    _, shop = shop_tenant
    assert sorted(w["topic"] for w in shop.webhooks) == sorted(WEBHOOK_TOPICS)
    assert {w["address"] for w in shop.webhooks} == {f"{PUBLIC_URL}/webhooks/shopify"}
    calls = stack.shopify.requests_to("/webhooks.json")
    assert all(c.path == "/admin/api/2024-10/webhooks.json" and c.token == shop.access_token for c in calls)


@pytest.mark.parametrize("topic", CHANGE_TOPICS)
async def test_a_signed_change_is_a_nudge_that_enqueues_one_inventory_sync(
    stack: Stack, shop_tenant: tuple[TenantFixture, FakeShop], topic: str
) -> None:
    tenant, _ = shop_tenant
    first = await deliver(stack, topic, {"id": 42, "available": 7})
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "accepted"
    again = await deliver(stack, topic, {"id": 43})  # another change while the first is queued
    assert again.json()["jobIds"] == first.json()["jobIds"]
    # (Another test module's worker on the shared queue may already be running it.)
    assert [(_uuid(j["id"]), j["kind"]) for j in await jobs_of(stack, tenant)] == [
        (_uuid(first.json()["jobIds"][0]), "inventory_sync")
    ]


@pytest.mark.parametrize("topic", [*WEBHOOK_TOPICS, *PRIVACY_TOPICS])
@pytest.mark.parametrize("forgery", ["wrong secret", "altered body", "no signature"])
async def test_forged_or_altered_deliveries_are_refused_and_change_nothing(
    stack: Stack, shop_tenant: tuple[TenantFixture, FakeShop], topic: str, forgery: str
) -> None:
    tenant, _ = shop_tenant
    if forgery == "no signature":
        answer = await stack.http.post(
            "/webhooks/shopify",
            content=b"{}",
            headers={"X-Shopify-Topic": topic, "X-Shopify-Shop-Domain": SHOP, "X-Shopify-Webhook-Id": "x1"},
        )
    else:
        answer = await deliver(
            stack,
            topic,
            secret="shpss_not-the-app-secret" if forgery == "wrong secret" else None,
            alter=forgery == "altered body",
        )
    assert answer.status_code == 401
    assert await jobs_of(stack, tenant) == []
    body = await gql(stack.http, ACCOUNTS, {}, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"]["connectedAccounts"] == [{"provider": "SHOPIFY", "status": "CONNECTED"}]


@pytest.mark.parametrize("topic", [*WEBHOOK_TOPICS, *PRIVACY_TOPICS])
async def test_a_duplicated_delivery_is_acknowledged_once(
    stack: Stack, shop_tenant: tuple[TenantFixture, FakeShop], topic: str
) -> None:
    tenant, _ = shop_tenant
    webhook_id = str(uuid.uuid4())
    first = await deliver(stack, topic, webhook_id=webhook_id)
    assert first.status_code == 200, first.text
    jobs_after_first = [j["id"] for j in await jobs_of(stack, tenant)]
    repeat = await deliver(stack, topic, webhook_id=webhook_id)
    assert (repeat.status_code, repeat.json()) == (200, {"status": "duplicate"})
    assert [j["id"] for j in await jobs_of(stack, tenant)] == jobs_after_first


@pytest.mark.parametrize("topic", [*WEBHOOK_TOPICS, *PRIVACY_TOPICS])
async def test_a_shop_nobody_connected(stack: Stack, topic: str) -> None:
    answer = await deliver(stack, topic, shop=STRANGER)
    if topic in (*PRIVACY_TOPICS, "app/uninstalled"):
        assert (answer.status_code, answer.json()) == (200, {"status": "nothing held"})
    else:
        assert answer.status_code == 404
    assert (await deliver(stack, topic, shop="evil.example.com")).status_code == 400


async def test_out_of_order_deliveries_end_in_what_shopify_has(
    stack: Stack, shop_tenant: tuple[TenantFixture, FakeShop]
) -> None:
    tenant, shop = shop_tenant
    first = await deliver(stack, "products/update")
    assert await run_inventory(stack, tenant, first.json()["jobIds"][0]) == "complete"
    assert await stored_variants(stack, tenant) == shopify_variants(shop)

    # At Shopify: a product updated (stock changed), then deleted. The deletion's webhook arrives first,
    # the older update's after it, carrying stock that no longer exists: neither body is applied.
    gone = shop.products[0]
    shop.levels[gone.variants[0].inventory_item_id] = dict.fromkeys(shop.location_ids, 77)
    shop.products.remove(gone)
    kept = shop.products[0].variants[0]
    shop.levels[kept.inventory_item_id] = dict.fromkeys(shop.location_ids, 3)
    deleted = await deliver(stack, "products/delete", {"id": gone.id})
    stale = await deliver(stack, "products/update", {"id": gone.id, "variants": [{"available": 77}]})
    levels = await deliver(stack, "inventory_levels/update", {"inventory_item_id": kept.inventory_item_id})
    job_ids = {r.json()["jobIds"][0] for r in (deleted, stale, levels)}
    assert len(job_ids) == 1
    assert await run_inventory(stack, tenant, job_ids.pop()) == "complete"
    stored = await stored_variants(stack, tenant)
    assert stored == shopify_variants(shop)
    assert not {str(v.id) for v in gone.variants} & set(stored)
    assert stored[str(kept.id)] == 3


@pytest.mark.parametrize("topic", ["app/uninstalled", "shop/redact"])
async def test_uninstall_and_shop_redact_disconnect_and_erase_the_shop(
    stack: Stack, shop_tenant: tuple[TenantFixture, FakeShop], topic: str
) -> None:
    tenant, shop = shop_tenant
    nudge = await deliver(stack, "products/update")
    assert await run_inventory(stack, tenant, nudge.json()["jobIds"][0]) == "complete"
    queued = (await deliver(stack, "inventory_levels/update")).json()["jobIds"][0]
    assert len(await stored_variants(stack, tenant)) == len(shop.variants())

    answer = await deliver(stack, topic)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "disconnected", "itemsDeleted": len(shop.variants())}
    body = await gql(stack.http, ACCOUNTS, {}, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"]["connectedAccounts"] == []
    assert await stored_variants(stack, tenant) == {}
    # Its syncs stop: the queued one is cancelled (or, if a worker on the shared test queue had
    # already taken it, flagged to stop at its next page).
    [(status, flagged)] = await db_rows(
        stack, tenant, f"SELECT status, cancel_requested FROM jobs WHERE id = '{_uuid(queued)}'"
    )
    assert flagged or status in ("COMPLETED", "FAILED"), status

    # Afterwards the shop is unknown: changes are refused, Shopify's later shop/redact acknowledged.
    assert (await deliver(stack, "products/update")).status_code == 404
    assert (await deliver(stack, "shop/redact")).json() == {"status": "nothing held"}


@pytest.mark.parametrize("topic", ["app/uninstalled", "shop/redact"])
async def test_an_erasing_topic_acts_only_for_the_shop_its_signed_body_names(
    stack: Stack, shop_tenant: tuple[TenantFixture, FakeShop], topic: str
) -> None:
    tenant, _ = shop_tenant
    # A genuine body about another shop (or a product), resent under this shop's unsigned headers.
    for payload in ({"myshopify_domain": STRANGER, "shop_domain": STRANGER}, {"id": 8, "title": "Oil"}):
        answer = await deliver(stack, topic, payload)
        assert answer.status_code == 400, answer.text
    body = await gql(stack.http, ACCOUNTS, {}, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"]["connectedAccounts"] == [{"provider": "SHOPIFY", "status": "CONNECTED"}]


@pytest.mark.parametrize("topic", ["customers/data_request", "customers/redact"])
async def test_customer_privacy_requests_are_acknowledged_with_nothing_held(
    stack: Stack, shop_tenant: tuple[TenantFixture, FakeShop], topic: str
) -> None:
    tenant, shop = shop_tenant
    payload = {
        "shop_domain": SHOP,
        "customer": {"id": 1, "email": "client@example.com"},
        "orders_requested": [],
    }
    answer = await deliver(stack, topic, payload)
    assert (answer.status_code, answer.json()) == (200, {"status": "nothing held"})
    assert await jobs_of(stack, tenant) == []
    body = await gql(stack.http, ACCOUNTS, {}, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"]["connectedAccounts"] == [{"provider": "SHOPIFY", "status": "CONNECTED"}]
    assert shop.webhooks  # still installed
