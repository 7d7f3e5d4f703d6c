"""ASGI application factory: ``uvicorn --factory brandvx.app:create_app``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute

from brandvx.explorer import explorer_static_mount
from brandvx.graphql_view import GraphQLView
from brandvx.ops import MetricsMiddleware, health, metrics, ready
from brandvx.provider_routes import provider_routes
from brandvx.runtime import Runtime, build_runtime, worker_runtime
from brandvx.settings import Settings
from brandvx.telemetry import configure_logging, configure_sentry, freeze_startup_objects
from jobs.worker import build_worker
from schema import build_schema

log = logging.getLogger("brandvx.app")

REVOCATIONS_SUBSCRIBE_SECONDS = 5.0
CORS_REQUEST_HEADERS = [
    "authorization",
    "content-type",
    "accept",
    "x-tenant-id",
    "x-api-key",
    "apollo-require-preflight",
    "x-brandvx-csrf",
]


async def _root(_: object) -> Response:
    return RedirectResponse("/graphql")


def cors_middleware(settings: Settings) -> Middleware:
    """Browsers on BRANDVX_ALLOWED_ORIGINS may call the API (with credentials); others get no
    Access-Control-Allow-Origin, so their scripts cannot read answers."""
    return Middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_methods=["GET", "POST"],
        allow_headers=CORS_REQUEST_HEADERS,
        allow_credentials=True,
        expose_headers=["Retry-After", "WWW-Authenticate"],
        max_age=settings.cors_max_age_seconds,
    )


def create_app(settings: Settings | None = None, *, inline_worker: bool | None = None) -> Starlette:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    configure_sentry(settings)
    schema = build_schema(
        max_depth=settings.max_query_depth,
        max_aliases=settings.max_aliases,
        max_tokens=settings.max_query_tokens,
        max_fields=settings.max_query_fields,
        introspection=settings.introspection,
    )
    graphql = GraphQLView(
        schema,
        max_body_bytes=settings.max_body_bytes,
        allowed_origins=settings.allowed_origins,
        body_timeout_seconds=settings.body_timeout_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime: Runtime = await asyncio.to_thread(build_runtime, settings)
        app.state.runtime = runtime
        app.state.sockets = graphql.sockets
        subscribed = asyncio.Event()
        runtime.background.append(
            asyncio.create_task(
                runtime.revocations.listen(graphql.sockets.close_api_key, subscribed=subscribed),
                name="api-key-revocations",
            )
        )
        # Subscribed before serving, so a revocation right after start-up reaches this process; a
        # Redis that is down does not hold start-up (the listener keeps trying).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(subscribed.wait(), REVOCATIONS_SUBSCRIBE_SECONDS)
        run_worker = next(
            (v for v in (inline_worker, settings.inline_worker) if v is not None),
            runtime.embedded is not None,
        )
        if run_worker:
            resolved = runtime.settings
            worker = build_worker(
                redis_url=resolved.redis_url or "",
                queue_name=resolved.arq_queue,
                key_prefix=resolved.key_prefix,
                make_runtime=lambda: worker_runtime(resolved),
                handle_signals=False,
                sync_timeout_seconds=resolved.sync_job_timeout_seconds,
                reply_timeout_seconds=int(resolved.ai_timeout_seconds) + 10,
            )
            runtime.background.append(asyncio.create_task(worker.async_run(), name="arq-worker"))
        freeze_startup_objects()
        try:
            yield
        finally:
            await runtime.aclose()

    return Starlette(
        routes=[
            Route("/", _root),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            explorer_static_mount(),
            Route("/health", health),
            Route("/ready", ready),
            Route("/metrics", metrics),
            *provider_routes(),
        ],
        middleware=[cors_middleware(settings), Middleware(MetricsMiddleware)],
        lifespan=lifespan,
    )
