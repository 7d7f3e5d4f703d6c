"""``POST /webhooks/shopify``: Shopify's webhooks, verified on the raw body, deduplicated, and only
ever taken as nudges.

Verification: ``X-Shopify-Hmac-Sha256`` is base64 HMAC-SHA256 of the raw body with the app's client
secret (constant-time compare) — a forged or altered delivery gets 401 and changes nothing. The shop
is ``X-Shopify-Shop-Domain`` (a ``*.myshopify.com`` domain, else 400), matched to the tenants that
connected it; the delivery is deduplicated by ``X-Shopify-Webhook-Id`` (a repeat answers 200
``duplicate`` so Shopify stops retrying, and does nothing). The topic and shop headers are not signed,
so ``app/uninstalled`` and ``shop/redact`` act only when their body names the same shop.

Nothing is taken from a body. ``inventory_levels/update``, ``products/update`` and
``products/delete`` enqueue one Shopify inventory sync per tenant (the queued one if there is one),
which re-reads the shop through the Admin API: deliveries may come in any order, the result is what
Shopify has when the sync runs. ``app/uninstalled`` removes the tenant's Shopify connection, cancels
its queued or running syncs and deletes the inventory synced from the shop (it could never be
refreshed again, and stale stock would raise false low-stock alerts). Privacy webhooks:
``customers/data_request`` and ``customers/redact`` are acknowledged — BrandVX syncs no Shopify
customers, so it holds nothing to report or erase; ``shop/redact`` does what ``app/uninstalled``
does, for a shop still connected. For a shop no tenant has connected, the change topics answer 404;
the privacy topics and ``app/uninstalled`` answer 200, since nothing is held for it (Shopify sends
``shop/redact`` 48 hours after the uninstall that removed the connection).
"""

from __future__ import annotations

import logging
import uuid
from typing import Final

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from brandvx.provider_routes import raw_body
from brandvx.runtime import Runtime
from brandvx.webhook_inbox import RuntimeWebhookInbox
from domain import connections
from domain.model import Provider
from integrations.shopify.client import (
    PRIVACY_TOPICS,
    WEBHOOK_TOPICS,
    InvalidShopDomain,
    normalize_shop,
    verify_webhook,
)
from persistence.sync_repos import seen_webhook

log = logging.getLogger("brandvx.providers.shopify")

NUDGE_TOPICS: Final = frozenset(WEBHOOK_TOPICS) - {"app/uninstalled"}
# Notices about a shop we hold nothing for (any more): answered 200 so Shopify stops retrying.
ACKNOWLEDGED_WHEN_UNKNOWN: Final = frozenset(PRIVACY_TOPICS) | {"app/uninstalled"}
ERASING_TOPICS: Final = frozenset({"app/uninstalled", "shop/redact"})
MAX_WEBHOOK_ID = 200


async def shopify_webhook(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    body = await raw_body(request)
    if body is None:
        return JSONResponse({"error": "body too large"}, status_code=413)
    secret = runtime.settings.shopify_client_secret
    if not secret:
        return JSONResponse({"error": "Shopify webhooks are not configured"}, status_code=503)
    if not verify_webhook(
        client_secret=secret, body=body, hmac_header=request.headers.get("x-shopify-hmac-sha256")
    ):
        return JSONResponse({"error": "invalid signature"}, status_code=401)
    topic = request.headers.get("x-shopify-topic", "")
    webhook_id = request.headers.get("x-shopify-webhook-id", "")
    try:
        shop = normalize_shop(request.headers.get("x-shopify-shop-domain", ""))
    except InvalidShopDomain:
        return JSONResponse({"error": "X-Shopify-Shop-Domain is not a shop domain"}, status_code=400)
    if not webhook_id or len(webhook_id) > MAX_WEBHOOK_ID or not webhook_id.isprintable():
        return JSONResponse({"error": "X-Shopify-Webhook-Id is missing or invalid"}, status_code=400)
    if topic not in NUDGE_TOPICS and topic != "app/uninstalled" and topic not in PRIVACY_TOPICS:
        return JSONResponse({"error": "unsupported topic"}, status_code=400)
    if topic in ERASING_TOPICS and _shop_in_body(body) != shop:
        # The topic and shop headers are not signed: a genuine body of another event or shop, resent
        # under these headers, must not disconnect anyone.
        return JSONResponse({"error": "the body does not name this shop"}, status_code=400)
    inbox = RuntimeWebhookInbox(runtime)
    tenants = await inbox.tenants_for_account(Provider.SHOPIFY, shop)
    if tenants:
        fresh = await inbox.first_seen(Provider.SHOPIFY, webhook_id, window_seconds=None)
    else:
        # A retry of a delivery already handled (the uninstall that removed the shop) is a duplicate.
        async with runtime.db.engine.connect() as conn:
            fresh = not await seen_webhook(conn, Provider.SHOPIFY, webhook_id)
    if not fresh:
        return JSONResponse({"status": "duplicate"})
    if not tenants:
        if topic in ACKNOWLEDGED_WHEN_UNKNOWN:
            log.info("shopify %s for a shop no tenant has connected: nothing held", topic)
            return JSONResponse({"status": "nothing held"})
        return JSONResponse({"error": "unknown shop"}, status_code=404)
    try:
        outcome = await _handle(runtime, inbox, topic, tenants)
    except Exception:
        # Not handled: forget the delivery so Shopify's retry is processed, not taken as a duplicate.
        await inbox.forget(Provider.SHOPIFY, webhook_id, window_seconds=None)
        raise
    log.info("shopify %s for %d tenant(s): %s", topic, len(tenants), outcome.get("status"))
    return JSONResponse(outcome)


def _shop_in_body(body: bytes) -> str | None:
    """The shop an app/uninstalled (``myshopify_domain``) or shop/redact (``shop_domain``) body names."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    named = data.get("myshopify_domain") or data.get("shop_domain")
    try:
        return normalize_shop(named) if isinstance(named, str) else None
    except InvalidShopDomain:
        return None


async def _handle(
    runtime: Runtime, inbox: RuntimeWebhookInbox, topic: str, tenants: list[uuid.UUID]
) -> dict[str, object]:
    if topic in NUDGE_TOPICS:
        job_ids = [await inbox.request_sync(tenant, Provider.SHOPIFY, "inventory") for tenant in tenants]
        return {"status": "accepted", "jobIds": job_ids}
    if topic in ("customers/data_request", "customers/redact"):
        # No Shopify customer data is synced or stored: nothing to report and nothing to erase.
        return {"status": "nothing held"}
    erased = 0  # app/uninstalled, shop/redact
    for tenant in tenants:
        async with runtime.db.transaction(tenant_id=tenant, role="SYSTEM") as uow:
            erased += await connections.erase_provider_data(uow, Provider.SHOPIFY)
    return {"status": "disconnected", "itemsDeleted": erased}
