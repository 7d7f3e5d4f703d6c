"""Provider-facing HTTP: OAuth callbacks, the credential forms we host, and signed webhooks."""

from __future__ import annotations

import hashlib
import html
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from brandvx.runtime import Runtime
from domain import jobs
from domain.errors import DomainError
from domain.model import JobStatus, Provider
from persistence.sync_repos import first_seen_webhook, forget_webhook, tenants_for_account

log = logging.getLogger("brandvx.providers")

MAX_WEBHOOK_BYTES = 256 * 1024
WEBHOOK_MAX_AGE = timedelta(minutes=5)
ACUITY_DEDUPE_SECONDS = 600

_FORMS: dict[Provider, tuple[str, list[tuple[str, str, str]]]] = {
    Provider.APPLE: (
        "Connect Apple Calendar",
        [("username", "Apple ID (email)", "email"), ("password", "App-specific password", "password")],
    ),
    Provider.ACUITY: (
        "Connect Acuity Scheduling",
        [("user_id", "Acuity user ID", "text"), ("api_key", "API key", "password")],
    ),
    Provider.SHOPIFY: ("Connect Shopify", [("shop", "Shop domain (your-shop.myshopify.com)", "text")]),
}


_STYLE = (
    "body{font-family:system-ui;max-width:28rem;margin:3rem auto;padding:0 1rem}"
    "label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem}"
    "button{margin-top:1rem;padding:.5rem 1rem}.error{color:#a00}"
)


def _provider(request: Request) -> Provider | None:
    try:
        return Provider(str(request.path_params["provider"]).upper())
    except ValueError:
        return None


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<meta name='viewport' content='width=device-width'><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"},
    )


