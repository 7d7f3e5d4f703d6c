"""/health, /ready and /metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brandvx.runtime import Runtime
from jobs.worker import heartbeat_key
from persistence.availability import OUTAGES
from persistence.migrate import head_revision
from persistence.outbox import outbox_stats

CHECK_TIMEOUT_SECONDS = 2.0

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_DEPTH = Gauge("brandvx_outbox_depth", "Outbox items not yet handed to the queue (all deployments)")
OUTBOX_OLDEST = Gauge("brandvx_outbox_oldest_age_seconds", "Age of the oldest outbox item not yet relayed")
DEAD_LETTERS = Gauge("brandvx_dead_letters", "Outbox items that finally failed (see `brandvx dead-letters`)")


def _error(exc: BaseException) -> str:
    # Exception class only: messages can carry hosts, users or paths.
    return f"error: {type(exc).__name__}" if not isinstance(exc, TimeoutError) else "error: timeout"


async def _check(coro: Any) -> str:
    try:
        result = await asyncio.wait_for(coro, CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        return _error(exc)
    return result if isinstance(result, str) else "ok"


async def health(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings

    async def worker() -> str:
        beat = await runtime.redis.get(heartbeat_key(settings.key_prefix))
        return "ok" if beat else "error: no worker heartbeat in the last 30 s"

    database, redis, worker_state = await asyncio.gather(
        _check(runtime.db.ping()), _check(runtime.redis.ping()), _check(worker())
    )
    checks = {
        "database": database,
        "redis": redis,
        "worker": worker_state,
        "ai": "ok" if settings.openai_api_key else "disabled",
        "sentry": "ok" if settings.sentry_dsn else "disabled",
        "posthog": "ok" if settings.posthog_api_key else "disabled",
    }
    essential_ok = database == "ok" and redis == "ok"
    status = "ok" if all(v in ("ok", "disabled") for v in checks.values()) else "degraded"
    return JSONResponse(
        {"status": status if essential_ok else "error", "checks": checks},
        status_code=200 if essential_ok else 503,
    )


async def ready(request: Request) -> JSONResponse:
    """503 until every server this process needs answers and the database has this build's migrations.

    Redis counts: subscriptions and starting jobs need it. While it is unreachable, queries and
    mutations still work (rate limited by this process's in-memory fallback), and the body says so."""
    runtime: Runtime = request.app.state.runtime
    expected = head_revision()
    revision, redis = await asyncio.gather(
        asyncio.wait_for(runtime.db.schema_revision(), CHECK_TIMEOUT_SECONDS),
        _check(runtime.redis.ping()),
        return_exceptions=True,
    )
    budget = runtime.app_services.budget
    if redis == "ok":
        OUTAGES["redis"].recovered()
        limiter = "redis" if budget is not None else "off"
    else:
        limiter = "memory (Redis unavailable: per-process fallback)" if budget is not None else "off"
    body: dict[str, Any] = {
        "checks": {
            "database": _error(revision) if isinstance(revision, BaseException) else "ok",
            "redis": redis,
        },
        "rateLimiter": limiter,
    }
    if isinstance(revision, BaseException):
        return JSONResponse(
            {"ready": False, "reason": f"database {_error(revision)}", **body}, status_code=503
        )
    if revision != expected:
        return JSONResponse(
            {"ready": False, "reason": "migrations not applied: run `brandvx migrate`", **body},
            status_code=503,
        )
    if redis != "ok":
        reason = f"redis {redis}: subscriptions and new jobs wait for it; queries and mutations still work"
        return JSONResponse({"ready": False, "reason": reason, **body}, status_code=503)
    return JSONResponse({"ready": True, "schemaRevision": revision, **body})


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:  # read at scrape time, so every replica reports the same numbers
        stats = await asyncio.wait_for(outbox_stats(runtime.db.engine), CHECK_TIMEOUT_SECONDS)
    except Exception:  # the database is down: /health says so; the other metrics still answer
        stats = None
    if stats is not None:
        OUTBOX_DEPTH.set(stats.depth)
        OUTBOX_OLDEST.set(stats.oldest_age_seconds)
        DEAD_LETTERS.set(stats.dead_letters)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts and times requests by route template (never by raw path: ids would explode cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(name, scope["method"], str(status)).inc()
            HTTP_LATENCY.labels(name, scope["method"]).observe(time.perf_counter() - started)
