"""Attacks from a second tenant, a member-less user, weaker roles and scoped keys, over GraphQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from brandvx.settings import Settings
from tests.conftest import TenantFixture, User, gql, make_tenant, make_user

A_EMAIL = "Jane.Doe@Example.com"
A_PHONE = "+1 312 555 0142"

CREATE_CONTACT = """
mutation($name: String!, $email: String, $phone: String) {
  createContact(input: {displayName: $name, email: $email, phone: $phone}) {
    contact { id displayName emailMasked }
    userErrors { field message code }
  }
}
"""
CREATE_KEY = """
mutation($name: String!, $scopes: [ApiScope!]!) {
  createApiKey(input: {name: $name, scopes: $scopes}) {
    apiKey { id scopes } token userErrors { field message code }
  }
}
"""
REVOKE_KEY = """
mutation($id: ID!) {
  revokeApiKey(input: {apiKeyId: $id}) { revokedApiKeyId userErrors { field message code } }
}
"""
NODE = "query($id: ID!) { node(id: $id) { __typename id } }"
CONTACTS = """
query($search: String) { contacts(first: 50, search: $search) { edges { node { id displayName } } } }
"""
SETTINGS = """
{ settings { timezone quietHours { start end } brandProfile { businessName tone services } extra } }
"""
UPDATE_SETTINGS = """
mutation {
  updateSettings(input: {
    timezone: "Europe/Paris", quietHours: {start: "21:00", end: "08:00"},
    brandProfile: {businessName: "Intruder", tone: "loud", services: ["hack"]}, extra: {owned: true}
  }) { settings { timezone } userErrors { code } }
}
"""


@dataclass(frozen=True)
class Victim:
    tenant: TenantFixture
    contact_id: str
    key_id: str
    key_token: str


def _tenant_of(t: TenantFixture) -> dict[str, Any]:
    return {"token": t.owner.token, "tenant": t.uuid}


async def _create_contact(
    client: httpx.AsyncClient,
    *,
    token: str,
    tenant: str | None,
    email: str | None = None,
    phone: str | None = None,
) -> dict[str, Any]:
    body = await gql(
        client,
        CREATE_CONTACT,
        {"name": "Jane Doe", "email": email, "phone": phone},
        token=token,
        tenant=tenant,
    )
    payload: dict[str, Any] = body["data"]["createContact"]
    return payload


async def _create_key(
    client: httpx.AsyncClient, *, owner: TenantFixture, scopes: list[str]
) -> tuple[str, str]:
    body = await gql(client, CREATE_KEY, {"name": "partner", "scopes": scopes}, **_tenant_of(owner))
    payload = body["data"]["createApiKey"]
    assert payload["userErrors"] == [], payload
    return payload["apiKey"]["id"], payload["token"]


async def _make_victim(client: httpx.AsyncClient) -> Victim:
    tenant = await make_tenant(client, name="Victim Salon")
    made = await _create_contact(
        client, token=tenant.owner.token, tenant=tenant.uuid, email=A_EMAIL, phone=A_PHONE
    )
    assert made["userErrors"] == [], made
    key_id, token = await _create_key(client, owner=tenant, scopes=["READ", "WRITE"])
    return Victim(tenant=tenant, contact_id=made["contact"]["id"], key_id=key_id, key_token=token)


@pytest.fixture
async def victim(client: httpx.AsyncClient) -> Victim:
    return await _make_victim(client)


@pytest.fixture
async def attacker(client: httpx.AsyncClient) -> TenantFixture:
    return await make_tenant(client, name="Attacker Salon")


@pytest.fixture
async def owner_conn(migrated: Settings) -> AsyncIterator[asyncpg.Connection]:
    dsn = (
        make_url(migrated.database_url or "")
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


async def _grant(conn: asyncpg.Connection, *, tenant: TenantFixture, role: str) -> User:
    user = make_user()
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", tenant.uuid)
        await conn.execute(
            "INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3)",
            uuid.UUID(tenant.uuid),
            user.id,
            role,
        )
    return user


def _contact_ids(body: dict[str, Any]) -> list[str]:
    return [e["node"]["id"] for e in body["data"]["contacts"]["edges"]]


def _top_level_code(body: dict[str, Any]) -> str:
    code: str = body["errors"][0]["extensions"]["code"]
    return code


# ---------------------------------------------------------------- reading another tenant


async def test_node_of_other_tenant_is_null(
    client: httpx.AsyncClient, victim: Victim, attacker: TenantFixture
) -> None:
    ids = {"Contact": victim.contact_id, "Tenant": victim.tenant.global_id, "ApiKey": victim.key_id}
    for type_name, global_id in ids.items():
        own = await gql(client, NODE, {"id": global_id}, **_tenant_of(victim.tenant))
        assert own == {"data": {"node": {"__typename": type_name, "id": global_id}}}
        stolen = await gql(client, NODE, {"id": global_id}, **_tenant_of(attacker))
        assert stolen == {"data": {"node": None}}, type_name


async def test_contact_search_does_not_cross_tenants(
    client: httpx.AsyncClient, victim: Victim, attacker: TenantFixture
) -> None:
    for term in (A_EMAIL, A_EMAIL.lower(), A_PHONE, "+13125550142", "Jane"):
        own = await gql(client, CONTACTS, {"search": term}, **_tenant_of(victim.tenant))
        assert _contact_ids(own) == [victim.contact_id], term
        other = await gql(client, CONTACTS, {"search": term}, **_tenant_of(attacker))
        assert other == {"data": {"contacts": {"edges": []}}}, term
    listing = await gql(client, CONTACTS, {"search": None}, **_tenant_of(attacker))
    assert listing == {"data": {"contacts": {"edges": []}}}


async def test_node_is_scoped_to_the_header_tenant_for_a_member_of_both(client: httpx.AsyncClient) -> None:
    """`node`: "Any object of the caller's tenant by global ID; null for anything else." The caller's
    tenant is the X-Tenant-Id one, even when the user also belongs to the other tenant."""
    a = await make_tenant(client, name="Both A")
    b = await make_tenant(client, name="Both B", owner=a.owner)
    made = await _create_contact(client, **_tenant_of(a), email=A_EMAIL)
    assert made["userErrors"] == []
    found = {
        gid: (await gql(client, NODE, {"id": gid}, **_tenant_of(b)))["data"]["node"]
        for gid in (a.global_id, made["contact"]["id"])
    }
    assert found == {a.global_id: None, made["contact"]["id"]: None}
    own = await gql(client, NODE, {"id": b.global_id}, **_tenant_of(b))
    assert own == {"data": {"node": {"__typename": "Tenant", "id": b.global_id}}}


# ---------------------------------------------------------------- writing into another tenant


async def test_revoke_other_tenants_key_is_not_found(
    client: httpx.AsyncClient, victim: Victim, attacker: TenantFixture
) -> None:
    body = await gql(client, REVOKE_KEY, {"id": victim.key_id}, **_tenant_of(attacker))
    payload = body["data"]["revokeApiKey"]
    assert payload["revokedApiKeyId"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("NOT_FOUND", ["apiKeyId"])]
    still = await gql(
        client, "{ viewer { role tenant { id } } }", token=victim.key_token, tenant=victim.tenant.uuid
    )
    assert still == {"data": {"viewer": {"role": "STAFF", "tenant": {"id": victim.tenant.global_id}}}}


async def test_same_email_in_another_tenant_is_allowed(
    client: httpx.AsyncClient, victim: Victim, attacker: TenantFixture
) -> None:
    made = await _create_contact(client, **_tenant_of(attacker), email=A_EMAIL, phone=A_PHONE)
    assert made["userErrors"] == []
    assert made["contact"]["id"] != victim.contact_id
    again = await _create_contact(client, **_tenant_of(attacker), email=A_EMAIL.upper())
    assert [(e["code"], e["field"]) for e in again["userErrors"]] == [("CONFLICT", ["email"])]
    mine = await gql(client, CONTACTS, {"search": A_EMAIL}, **_tenant_of(attacker))
    assert _contact_ids(mine) == [made["contact"]["id"]]
    theirs = await gql(client, CONTACTS, {"search": A_EMAIL}, **_tenant_of(victim.tenant))
    assert _contact_ids(theirs) == [victim.contact_id]


async def test_update_settings_touches_only_own_tenant(
    client: httpx.AsyncClient, victim: Victim, attacker: TenantFixture
) -> None:
    before = await gql(client, SETTINGS, **_tenant_of(victim.tenant))
    assert before["data"]["settings"]["timezone"] == "America/Chicago"
    updated = await gql(client, UPDATE_SETTINGS, **_tenant_of(attacker))
    assert updated["data"]["updateSettings"] == {"settings": {"timezone": "Europe/Paris"}, "userErrors": []}
    assert await gql(client, SETTINGS, **_tenant_of(victim.tenant)) == before
    own = await gql(client, SETTINGS, **_tenant_of(attacker))
    assert own["data"]["settings"]["brandProfile"]["businessName"] == "Intruder"


# ---------------------------------------------------------------- the tenant header


@pytest.mark.parametrize("form", ["uuid", "global_id"])
async def test_owner_of_b_cannot_enter_a(
    client: httpx.AsyncClient, victim: Victim, attacker: TenantFixture, form: str
) -> None:
    header = victim.tenant.uuid if form == "uuid" else victim.tenant.global_id
    body = await gql(client, CONTACTS, token=attacker.owner.token, tenant=header, expect_status=403)
    assert body["data"] is None
    assert _top_level_code(body) == "FORBIDDEN"


async def test_api_key_cannot_enter_other_tenant(
    client: httpx.AsyncClient, victim: Victim, attacker: TenantFixture
) -> None:
    body = await gql(client, CONTACTS, token=victim.key_token, tenant=attacker.uuid, expect_status=403)
    assert _top_level_code(body) == "FORBIDDEN"
    body = await gql(client, CONTACTS, token=victim.key_token, tenant=attacker.global_id, expect_status=403)
    assert _top_level_code(body) == "FORBIDDEN"
    own = await gql(client, CONTACTS, token=victim.key_token, tenant=victim.tenant.uuid)
    assert _contact_ids(own) == [victim.contact_id]


async def test_user_without_membership(client: httpx.AsyncClient, victim: Victim) -> None:
    stranger = make_user()
    viewer = await gql(client, "{ viewer { userId role tenant { id } } }", token=stranger.token)
    assert viewer == {"data": {"viewer": {"userId": stranger.id, "role": None, "tenant": None}}}
    listing = await gql(client, CONTACTS, token=stranger.token)
    assert listing["data"] is None
    assert _top_level_code(listing) == "FORBIDDEN"
    assert listing["errors"][0]["path"] == ["contacts"]
    made = await _create_contact(client, token=stranger.token, tenant=None, email="x@example.com")
    assert made["contact"] is None
    assert [e["code"] for e in made["userErrors"]] == ["FORBIDDEN"]
    entered = await gql(client, CONTACTS, token=stranger.token, tenant=victim.tenant.uuid, expect_status=403)
    assert _top_level_code(entered) == "FORBIDDEN"


# ---------------------------------------------------------------- roles and scopes


async def test_support_reads_but_cannot_write(
    client: httpx.AsyncClient, victim: Victim, owner_conn: asyncpg.Connection
) -> None:
    support = await _grant(owner_conn, tenant=victim.tenant, role="SUPPORT")
    auth = {"token": support.token, "tenant": victim.tenant.uuid}
    viewer = await gql(client, "{ viewer { role } }", **auth)
    assert viewer == {"data": {"viewer": {"role": "SUPPORT"}}}
    assert _contact_ids(await gql(client, CONTACTS, **auth)) == [victim.contact_id]
    made = await _create_contact(client, **auth, email="support@example.com")
    assert made["contact"] is None
    assert [e["code"] for e in made["userErrors"]] == ["FORBIDDEN"]
    assert _contact_ids(await gql(client, CONTACTS, **_tenant_of(victim.tenant))) == [victim.contact_id]


async def test_staff_writes_contacts_but_cannot_manage_keys(
    client: httpx.AsyncClient, victim: Victim, owner_conn: asyncpg.Connection
) -> None:
    staff = await _grant(owner_conn, tenant=victim.tenant, role="STAFF")
    auth = {"token": staff.token, "tenant": victim.tenant.uuid}
    made = await _create_contact(client, **auth, email="staff-made@example.com")
    assert made["userErrors"] == []
    assert made["contact"]["emailMasked"] is not None
    listing = _contact_ids(await gql(client, CONTACTS, **_tenant_of(victim.tenant)))
    assert listing == [made["contact"]["id"], victim.contact_id]
    key = await gql(client, CREATE_KEY, {"name": "staff key", "scopes": ["READ"]}, **auth)
    payload = key["data"]["createApiKey"]
    assert (payload["apiKey"], payload["token"]) == (None, None)
    assert [e["code"] for e in payload["userErrors"]] == ["FORBIDDEN"]
    keys = await gql(client, "{ apiKeys { id } }", **_tenant_of(victim.tenant))
    assert keys == {"data": {"apiKeys": [{"id": victim.key_id}]}}


async def test_read_scoped_key_cannot_write(client: httpx.AsyncClient, victim: Victim) -> None:
    _, token = await _create_key(client, owner=victim.tenant, scopes=["READ"])
    assert _contact_ids(await gql(client, CONTACTS, token=token, tenant=victim.tenant.uuid)) == [
        victim.contact_id
    ]
    assert _contact_ids(await gql(client, CONTACTS, token=token)) == [
        victim.contact_id
    ]  # the key implies its tenant
    made = await _create_contact(client, token=token, tenant=victim.tenant.uuid, email="key@example.com")
    assert made["contact"] is None
    assert [e["code"] for e in made["userErrors"]] == ["FORBIDDEN"]
    assert _contact_ids(await gql(client, CONTACTS, token=token)) == [victim.contact_id]


async def test_revoked_key_is_unauthenticated(client: httpx.AsyncClient, victim: Victim) -> None:
    key_id, token = await _create_key(client, owner=victim.tenant, scopes=["READ", "WRITE"])
    works = await gql(client, "{ viewer { role } }", token=token, tenant=victim.tenant.uuid)
    assert works == {"data": {"viewer": {"role": "STAFF"}}}
    revoked = await gql(client, REVOKE_KEY, {"id": key_id}, **_tenant_of(victim.tenant))
    assert revoked["data"]["revokeApiKey"] == {"revokedApiKeyId": key_id, "userErrors": []}
    body = await gql(client, "{ viewer { role } }", token=token, tenant=victim.tenant.uuid, expect_status=401)
    assert body["data"] is None
    assert _top_level_code(body) == "UNAUTHENTICATED"
    # The other key of the tenant is untouched.
    other = await gql(client, "{ viewer { role } }", token=victim.key_token, tenant=victim.tenant.uuid)
    assert other == {"data": {"viewer": {"role": "STAFF"}}}