async def oauth_callback(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    provider = _provider(request)
    if provider is None:
        return _page(
            "Unknown provider", "<p>This connection link is not for a provider BrandVX supports.</p>", 404
        )
    params = request.query_params
    state, code = params.get("state"), params.get("code")
    if params.get("error") or not state or not code:
        # The operator declined at the provider, or the provider reported an error.
        return RedirectResponse(
            runtime.connect.landing(None, provider, ok=False, error="declined"), status_code=303
        )
    shop = params.get("shop")
    if provider is Provider.SHOPIFY:
        client = runtime.providers.client(Provider.SHOPIFY)
        if not client.verify_callback(dict(params)):
            return _page("Connection failed", "<p>The Shopify callback was not signed correctly.</p>", 400)
    try:
        target = await runtime.connect.complete_oauth(provider, state, code, shop=shop)
    except DomainError as exc:
        log.info("%s OAuth callback refused: %s", provider.value, exc.message)
        return _page("Connection failed", f"<p class='error'>{html.escape(exc.message)}</p>", 400)
    return RedirectResponse(target, status_code=303)


async def connect_form(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    provider = _provider(request)
    if provider is None or provider not in _FORMS:
        return _page("Not found", "<p>Nothing to connect here.</p>", 404)
    title, fields = _FORMS[provider]
    token = request.query_params.get("state", "")
    error = ""
    if request.method == "POST":
        form = await request.form()
        token = str(form.get("state", ""))
        values = {name: str(form.get(name, "")) for name, _, _ in fields}
        try:
            target = await runtime.connect.complete_form(provider, token, values)
        except DomainError as exc:
            if provider is not Provider.SHOPIFY:
                # The link was spent checking these credentials: a new attempt needs a new link.
                return _page(
                    title,
                    f"<p class='error'>{html.escape(exc.message)}</p>"
                    "<p>Go back to BrandVX and start connecting again.</p>",
                    400,
                )
            error = exc.message
        else:
            return RedirectResponse(target, status_code=303)
    else:
        try:
            await runtime.connect.peek(token, provider)
        except DomainError as exc:
            return _page(title, f"<p class='error'>{html.escape(exc.message)}</p>", 400)
    inputs = "".join(
        f"<label for='{name}'>{html.escape(label)}</label>"
        f"<input id='{name}' name='{name}' type='{kind}' required>"
        for name, label, kind in fields
    )
    notice = f"<p class='error'>{html.escape(error)}</p>" if error else ""
    return _page(
        title,
        f"{notice}<form method='post'><input type='hidden' name='state' value='{html.escape(token)}'>"
        f"{inputs}<button type='submit'>Connect</button></form>",
        400 if error else 200,
    )


async def _raw_body(request: Request) -> bytes | None:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_WEBHOOK_BYTES):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WEBHOOK_BYTES:
            return None
    return bytes(body)


async def _enqueue_sync(runtime: Runtime, tenant_id: uuid.UUID, provider: Provider) -> str | None:
    async with runtime.db.transaction(tenant_id=tenant_id, role="SYSTEM") as uow:
        dedupe = f"calendar_sync:{provider.value}"
        job = await jobs.create_job(
            uow, tenant_id, kind="calendar_sync", dedupe_key=dedupe, args={"providers": [provider.value]}
        )
    if job.status is JobStatus.PENDING:
        await runtime.queue.enqueue(
            "sync_calendar", str(tenant_id), str(job.id), [provider.value], job_id=f"sync:{job.id}"
        )
    return str(job.id)


async def square_webhook(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    body = await _raw_body(request)
    if body is None:
        return JSONResponse({"error": "body too large"}, status_code=413)
    key = settings.square_webhook_signature_key
    if not key:
        return JSONResponse({"error": "Square webhooks are not configured"}, status_code=503)
    from integrations.square import verify_webhook

    # Square signs the URL it was configured with, not the (possibly proxied) URL we see.
    url = f"{settings.public_url.rstrip('/')}/webhooks/square"
    signature = request.headers.get("x-square-hmacsha256-signature")
    if not verify_webhook(signature_key=key, notification_url=url, body=body, signature=signature):
        return JSONResponse({"error": "invalid signature"}, status_code=401)
    try:
        event: dict[str, Any] = orjson.loads(body)
        event_id, merchant = str(event["event_id"]), str(event["merchant_id"])
        created = datetime.fromisoformat(str(event["created_at"]).replace("Z", "+00:00"))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return JSONResponse({"error": "not a Square event"}, status_code=400)
    if created.tzinfo is None:
        return JSONResponse({"error": "created_at needs a timezone"}, status_code=400)
    if abs(datetime.now(UTC) - created) > WEBHOOK_MAX_AGE:
        return JSONResponse({"error": "stale event (replayed?)"}, status_code=400)
    async with runtime.db.engine.connect() as conn:
        tenants = await tenants_for_account(conn, Provider.SQUARE, merchant)
        fresh = await first_seen_webhook(conn, Provider.SQUARE, event_id)
        await conn.commit()
    if not fresh:
        return JSONResponse({"status": "duplicate", "eventId": event_id}, status_code=409)
    if not tenants:
        return JSONResponse({"status": "ignored", "reason": "unknown merchant"})
    if not str(event.get("type", "")).startswith(("booking.", "customer.")):
        return JSONResponse({"status": "ignored", "reason": "not a booking or customer event"})
    try:
        job_ids = [await _enqueue_sync(runtime, tenant, Provider.SQUARE) for tenant in tenants]
    except Exception:
        # Not handed on: forget the event so Square's retry is processed, not refused as a duplicate.
        async with runtime.db.engine.connect() as conn:
            await forget_webhook(conn, Provider.SQUARE, event_id)
            await conn.commit()
        raise
    return JSONResponse({"status": "accepted", "jobIds": job_ids})


async def acuity_webhook(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    body = await _raw_body(request)
    if body is None:
        return JSONResponse({"error": "body too large"}, status_code=413)
    from domain.connections import open_tokens
    from integrations.acuity import parse_webhook, verify_webhook

    account = request.query_params.get("account", "")
    async with runtime.db.engine.connect() as conn:
        tenants = await tenants_for_account(conn, Provider.ACUITY, account) if account else []
    signature = request.headers.get("x-acuity-signature")
    verified: list[uuid.UUID] = []
    for tenant_id in tenants:
        async with runtime.db.transaction(tenant_id=tenant_id, role="SYSTEM") as uow:
            connection = await uow.connections.get(Provider.ACUITY)
        if connection is None:
            continue
        # Acuity signs with the account's API key; an OAuth app's webhooks with the app secret.
        signing_key = (
            open_tokens(runtime.vault.keyring, tenant_id, connection).access_token
            if connection.config.get("mode") == "basic"
            else runtime.settings.acuity_client_secret or ""
        )
        if signing_key and verify_webhook(api_key=signing_key, body=body, signature=signature):
            verified.append(tenant_id)
    if not verified:
        # The same answer for an unknown account as for a bad signature: no account enumeration.
        return JSONResponse({"error": "invalid signature"}, status_code=401)
    try:
        action, appointment_id = parse_webhook(body)
    except ValueError:
        return JSONResponse({"error": "not an Acuity webhook"}, status_code=400)
    # Acuity sends no event id or timestamp: the same action on the same appointment within a few
    # minutes is a retry or a replay, and is not processed twice.
    digest = hashlib.sha256(f"{account}:{action}:{appointment_id}".encode()).hexdigest()
    dedupe_key = f"{runtime.settings.key_prefix}webhook:acuity:{digest}"
    if not await runtime.redis.set(dedupe_key, "1", nx=True, ex=ACUITY_DEDUPE_SECONDS):
        return JSONResponse({"status": "duplicate"}, status_code=409)
    try:
        job_ids = [await _enqueue_sync(runtime, tenant, Provider.ACUITY) for tenant in verified]
    except Exception:
        await runtime.redis.delete(dedupe_key)
        raise
    return JSONResponse({"status": "accepted", "jobIds": job_ids})


def provider_routes() -> list[Route]:
    return [
        Route("/oauth/{provider}/callback", oauth_callback, methods=["GET"]),
        Route("/connect/{provider}", connect_form, methods=["GET", "POST"]),
        Route("/webhooks/square", square_webhook, methods=["POST"]),
        Route("/webhooks/acuity", acuity_webhook, methods=["POST"]),
    ]
