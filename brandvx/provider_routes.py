"""Provider-facing HTTP: OAuth callbacks, the credential forms we host, and signed webhooks."""

from __future__ import annotations

import html
import logging

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from brandvx.runtime import Runtime
from brandvx.webhook_inbox import RuntimeWebhookInbox
from domain import webhooks
from domain.errors import DomainError
from domain.model import Provider
from domain.providers import InboundWebhook

log = logging.getLogger("brandvx.providers")

MAX_WEBHOOK_BYTES = 256 * 1024

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
    if not runtime.connect.callback_signed(provider, dict(params)):
        return _page(
            "Connection failed",
            f"<p>The {html.escape(provider.value.title())} callback was not signed correctly.</p>",
            400,
        )
    try:
        target = await runtime.connect.complete_oauth(provider, state, code, dict(params))
    except DomainError as exc:
        log.info("%s OAuth callback refused: %s", provider.value, exc.message)
        return _page("Connection failed", f"<p class='error'>{html.escape(exc.message)}</p>", 400)
    return RedirectResponse(target, status_code=303)


async def connect_form(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    provider = _provider(request)
    spec = runtime.connect.form(provider) if provider else None
    if provider is None or spec is None:
        return _page("Not found", "<p>Nothing to connect here.</p>", 404)
    title = spec.title
    token = request.query_params.get("state", "")
    error = ""
    if request.method == "POST":
        form = await request.form()
        token = str(form.get("state", ""))
        values = {f.name: str(form.get(f.name, "")) for f in spec.fields}
        try:
            target = await runtime.connect.complete_form(provider, token, values)
        except DomainError as exc:
            if spec.spends_link:
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
        f"<label for='{f.name}'>{html.escape(f.label)}</label>"
        f"<input id='{f.name}' name='{f.name}' type='{f.kind}' required>"
        for f in spec.fields
    )
    notice = f"<p class='error'>{html.escape(error)}</p>" if error else ""
    return _page(
        title,
        f"{notice}<form method='post'><input type='hidden' name='state' value='{html.escape(token)}'>"
        f"{inputs}<button type='submit'>Connect</button></form>",
        400 if error else 200,
    )


async def raw_body(request: Request) -> bytes | None:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_WEBHOOK_BYTES):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WEBHOOK_BYTES:
            return None
    return bytes(body)


_WEBHOOK_STATUS = {"unconfigured": 503, "unauthorized": 401, "malformed": 400, "duplicate": 409}


async def webhook(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    provider = _provider(request)
    adapter = runtime.providers.adapter(provider) if provider else None
    if provider is None or adapter is None or adapter.webhooks is None:
        return JSONResponse({"error": "no webhooks for this provider"}, status_code=404)
    body = await raw_body(request)
    if body is None:
        return JSONResponse({"error": "body too large"}, status_code=413)
    hook = InboundWebhook(
        body=body,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
    )
    answer = await webhooks.receive(provider, adapter.webhooks, hook, RuntimeWebhookInbox(runtime))
    if answer.verdict == "accepted":
        return JSONResponse({"status": "accepted", "jobIds": answer.job_ids})
    if answer.verdict == "unverified":
        # Taken as a rate-limited nudge (or dropped); the same answer whoever sent it.
        return JSONResponse({"status": "accepted", "verified": False}, status_code=202)
    if answer.verdict == "ignored":
        return JSONResponse({"status": "ignored", "reason": answer.message})
    status = _WEBHOOK_STATUS[answer.verdict]
    if answer.verdict == "duplicate":
        content = {"status": "duplicate"} | ({"eventId": answer.event_id} if answer.event_id else {})
        return JSONResponse(content, status_code=status)
    return JSONResponse({"error": answer.message}, status_code=status)


def provider_routes() -> list[Route]:
    from brandvx.shopify_webhooks import shopify_webhook

    return [
        Route("/oauth/{provider}/callback", oauth_callback, methods=["GET"]),
        Route("/connect/{provider}", connect_form, methods=["GET", "POST"]),
        # Before the generic route: Shopify's topics also disconnect and erase, not only nudge a sync.
        Route("/webhooks/shopify", shopify_webhook, methods=["POST"]),
        Route("/webhooks/{provider}", webhook, methods=["POST"]),
    ]
