"""Row-level security, proven at the database: raw connections as the runtime role (and the owner)."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from brandvx.runtime import Runtime
from brandvx.settings import Settings
from domain.api_keys import hash_token
from persistence.db import Database
from tests.conftest import gql, make_tenant

KNOWN_TENANT_TABLES = {"memberships", "tenant_settings", "onboarding_steps", "api_keys", "contacts"}

CREATE_CONTACT = """
mutation($name: String!, $email: String) {
  createContact(input: {displayName: $name, email: $email}) { contact { id } userErrors { code message } }
}
"""
CREATE_KEY = """
mutation($name: String!) {
  createApiKey(input: {name: $name, scopes: [READ, WRITE]}) {
    apiKey { id } token userErrors { code message }
  }
}
"""
COMPLETE_STEP = """
mutation { completeOnboardingStep(input: {step: BUSINESS_BASICS}) { userErrors { code message } } }
"""


def _uuid_of(global_id: str) -> uuid.UUID:
    raw = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
    return uuid.UUID(raw.split(":", 1)[1])


def _dsn(settings: Settings, *, runtime_role: bool) -> str:
    url = make_url(settings.database_url or "").set(drivername="postgresql")
    if runtime_role:
        url = url.set(username=settings.runtime_db_role, password=settings.runtime_db_password)
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class SeededTenant:
    id: uuid.UUID
    contact_id: uuid.UUID
    key_ids: tuple[uuid.UUID, ...]
    key_tokens: tuple[str, ...]


@dataclass(frozen=True)
class World:
    a: SeededTenant
    b: SeededTenant
    tenant_tables: tuple[str, ...]


async def _seed_tenant(client: httpx.AsyncClient, *, name: str, keys: int) -> SeededTenant:
    t = await make_tenant(client, name=name)
    auth = {"token": t.owner.token, "tenant": t.uuid}
    made = await gql(
        client, CREATE_CONTACT, {"name": f"{name} Client", "email": f"c@{name}.example.com"}, **auth
    )
    assert made["data"]["createContact"]["userErrors"] == [], made
    step = await gql(client, COMPLETE_STEP, **auth)
    assert step["data"]["completeOnboardingStep"]["userErrors"] == [], step
    key_ids, tokens = [], []
    for i in range(keys):
        body = await gql(client, CREATE_KEY, {"name": f"key {i}"}, **auth)
        payload = body["data"]["createApiKey"]
        assert payload["userErrors"] == [], body
        key_ids.append(_uuid_of(payload["apiKey"]["id"]))
        tokens.append(payload["token"])
    return SeededTenant(
        id=uuid.UUID(t.uuid),
        contact_id=_uuid_of(made["data"]["createContact"]["contact"]["id"]),
        key_ids=tuple(key_ids),
        key_tokens=tuple(tokens),
    )


@pytest.fixture(scope="module")
async def world(app: Any, migrated: Settings) -> World:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        a = await _seed_tenant(c, name="rlsa", keys=2)
        b = await _seed_tenant(c, name="rlsb", keys=1)
    owner = await asyncpg.connect(_dsn(migrated, runtime_role=False))
    try:
        rows = await owner.fetch(
            "SELECT DISTINCT c.table_name FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE' "
            "ORDER BY 1"
        )
    finally:
        await owner.close()
    tables = tuple(r["table_name"] for r in rows)
    assert set(tables) >= KNOWN_TENANT_TABLES, tables
    return World(a=a, b=b, tenant_tables=tables)


@pytest.fixture
async def owner_conn(migrated: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_dsn(migrated, runtime_role=False))
    yield conn
    await conn.close()


@pytest.fixture
async def app_conn(migrated: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_dsn(migrated, runtime_role=True))
    assert await conn.fetchval("SELECT current_user") == migrated.runtime_db_role
    yield conn
    await conn.close()


async def _tenant_ids(conn: asyncpg.Connection, table: str) -> list[uuid.UUID]:
    column = "id" if table == "tenants" else "tenant_id"
    return [r[0] for r in await conn.fetch(f"SELECT {column} FROM {table}")]


# ---------------------------------------------------------------- the runtime role


async def test_runtime_role_is_not_privileged(owner_conn: asyncpg.Connection, migrated: Settings) -> None:
    role = migrated.runtime_db_role
    row = await owner_conn.fetchrow("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", role)
    assert row is not None, f"role {role} does not exist"
    assert (row["rolsuper"], row["rolbypassrls"]) == (False, False)
    owners = await owner_conn.fetch("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'")
    assert {r["tablename"] for r in owners} >= KNOWN_TENANT_TABLES | {"tenants", "platform_roles"}
    assert [r["tablename"] for r in owners if r["tableowner"] == role] == []
    # Nor can it become an owner with SET ROLE.
    for owner in {r["tableowner"] for r in owners}:
        assert await owner_conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", role, owner) is False


async def test_rls_enabled_and_forced_on_every_tenant_table(
    owner_conn: asyncpg.Connection, world: World
) -> None:
    rows = await owner_conn.fetch(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relname = ANY($1::text[])",
        [*world.tenant_tables, "tenants"],
    )
    found = {r["relname"]: (r["relrowsecurity"], r["relforcerowsecurity"]) for r in rows}
    assert found == {name: (True, True) for name in [*world.tenant_tables, "tenants"]}


# ---------------------------------------------------------------- tenant scope


async def test_no_tenant_set_sees_nothing(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection, world: World
) -> None:
    seeded = {world.a.id, world.b.id}
    assert await app_conn.fetchval("SELECT current_setting('app.tenant_id', true)") is None  # never set
    for table in [*world.tenant_tables, "tenants"]:
        # The rows exist (the owner sees them), so zero below is RLS, not an empty table.
        if table in KNOWN_TENANT_TABLES | {"tenants"}:
            assert seeded <= set(await _tenant_ids(owner_conn, table)), table
        async with app_conn.transaction():
            assert await app_conn.fetch(f"SELECT * FROM {table}") == [], table
        async with app_conn.transaction():  # what Database.transaction sends without a tenant
            await app_conn.execute("SELECT set_config('app.tenant_id', '', true)")
            assert await app_conn.fetch(f"SELECT * FROM {table}") == [], table


async def test_tenant_a_sees_only_its_own_rows(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection, world: World
) -> None:
    for table in [*world.tenant_tables, "tenants"]:
        expected = [i for i in await _tenant_ids(owner_conn, table) if i == world.a.id]
        if table in KNOWN_TENANT_TABLES | {"tenants"}:
            assert expected, table
        async with app_conn.transaction():
            await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(world.a.id))
            assert await _tenant_ids(app_conn, table) == expected, table
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(world.a.id))
        contacts = await app_conn.fetch("SELECT id FROM contacts")
        keys = await app_conn.fetch("SELECT id FROM api_keys ORDER BY created_at")
    assert [r["id"] for r in contacts] == [world.a.contact_id]
    assert sorted(r["id"] for r in keys) == sorted(world.a.key_ids)


async def test_tenant_setting_does_not_leak_into_next_transaction(
    app_conn: asyncpg.Connection, world: World
) -> None:
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(world.a.id))
        assert [r["id"] for r in await app_conn.fetch("SELECT id FROM contacts")] == [world.a.contact_id]
    async with app_conn.transaction():
        assert await app_conn.fetchval("SELECT current_setting('app.tenant_id', true)") == ""
        for table in [*world.tenant_tables, "tenants"]:
            assert await app_conn.fetch(f"SELECT * FROM {table}") == [], table


async def test_app_database_transaction_leaves_nothing_on_pooled_connection(
    runtime: Runtime, world: World
) -> None:
    db = Database(runtime.db.engine.url, pool_size=1)
    try:
        async with db.transaction(tenant_id=world.a.id, user_id="someone", role="OWNER_ADMIN") as uow:
            pid = await uow.connection.scalar(text("SELECT pg_backend_pid()"))
            assert [c.id for c in await uow.contacts.by_ids([world.a.contact_id, world.b.contact_id])] == [
                world.a.contact_id
            ]
        async with db.engine.connect() as conn, conn.begin():  # same pooled connection, no scope set
            assert await conn.scalar(text("SELECT pg_backend_pid()")) == pid
            settings = (
                await conn.execute(
                    text(
                        "SELECT current_setting('app.tenant_id', true), "
                        "current_setting('app.user_id', true), current_setting('app.role', true), "
                        "current_setting('app.api_key_hash', true)"
                    )
                )
            ).one()
            assert tuple(settings) == ("", "", "", "")
            assert (await conn.execute(text("SELECT id FROM contacts"))).all() == []
    finally:
        await db.dispose()


async def test_leak_check_detects_session_scoped_setting(runtime: Runtime, world: World) -> None:
    """Control for the test above: a session-scoped setting (`false`) does survive the commit."""
    engine = create_async_engine(runtime.db.engine.url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            async with conn.begin():
                await conn.execute(
                    text("SELECT set_config('app.tenant_id', :t, false)"), {"t": str(world.a.id)}
                )
            async with conn.begin():
                rows = (await conn.execute(text("SELECT id FROM contacts"))).all()
        assert [r.id for r in rows] == [world.a.contact_id]
    finally:
        await engine.dispose()


# ---------------------------------------------------------------- writes across tenants


async def test_insert_into_other_tenant_is_rejected(app_conn: asyncpg.Connection, world: World) -> None:
    tr = app_conn.transaction()
    await tr.start()
    try:
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(world.a.id))
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security policy"):
            await app_conn.execute(
                "INSERT INTO contacts (id, tenant_id, display_name, name_search) VALUES ($1, $2, 'x', 'x')",
                uuid.uuid4(),
                world.b.id,
            )
    finally:
        await tr.rollback()


async def test_update_cannot_move_or_touch_rows_across_tenants(
    app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection, world: World
) -> None:
    tr = app_conn.transaction()
    await tr.start()
    try:
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(world.a.id))
        try:
            outcome = await app_conn.execute(
                "UPDATE contacts SET tenant_id = $1 WHERE id = $2", world.b.id, world.a.contact_id
            )
        except asyncpg.InsufficientPrivilegeError as exc:
            outcome = "rejected" if "row-level security policy" in str(exc) else str(exc)
    finally:
        await tr.rollback()
    assert outcome in ("rejected", "UPDATE 0")
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(world.a.id))
        b_contact = world.b.contact_id
        assert await app_conn.execute(
            "UPDATE contacts SET display_name = 'pwn' WHERE id = $1", b_contact
        ) == ("UPDATE 0")
        assert await app_conn.execute("DELETE FROM contacts WHERE id = $1", b_contact) == "DELETE 0"
    rows = await owner_conn.fetch(
        "SELECT id, tenant_id, display_name FROM contacts WHERE id = ANY($1::uuid[]) ORDER BY display_name",
        [world.a.contact_id, world.b.contact_id],
    )
    assert [(r["id"], r["tenant_id"], r["display_name"]) for r in rows] == [
        (world.a.contact_id, world.a.id, "rlsa Client"),
        (world.b.contact_id, world.b.id, "rlsb Client"),
    ]


# ---------------------------------------------------------------- the API-key policy


async def _with_key_hash(conn: asyncpg.Connection, key_hash_hex: str, table: str) -> list[asyncpg.Record]:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.api_key_hash', $1, true)", key_hash_hex)
        return list(await conn.fetch(f"SELECT * FROM {table}"))


async def test_api_key_hash_shows_exactly_that_key(app_conn: asyncpg.Connection, world: World) -> None:
    key_hash = hash_token(world.a.key_tokens[0]).hex()
    keys = await _with_key_hash(app_conn, key_hash, "api_keys")
    assert [(r["id"], r["tenant_id"]) for r in keys] == [(world.a.key_ids[0], world.a.id)]
    for table in [*world.tenant_tables, "tenants"]:
        if table != "api_keys":
            assert await _with_key_hash(app_conn, key_hash, table) == [], table


async def test_random_api_key_hash_shows_nothing(app_conn: asyncpg.Connection, world: World) -> None:
    random_hash = secrets.token_bytes(32).hex()
    for table in [*world.tenant_tables, "tenants"]:
        assert await _with_key_hash(app_conn, random_hash, table) == [], table


async def test_api_key_hash_scope_can_only_stamp_last_used(
    app_conn: asyncpg.Connection, world: World
) -> None:
    """Whoever holds a key may stamp last_used_at (policy key_by_hash_touch), nothing more: not
    re-home the row into another tenant, widen its scopes or un-revoke it."""
    attempts = {
        "tenant_id": f"UPDATE api_keys SET tenant_id = '{world.b.id}'",
        "scopes": "UPDATE api_keys SET scopes = '{WRITE}'",
        # Any real change counts (on a revoked key, NULL would un-revoke it).
        "revoked_at": "UPDATE api_keys SET revoked_at = now() - interval '1 day'",
        "name": "UPDATE api_keys SET name = 'renamed'",
    }
    outcome: dict[str, str] = {}
    async with app_conn.transaction():
        await app_conn.execute(
            "SELECT set_config('app.api_key_hash', $1, true)", hash_token(world.a.key_tokens[0]).hex()
        )
        assert await app_conn.execute("UPDATE api_keys SET last_used_at = now()") == "UPDATE 1"
        for column, statement in attempts.items():
            savepoint = app_conn.transaction()
            await savepoint.start()
            try:
                outcome[column] = await app_conn.execute(statement)
            except (asyncpg.InsufficientPrivilegeError, asyncpg.RaiseError):
                outcome[column] = "rejected"
            finally:
                await savepoint.rollback()
    changed = {column: status for column, status in outcome.items() if status not in ("rejected", "UPDATE 0")}
    assert changed == {}, "columns the key-hash scope could change"


# ---------------------------------------------------------------- platform tables


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO platform_roles (user_id, role) VALUES ('intruder', 'OPS')",
        "UPDATE platform_roles SET role = 'OPS'",
        "DELETE FROM platform_roles",
        "UPDATE alembic_version SET version_num = 'x'",
        "INSERT INTO alembic_version (version_num) VALUES ('x')",
        "DELETE FROM alembic_version",
        "ALTER TABLE contacts DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE contacts NO FORCE ROW LEVEL SECURITY",
    ],
)
async def test_runtime_role_cannot_write_platform_tables(
    app_conn: asyncpg.Connection, statement: str
) -> None:
    tr = app_conn.transaction()
    await tr.start()
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"permission denied|must be owner"):
            await app_conn.execute(statement)
    finally:
        await tr.rollback()
    assert await app_conn.fetchval("SELECT count(*) FROM alembic_version") == 1
