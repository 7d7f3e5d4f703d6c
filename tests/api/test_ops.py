"""/health, /ready, /metrics and the offline explorer, through the app."""

from __future__ import annotations

import base64
import hashlib
import uuid
from html.parser import HTMLParser
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from brandvx.settings import Settings
from jobs.worker import heartbeat_key
from persistence.migrate import head_revision, upgrade
from tests.conftest import app_client


async def test_health_reports_each_subsystem(migrated: Settings) -> None:
    # A namespace of its own: no worker heartbeats there until this test writes one.
    settings = migrated.model_copy(update={"redis_namespace": f"health-{uuid.uuid4().hex[:8]}"})
    async with app_client(settings) as (app, http):
        response = await http.get("/health")
        assert response.status_code == 200
        checks = response.json()["checks"]
        assert set(checks) == {"database", "redis", "worker", "ai", "sentry", "posthog"}
        assert checks["database"] == "ok"
        assert checks["redis"] == "ok"
        assert checks["worker"] == "error: no worker heartbeat in the last 30 s"
        assert checks["ai"] == checks["sentry"] == checks["posthog"] == "disabled"
        assert response.json()["status"] == "degraded"

        redis = app.state.runtime.redis
        await redis.set(heartbeat_key(settings.key_prefix), "test 0", ex=30)
        try:
            healthy = (await http.get("/health")).json()
        finally:
            await redis.delete(heartbeat_key(settings.key_prefix))
        assert healthy["checks"]["worker"] == "ok"
        assert healthy["status"] == "ok"


async def test_ready_after_migrations(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "ready": True,
        "schemaRevision": head_revision(),
        "checks": {"database": "ok", "redis": "ok"},
        "rateLimiter": "redis",
    }


async def test_ready_is_503_until_migrations_are_applied(migrated: Settings) -> None:
    assert migrated.database_url
    name = f"brandvx_unmigrated_{uuid.uuid4().hex[:8]}"
    admin_url = make_url(migrated.database_url).render_as_string(hide_password=False)
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(migrated.database_url).set(database=name).render_as_string(hide_password=False)
        settings = migrated.model_copy(update={"database_url": url})
        async with app_client(settings) as (_, http):
            before = await http.get("/ready")
            assert before.status_code == 503
            assert "migrations not applied" in before.json()["reason"]
            await upgrade(url, runtime_role=settings.runtime_db_role, runtime_password=None)
            after = await http.get("/ready")
            assert after.status_code == 200
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_metrics_count_requests_by_route(client: httpx.AsyncClient) -> None:
    await client.get("/health")
    text = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/health",status="200"}' in text
    assert "http_request_duration_seconds_bucket" in text


def _gauge(text: str, name: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


async def test_metrics_show_the_outbox_and_its_dead_letters(
    client: httpx.AsyncClient, migrated: Settings
) -> None:
    before = (await client.get("/metrics")).text
    conn = await asyncpg.connect(migrated.database_url)
    try:
        await conn.execute(
            "INSERT INTO dead_letters (outbox_id, kind, payload, idempotency_key, attempts, reason, "
            "created_at) "
            "VALUES (0, 'sync_calendar', '{}'::jsonb, $1, 8, 'test', now())",
            f"metrics-test:{uuid.uuid4()}",
        )
    finally:
        await conn.close()
    after = (await client.get("/metrics")).text
    assert _gauge(after, "brandvx_dead_letters") == _gauge(before, "brandvx_dead_letters") + 1
    assert _gauge(after, "brandvx_outbox_depth") >= 0
    assert "brandvx_outbox_oldest_age_seconds " in after


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.assets: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values: dict[str, Any] = dict(attrs)
        url = values.get("src") if tag == "script" else values.get("href") if tag == "link" else None
        if url:
            self.assets.append((url, values.get("integrity")))


async def test_explorer_loads_every_asset_from_the_app(client: httpx.AsyncClient) -> None:
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    parser = _Assets()
    parser.feed(page.text)
    fetched = [(url, integrity) for url, integrity in parser.assets if not url.startswith("data:")]
    assert len(fetched) == 7
    for url, integrity in fetched:
        assert url.startswith("/"), f"{url} is not served by the app"
        asset = await client.get(url)
        assert asset.status_code == 200, url
        if integrity:
            algorithm, _, expected = integrity.partition("-")
            digest = base64.b64encode(hashlib.new(algorithm, asset.content).digest()).decode()
            assert digest == expected, url


async def test_root_redirects_to_the_explorer(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code in (302, 307)
    assert response.headers["location"] == "/graphql"
