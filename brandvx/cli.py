"""The ``brandvx`` command."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from brandvx.settings import Settings

if TYPE_CHECKING:
    from persistence.outbox import DeadLetter, OutboxStats

cli = typer.Typer(help="BrandVX API: serve, run workers, migrate, mint dev tokens.", no_args_is_help=True)

DEMO_USER_ID = "00000000-0000-4000-8000-00000000d3e0"
DEMO_EMAIL = "demo@brandvx.local"


class TokenRole(StrEnum):
    OWNER_ADMIN = "OWNER_ADMIN"
    STAFF = "STAFF"
    SUPPORT = "SUPPORT"
    OPS = "OPS"


class UnknownTenant(Exception):
    pass


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


async def _migrate(settings: Settings) -> None:
    from persistence.migrate import upgrade

    assert settings.database_url
    await upgrade(
        settings.database_url,
        runtime_role=settings.runtime_db_role,
        runtime_password=settings.runtime_db_password,
    )


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    demo: Annotated[
        bool, typer.Option(help="Create a demo tenant and print a ready-to-paste token.")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="API processes (uvicorn workers).")] = 1,
    worker: Annotated[
        bool | None, typer.Option("--worker/--no-worker", help="Run an ARQ worker in the API process.")
    ] = None,
    migrate: Annotated[bool, typer.Option("--migrate/--no-migrate", help="Apply migrations first.")] = True,
) -> None:
    """Start the API (with embedded PostgreSQL and Redis unless DATABASE_URL and REDIS_URL are set)."""
    from brandvx.app import create_app
    from brandvx.dev_secrets import with_dev_secrets
    from brandvx.runtime import resolve_servers
    from brandvx.server import ServerConfig
    from brandvx.server import run as run_server

    settings = with_dev_secrets(_settings())
    # Unless configured, links we hand out (OAuth callbacks, connect forms) point at this server.
    local = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104 - comparing, not binding
    defaults = {
        "public_url": local if "public_url" not in settings.model_fields_set else settings.public_url,
        "app_url": f"{local}/graphql" if "app_url" not in settings.model_fields_set else settings.app_url,
    }
    settings, embedded = resolve_servers(settings.model_copy(update=defaults))
    if migrate:
        asyncio.run(_migrate(settings))
    inline = (
        worker
        if worker is not None
        else (settings.inline_worker if settings.inline_worker is not None else embedded is not None)
    )
    if demo:
        _print_demo(settings, host, port)
    # Subscription events are small JSON frames: compressing each one costs more CPU (and latency) than
    # the bytes it saves. WebSocket messages get the HTTP body limit.
    server_options: dict[str, Any] = {
        "host": host,
        "port": port,
        "ws_per_message_deflate": False,
        "ws_max_size": settings.max_body_bytes,
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        "header_timeout_seconds": settings.header_timeout_seconds,
        "log_level": "info",
    }
    try:
        if workers == 1:
            run_server(ServerConfig(create_app(settings, inline_worker=inline), **server_options))
        else:
            # Child processes build their own app from the environment; hand them what we resolved.
            for name, value in {
                "DATABASE_URL": settings.database_url,
                "REDIS_URL": settings.redis_url,
                "BRANDVX_JWT_SECRET": settings.jwt_secret,
                "BRANDVX_ENCRYPTION_KEYS": settings.encryption_keys,
                "BRANDVX_BLIND_INDEX_KEY": settings.blind_index_key,
                "BRANDVX_INLINE_WORKER": "1" if inline else "0",
                "BRANDVX_PUBLIC_URL": settings.public_url,
                "BRANDVX_APP_URL": settings.app_url,
            }.items():
                if value:
                    os.environ[name] = value
            run_server(
                ServerConfig("brandvx.app:create_app", factory=True, workers=workers, **server_options)
            )
    finally:
        if embedded is not None:
            embedded.stop()


def _print_demo(settings: Settings, host: str, port: int) -> None:
    from integrations.auth_jwt import mint_token

    tenant_id = asyncio.run(_ensure_demo_tenant(settings))
    assert settings.jwt_secret, "dev secrets provide a JWT secret outside production"
    token = mint_token(settings.jwt_secret, user_id=DEMO_USER_ID, email=DEMO_EMAIL, ttl_seconds=7 * 24 * 3600)
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-Id": str(tenant_id)}
    typer.echo("\nDemo tenant ready. Paste these headers into the explorer's Headers tab:\n")
    typer.echo(json.dumps(headers, indent=2))
    typer.echo(f"\nExplorer: http://{host}:{port}/graphql")
    typer.echo(
        f"curl: curl -s http://{host}:{port}/graphql -H 'Content-Type: application/json' "
        f"-H 'Authorization: Bearer {token}' -H 'X-Tenant-Id: {tenant_id}' "
        """-d '{"query":"{ viewer { userId role tenant { name } } }"}'\n"""
    )


async def _ensure_demo_tenant(settings: Settings) -> uuid.UUID:
    from brandvx.runtime import build_runtime
    from domain import tenancy
    from domain.model import Actor

    runtime = build_runtime(settings)
    try:
        async with runtime.db.transaction(user_id=DEMO_USER_ID) as uow:
            existing = await uow.tenants.ids_for_user(DEMO_USER_ID)
            if existing:
                return existing[0]
            tenant = await tenancy.create_tenant(
                uow,
                Actor(user_id=DEMO_USER_ID, email=DEMO_EMAIL),
                name="Demo Salon",
                timezone="America/New_York",
                max_owned=settings.max_tenants_per_user,
            )
            return tenant.id
    finally:
        await runtime.aclose()


@cli.command("worker")
def run_worker() -> None:
    """Run an ARQ worker alone (needs REDIS_URL and DATABASE_URL of the servers the API uses)."""
    from brandvx.dev_secrets import with_dev_secrets
    from brandvx.runtime import worker_runtime
    from brandvx.telemetry import configure_logging, configure_sentry
    from jobs.worker import build_worker

    settings = with_dev_secrets(_settings())
    if not settings.redis_url or not settings.database_url:
        typer.echo(
            "brandvx worker needs REDIS_URL and DATABASE_URL (`brandvx serve` runs its own worker)", err=True
        )
        raise typer.Exit(2)
    configure_logging(settings.log_level)
    configure_sentry(settings)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr="127.0.0.1")
    try:
        import uvloop  # installed with uvicorn[standard]; the API's loop is uvloop too

        # Before build_worker: ARQ's Worker takes its event loop when it is constructed.
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is not available on every platform
        pass
    redis_url = settings.redis_url
    worker = build_worker(
        redis_url=redis_url,
        queue_name=settings.arq_queue,
        key_prefix=settings.key_prefix,
        make_runtime=lambda: worker_runtime(settings),
        sync_timeout_seconds=settings.sync_job_timeout_seconds,
        reply_timeout_seconds=int(settings.ai_timeout_seconds) + 10,
    )
    worker.run()


@cli.command()
def migrate() -> None:
    """Apply database migrations (as the owner in DATABASE_URL; creates the runtime role)."""
    from brandvx.runtime import resolve_servers

    settings, embedded = resolve_servers(_settings(), redis=False)
    try:
        asyncio.run(_migrate(settings))
    finally:
        if embedded is not None:
            embedded.stop()
    typer.echo("migrations applied")


@cli.command("dead-letters")
def dead_letters_command(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
) -> None:
    """List outbox items that finally failed (one JSON object a line), with the outbox depth."""
    rows, stats = asyncio.run(_dead_letters(_settings(), limit))
    for row in rows:
        typer.echo(
            json.dumps(
                {
                    "id": row.id,
                    "kind": row.kind,
                    "key": row.idempotency_key,
                    "attempts": row.attempts,
                    "reason": row.reason,
                    "createdAt": row.created_at.isoformat(),
                    "failedAt": row.failed_at.isoformat(),
                    "args": row.payload.get("args", []),
                }
            )
        )
    typer.echo(
        f"{stats.dead_letters} dead letters; outbox: {stats.depth} waiting, "
        f"oldest {stats.oldest_age_seconds:.0f} s",
        err=True,
    )


async def _dead_letters(settings: Settings, limit: int) -> tuple[list[DeadLetter], OutboxStats]:
    from brandvx.runtime import resolve_servers
    from persistence.db import Database
    from persistence.outbox import dead_letters, outbox_stats
    from persistence.urls import to_asyncpg

    settings, embedded = resolve_servers(settings, redis=False)
    assert settings.database_url
    owner = Database(to_asyncpg(settings.database_url), pool_size=1)
    try:
        async with owner.engine.connect() as conn:
            rows = await dead_letters(conn, limit=limit)
        return rows, await outbox_stats(owner.engine)
    finally:
        await owner.dispose()
        if embedded is not None:
            embedded.stop()


@cli.command()
def token(
    tenant: Annotated[str | None, typer.Option(help="Tenant ID to grant --role in.")] = None,
    user: Annotated[str, typer.Option(help="User ID (the token's sub).")] = DEMO_USER_ID,
    role: Annotated[
        TokenRole | None, typer.Option(help="Also grant this role (membership; OPS is platform-wide).")
    ] = None,
    email: Annotated[str | None, typer.Option(help="Email claim.")] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 3600,
) -> None:
    """Mint a development token signed with BRANDVX_JWT_SECRET (refuses without one)."""
    from integrations.auth_jwt import mint_token

    settings = _settings()
    if settings.env.value == "production":
        typer.echo("refusing to mint tokens in production", err=True)
        raise typer.Exit(2)
    secret = settings.jwt_secret
    if not secret and (settings.data_dir / "dev-secrets.json").exists():
        from brandvx.dev_secrets import with_dev_secrets

        secret = with_dev_secrets(settings).jwt_secret
    if not secret:
        typer.echo(
            "no signing secret: set BRANDVX_JWT_SECRET (or run `brandvx serve` once to create dev secrets)",
            err=True,
        )
        raise typer.Exit(2)
    if role is not None:
        if role is not TokenRole.OPS and tenant is None:
            typer.echo("--role needs --tenant", err=True)
            raise typer.Exit(2)
        try:
            asyncio.run(_grant(settings, tenant, user, role))
        except UnknownTenant as exc:
            typer.echo(f"unknown tenant: {exc}", err=True)
            raise typer.Exit(2) from None
    typer.echo(mint_token(secret, user_id=user, email=email, ttl_seconds=ttl))


async def _grant(settings: Settings, tenant: str | None, user: str, role: TokenRole) -> None:
    from sqlalchemy import text

    from brandvx.runtime import resolve_servers
    from domain.model import Role
    from persistence.db import Database
    from persistence.urls import to_asyncpg

    settings, embedded = resolve_servers(settings, redis=False)
    assert settings.database_url
    owner = Database(to_asyncpg(settings.database_url), pool_size=1)
    try:
        if role is TokenRole.OPS:
            async with owner.transaction() as uow:
                await uow.connection.execute(
                    text(
                        "INSERT INTO platform_roles (user_id, role) VALUES (:u, 'OPS') ON CONFLICT DO NOTHING"
                    ),
                    {"u": user},
                )
        else:
            try:
                tenant_id = uuid.UUID(tenant or "")
            except ValueError:
                raise UnknownTenant(f"{tenant!r} is not a tenant UUID") from None
            async with owner.transaction(tenant_id=tenant_id) as uow:
                if await uow.tenants.get(tenant_id) is None:
                    raise UnknownTenant(f"no tenant {tenant_id}")
                await uow.tenants.grant(tenant_id, user, Role(role.value))
    finally:
        await owner.dispose()
        if embedded is not None:
            embedded.stop()


@cli.command("export-schema")
def export_schema() -> None:
    """Print the GraphQL schema (SDL). The repository keeps it in schema.graphql."""
    from schema import build_schema

    typer.echo(build_schema().as_str())


def main() -> None:
    cli()
