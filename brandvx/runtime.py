"""Build (and tear down) everything a process needs: servers, pools, clients."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from brandvx.auth import Authenticator
from brandvx.dev_secrets import with_dev_secrets
from brandvx.embedded import EmbeddedServers
from brandvx.settings import Settings
from brandvx.telemetry import freeze_startup_objects
from domain.ai import ChatModel
from domain.connect import ConnectFlow, ConnectUrls, state_key
from domain.contacts import PiiVault
from domain.crypto import BlindIndex, Keyring
from integrations.auth_jwt import JwtVerifier
from integrations.openai_responses import OfflineChatModel, OpenAIChatModel
from integrations.posthog_analytics import NoAnalytics, PostHogAnalytics
from integrations.registry import ProviderClients, ProviderSettings
from jobs.context import JobSettings, WorkerRuntime
from jobs.queue import ArqQueue
from persistence.db import Database
from persistence.events import READ_BLOCK_MS, ChatReplyFeed, EventStreams, JobEventFeed
from persistence.nonces import RedisNonces
from persistence.outbox import OutboxRelay
from persistence.ratelimit import FallbackCostBudget, MemoryCostBudget, RedisCostBudget
from persistence.revocations import RedisKeyRevocations
from persistence.urls import runtime_url, to_asyncpg
from resolvers.context import AppServices

log = logging.getLogger("brandvx.runtime")

REDIS_CONNECT_TIMEOUT_SECONDS = 2
MEMORY_LIMITER_KEYS = 10_000


def resolve_servers(settings: Settings, *, redis: bool = True) -> tuple[Settings, EmbeddedServers | None]:
    """Start embedded servers for whatever DATABASE_URL / REDIS_URL leave unset."""
    need_pg, need_redis = settings.database_url is None, redis and settings.redis_url is None
    if not (need_pg or need_redis):
        return settings, None
    embedded = EmbeddedServers.start(settings.data_dir, postgres=need_pg, redis=need_redis)
    return (
        settings.model_copy(
            update={
                "database_url": settings.database_url or embedded.database_url,
                "redis_url": settings.redis_url or embedded.redis_url,
            }
        ),
        embedded,
    )


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: Redis
    verifier: JwtVerifier | None
    authenticator: Authenticator
    app_services: AppServices
    events: EventStreams
    queue: ArqQueue
    model: ChatModel
    analytics: PostHogAnalytics | NoAnalytics
    vault: PiiVault
    providers: ProviderClients
    connect: ConnectFlow
    revocations: RedisKeyRevocations
    embedded: EmbeddedServers | None = None
    anonymous_budget: FallbackCostBudget | None = None  # per client address, for requests without credentials
    background: list[asyncio.Task[Any]] = field(default_factory=list)

    async def aclose(self) -> None:
        for task in self.background:
            task.cancel()
        for task in self.background:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                log.debug("background task ended", exc_info=True)
        if self.verifier is not None:
            await self.verifier.aclose()
        await self.queue.aclose()
        await self.providers.aclose()
        closer = getattr(self.model, "aclose", None)
        if closer is not None:
            await closer()
        self.analytics.shutdown()
        await self.events.aclose()
        await self.redis.aclose()
        await self.db.dispose()
        if self.embedded is not None:
            self.embedded.stop()


def build_runtime(settings: Settings) -> Runtime:
    settings, embedded = resolve_servers(with_dev_secrets(settings))
    # resolve_servers fills both
    assert settings.database_url
    assert settings.redis_url
    db_url = (
        to_asyncpg(settings.runtime_database_url)
        if settings.runtime_database_url
        else runtime_url(
            settings.database_url, role=settings.runtime_db_role, password=settings.runtime_db_password
        )
    )
    db = Database(db_url, pool_size=settings.db_pool_size)
    # Bounded waits: an unreachable Redis fails a call in seconds instead of holding it forever (the
    # event reader blocks up to READ_BLOCK_MS in XREAD, so reads may take a little longer than that).
    redis = Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=READ_BLOCK_MS / 1000 + 5,
    )
    verifier = (
        JwtVerifier(
            hs256_secret=settings.jwt_secret,
            jwks_url=settings.jwks_url,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            allow_weak_secret=settings.allow_weak_jwt,
        )
        if settings.jwt_secret or settings.jwks_url
        else None
    )
    if not settings.encryption_keys or not settings.blind_index_key:
        raise RuntimeError("BRANDVX_ENCRYPTION_KEYS and BRANDVX_BLIND_INDEX_KEY must be set")
    vault = PiiVault(
        keyring=Keyring.from_spec(settings.encryption_keys),
        blind_index=BlindIndex.from_spec(settings.blind_index_key),
        default_region=settings.default_phone_region,
    )
    events = EventStreams(redis, settings.key_prefix)
    queue = ArqQueue(settings.redis_url, settings.arq_queue)
    db.relay = OutboxRelay(db.engine, queue, queue_name=settings.arq_queue)
    model: ChatModel = (
        OpenAIChatModel(
            api_key=settings.openai_api_key,
            model=settings.ai_model,
            base_url=settings.openai_base_url,
            timeout_seconds=settings.ai_timeout_seconds,
            idle_timeout_seconds=settings.ai_idle_timeout_seconds,
            max_retries=settings.ai_max_retries,
        )
        if settings.openai_api_key
        else OfflineChatModel()
    )
    providers = ProviderClients(provider_settings(settings))
    connect = ConnectFlow(
        providers=providers,
        nonces=RedisNonces(redis, settings.key_prefix),
        transactions=db,
        keyring=vault.keyring,
        signing_key=state_key(settings.blind_index_key),
        urls=ConnectUrls.of(
            public_url=settings.public_url, app_url=settings.app_url, allowed_origins=settings.allowed_origins
        ),
    )
    revocations = RedisKeyRevocations(redis, settings.key_prefix)
    analytics = (
        PostHogAnalytics(api_key=settings.posthog_api_key, host=settings.posthog_host)
        if settings.posthog_api_key
        else NoAnalytics()
    )
    return Runtime(
        settings=settings,
        db=db,
        redis=redis,
        verifier=verifier,
        authenticator=Authenticator(db, verifier),
        anonymous_budget=cost_budget(
            settings,
            redis,
            maximum=settings.anonymous_rate_limit_points,
            restore_rate=settings.anonymous_rate_limit_restore_per_second,
        ),
        app_services=AppServices(
            uow=db,
            vault=vault,
            queue=queue,
            feed=ChatReplyFeed(events),
            connect=connect,
            providers=providers,
            job_events=JobEventFeed(events),
            analytics=analytics,
            max_tenants_per_user=settings.max_tenants_per_user,
            budget=rate_limit(settings, redis),
            revocations=revocations,
        ),
        events=events,
        queue=queue,
        model=model,
        analytics=analytics,
        vault=vault,
        providers=providers,
        connect=connect,
        revocations=revocations,
        embedded=embedded,
    )


def rate_limit(settings: Settings, redis: Redis) -> FallbackCostBudget | None:
    """The per-tenant budget in Redis, or this process's own (bounded) while Redis is unreachable."""
    return cost_budget(
        settings,
        redis,
        maximum=settings.rate_limit_points,
        restore_rate=settings.rate_limit_restore_per_second,
    )


