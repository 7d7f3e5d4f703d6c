"""Test servers: real PostgreSQL and Redis, embedded unless TEST_DATABASE_URL / TEST_REDIS_URL are set.

Each run migrates a scratch database of its own and uses a Redis namespace of its own, and removes
both at the end. Tests isolate themselves by creating their own tenants and users.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.engine import make_url

from brandvx.app import create_app
from brandvx.embedded import EmbeddedServers
from brandvx.runtime import Runtime, build_runtime
from brandvx.settings import Settings
from domain.crypto import Keyring
from integrations.auth_jwt import mint_token
from persistence.migrate import upgrade

JWT_SECRET = "test-secret-" + "x" * 40
RUN_ID = uuid.uuid4().hex[:10]
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Servers:
    database_url: str
    redis_url: str


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    external_db = os.environ.get("TEST_DATABASE_URL")
    external_redis = os.environ.get("TEST_REDIS_URL")
    tmp = Path(tempfile.mkdtemp(prefix="brandvx-test-"))
    embedded = EmbeddedServers.start(
        tmp, postgres=not external_db, redis=not external_redis, database="postgres", temporary=True
    )
    base_db = external_db or embedded.database_url
    assert base_db
    scratch = f"brandvx_test_{RUN_ID}"
    import asyncio

    async def create() -> None:
        conn = await asyncpg.connect(_libpq(base_db))
        try:
            await conn.execute(f'CREATE DATABASE "{scratch}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(_libpq(base_db))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    try:
        yield Servers(
            database_url=make_url(base_db).set(database=scratch).render_as_string(hide_password=False),
            redis_url=external_redis or embedded.redis_url or "",
        )
    finally:
        asyncio.run(drop())
        embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(servers: Servers) -> Iterator[Settings]:
    data_dir = tempfile.mkdtemp(prefix="brandvx-data-")
    yield Settings(
        BRANDVX_ENV="test",
        DATABASE_URL=servers.database_url,
        REDIS_URL=servers.redis_url,
        BRANDVX_REDIS_NAMESPACE=f"test-{RUN_ID}",
        BRANDVX_JWT_SECRET=JWT_SECRET,
        BRANDVX_ENCRYPTION_KEYS=Keyring.generate_spec("t1"),
        BRANDVX_BLIND_INDEX_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        BRANDVX_DATA_DIR=data_dir,
        BRANDVX_MAX_BODY_BYTES=65536,
        # Many tests send bad credentials on purpose; tests/api/test_abuse_limits.py sets a small one.
        BRANDVX_ANONYMOUS_RATE_LIMIT_POINTS=100_000,
    )
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def migrated(settings: Settings) -> Settings:
    assert settings.database_url
    await upgrade(settings.database_url, runtime_role=settings.runtime_db_role, runtime_password=None)
    return settings


@pytest.fixture(scope="session")
async def app(migrated: Settings) -> AsyncIterator[Any]:
    application = create_app(migrated, inline_worker=False)
    async with application.router.lifespan_context(application):
        yield application
    redis = Redis.from_url(migrated.redis_url or "")
    async for key in redis.scan_iter(match=migrated.key_prefix + "*"):
        await redis.delete(key)
    await redis.aclose()


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """A separate app (its own settings, started and stopped here) and a client for it."""
    application = create_app(settings, inline_worker=False)
    transport = httpx.ASGITransport(app=application)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
    ):
        yield application, http


@pytest.fixture(scope="session")
def runtime(app: Any) -> Runtime:
    rt: Runtime = app.state.runtime
    return rt


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@pytest.fixture(scope="session")
async def standalone_runtime(migrated: Settings) -> AsyncIterator[Runtime]:
    """A runtime outside the app, for domain/persistence integration tests."""
    import asyncio

    rt = await asyncio.to_thread(build_runtime, migrated)
    yield rt
    await rt.aclose()


# ---------------------------------------------------------------- helpers


@dataclass(frozen=True)
class User:
    id: str
    token: str
    email: str


def make_user(*, email: str | None = None) -> User:
    user_id = str(uuid.uuid4())
    mail = email or f"{user_id[:8]}@example.test"
    return User(id=user_id, token=mint_token(JWT_SECRET, user_id=user_id, email=mail), email=mail)


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    tenant: str | None = None,
    expect_status: int = 200,
) -> dict[str, Any]:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if tenant is not None:
        headers["X-Tenant-Id"] = tenant
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert response.status_code == expect_status, response.text
    return without_cost(response.json())


def without_cost(body: dict[str, Any]) -> dict[str, Any]:
    """The response without its ``extensions.cost`` report (tests/api/test_rate_limit.py checks it)."""
    extensions = body.get("extensions")
    if isinstance(extensions, dict):
        extensions.pop("cost", None)
        if not extensions:
            del body["extensions"]
    return body


CREATE_TENANT = """
mutation($name: String!, $tz: String) {
  createTenant(input: {name: $name, timezone: $tz}) {
    tenant { id name timezone planTier }
    userErrors { field message code }
  }
}
"""


@dataclass(frozen=True)
class TenantFixture:
    owner: User
    global_id: str
    uuid: str


async def make_tenant(
    client: httpx.AsyncClient, *, name: str = "Salon", owner: User | None = None
) -> TenantFixture:
    user = owner or make_user()
    body = await gql(client, CREATE_TENANT, {"name": name, "tz": "America/Chicago"}, token=user.token)
    payload = body["data"]["createTenant"]
    assert payload["userErrors"] == [], payload
    global_id = payload["tenant"]["id"]
    decoded = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
    return TenantFixture(owner=user, global_id=global_id, uuid=decoded.split(":", 1)[1])


@pytest.fixture
async def tenant(client: httpx.AsyncClient) -> TenantFixture:
    return await make_tenant(client)


class StatementCounter:
    """Statements the engine sends (SQLAlchemy's ``before_cursor_execute``) and the transactions it
    opens (its ``begin`` event: one per BEGIN), counted on the engine under test."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.begins = 0

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def begin(self, conn: Any) -> None:
        self.begins += 1

    def clear(self) -> None:
        self.statements.clear()
        self.begins = 0

    @property
    def queries(self) -> list[str]:
        """Statements other than the per-transaction scope setup."""
        return [s for s in self.statements if "set_config" not in s]


@pytest.fixture
def count_statements(runtime: Runtime) -> Iterator[StatementCounter]:
    counter = StatementCounter()
    engine = runtime.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", counter)
    event.listen(engine, "begin", counter.begin)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", counter)
        event.remove(engine, "begin", counter.begin)


# ---------------------------------------------------------------- a real server process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    ws_url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def live_server(migrated: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`brandvx serve` in its own process, on this run's servers (no embedded ones)."""
    port = free_port()
    env = {
        **os.environ,
        "BRANDVX_ENV": "test",
        "DATABASE_URL": migrated.database_url or "",
        "REDIS_URL": migrated.redis_url or "",
        "BRANDVX_REDIS_NAMESPACE": migrated.redis_namespace,
        "BRANDVX_JWT_SECRET": JWT_SECRET,
        "BRANDVX_ENCRYPTION_KEYS": migrated.encryption_keys or "",
        "BRANDVX_BLIND_INDEX_KEY": migrated.blind_index_key or "",
        "BRANDVX_DATA_DIR": str(tmp_path_factory.mktemp("live-data")),
        "BRANDVX_ANONYMOUS_RATE_LIMIT_POINTS": "100000",
    }
    log = tmp_path_factory.mktemp("live-log") / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "brandvx", "serve", "--port", str(port), "--worker", "--no-migrate"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"brandvx serve exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        process.kill()
        raise RuntimeError(f"brandvx serve did not become ready: {log.read_text()[-3000:]}")
    try:
        yield LiveServer(base_url=base, ws_url=f"ws://127.0.0.1:{port}/graphql", process=process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
