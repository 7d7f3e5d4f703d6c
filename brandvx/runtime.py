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
from domain.contacts import PiiVault
from domain.crypto import BlindIndex, Keyring
from integrations.auth_jwt import JwtVerifier
from persistence.db import Database
from persistence.urls import runtime_url, to_asyncpg
from resolvers.context import AppServices

log = logging.getLogger("brandvx.runtime")


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
    embedded: EmbeddedServers | None = None
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
    redis = Redis.from_url(settings.redis_url)
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
    return Runtime(
        settings=settings,
        db=db,
        redis=redis,
        verifier=verifier,
        authenticator=Authenticator(db, verifier),
        app_services=AppServices(uow=db, vault=vault),
        embedded=embedded,
    )