def cost_budget(
    settings: Settings, redis: Redis, *, maximum: int, restore_rate: float
) -> FallbackCostBudget | None:
    """Buckets in Redis with an in-memory fallback; None when ``maximum`` is 0 (turned off)."""
    if not maximum:
        return None
    return FallbackCostBudget(
        RedisCostBudget(redis, settings.key_prefix, maximum=maximum, restore_rate=restore_rate),
        MemoryCostBudget(maximum=maximum, restore_rate=restore_rate, max_keys=MEMORY_LIMITER_KEYS),
    )


def provider_settings(settings: Settings) -> ProviderSettings:
    return ProviderSettings(
        square_client_id=settings.square_client_id,
        square_client_secret=settings.square_client_secret,
        square_base_url=settings.square_base_url,
        square_webhook_signature_key=settings.square_webhook_signature_key,
        acuity_client_id=settings.acuity_client_id,
        acuity_client_secret=settings.acuity_client_secret,
        acuity_base_url=settings.acuity_base_url,
        google_client_id=settings.google_client_id,
        google_client_secret=settings.google_client_secret,
        google_auth_base_url=settings.google_auth_base_url,
        google_token_base_url=settings.google_token_base_url,
        google_api_base_url=settings.google_api_base_url,
        shopify_client_id=settings.shopify_client_id,
        shopify_client_secret=settings.shopify_client_secret,
        shopify_api_version=settings.shopify_api_version,
        shopify_base_url_overrides=settings.shopify_base_url_overrides or None,
        apple_caldav_url=settings.apple_caldav_url,
        public_url=settings.public_url,
    )


async def worker_runtime(settings: Settings) -> WorkerRuntime:
    """The clients an ARQ worker's jobs use: a Runtime of its own (own pools), seen through jobs' eyes."""
    runtime = await asyncio.to_thread(build_runtime, settings)
    freeze_startup_objects()
    return WorkerRuntime(
        db=runtime.db,
        events=runtime.events,
        model=runtime.model,
        analytics=runtime.analytics,
        queue=runtime.queue,
        settings=JobSettings(
            ai_timeout_seconds=runtime.settings.ai_timeout_seconds,
            askvx_retention_days=runtime.settings.askvx_retention_days,
            sync_past_days=runtime.settings.sync_past_days,
            sync_future_days=runtime.settings.sync_future_days,
            low_stock_default=runtime.settings.low_stock_default,
        ),
        vault=runtime.vault,
        providers=runtime.providers,
        close=runtime.aclose,
    )
