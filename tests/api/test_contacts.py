"""Contacts through the API: masking, encryption at rest, uniqueness, search, pagination, query counts."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from brandvx.settings import Settings
from tests.conftest import StatementCounter, TenantFixture, gql, make_tenant

CREATE_CONTACT = """
mutation($input: CreateContactInput!) {
  createContact(input: $input) {
    contact {
      id displayName emailMasked phoneMasked smsConsent emailConsent tags source lastVisitAt createdAt
    }
    userErrors { field message code }
  }
}
"""

CONTACTS = """
query($first: Int, $after: String, $search: String) {
  contacts(first: $first, after: $after, search: $search) {
    edges { cursor node { id displayName } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""

N_PLUS_ONE = "{ contacts(first: 50) { edges { node { id displayName emailMasked tags } } } }"


async def _create(client: httpx.AsyncClient, *, tenant: TenantFixture, **fields: Any) -> dict[str, Any]:
    body = await gql(client, CREATE_CONTACT, {"input": fields}, token=tenant.owner.token, tenant=tenant.uuid)
    payload: dict[str, Any] = body["data"]["createContact"]
    return payload


async def _create_ok(client: httpx.AsyncClient, *, tenant: TenantFixture, **fields: Any) -> dict[str, Any]:
    payload = await _create(client, tenant=tenant, **fields)
    assert payload["userErrors"] == [], payload
    contact: dict[str, Any] = payload["contact"]
    return contact


async def _list(client: httpx.AsyncClient, *, tenant: TenantFixture, **variables: Any) -> dict[str, Any]:
    body = await gql(client, CONTACTS, variables, token=tenant.owner.token, tenant=tenant.uuid)
    assert "errors" not in body, body
    connection: dict[str, Any] = body["data"]["contacts"]
    return connection


async def _names(client: httpx.AsyncClient, *, tenant: TenantFixture, search: str) -> list[str]:
    connection = await _list(client, tenant=tenant, search=search, first=100)
    return [e["node"]["displayName"] for e in connection["edges"]]


def _uuid_of(global_id: str) -> uuid.UUID:
    decoded = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
    return uuid.UUID(decoded.split(":", 1)[1])


async def _owner_rows(settings: Settings, *, tenant: TenantFixture) -> list[asyncpg.Record]:
    """The tenant's contact rows as stored, read over the owner's connection (not through the app)."""
    url = make_url(settings.database_url or "").set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", tenant.uuid)
            return list(
                await conn.fetch("SELECT * FROM contacts WHERE tenant_id = $1", uuid.UUID(tenant.uuid))
            )
    finally:
        await conn.close()


def _assert_error(payload: dict[str, Any], *, code: str, field: list[str]) -> None:
    assert payload["contact"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [(code, field)]


# ---------------------------------------------------------------- creating


async def test_create_returns_only_masked_pii(
    client: httpx.AsyncClient, tenant: TenantFixture, migrated: Settings
) -> None:
    email, phone = "Jane.Doe@Example.com", "(415) 555-0100"
    body = await gql(
        client,
        CREATE_CONTACT,
        {
            "input": {
                "displayName": "  Jane   Doe ",
                "email": email,
                "phone": phone,
                "smsConsent": True,
                "emailConsent": True,
                "tags": ["VIP", " vip ", "Color  client", ""],
            }
        },
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    payload = body["data"]["createContact"]
    assert payload["userErrors"] == []
    contact = payload["contact"]
    assert {
        k: contact[k] for k in ("displayName", "emailMasked", "phoneMasked", "smsConsent", "emailConsent")
    } == {
        "displayName": "Jane Doe",
        "emailMasked": "j***@example.com",
        "phoneMasked": "+1 ***-***-0100",
        "smsConsent": True,
        "emailConsent": True,
    }
    assert contact["tags"] == ["vip", "color client"]
    assert contact["source"] == "manual"
    assert contact["lastVisitAt"] is None
    text = json.dumps(body)
    for secret in (email, email.lower(), "jane.doe", phone, "4155550100", "+14155550100", "555-0100"):
        assert secret.lower() not in text.lower(), secret

    (row,) = await _owner_rows(migrated, tenant=tenant)
    assert row["id"] == _uuid_of(contact["id"])
    assert row["email_masked"] == "j***@example.com"
    assert row["email_ciphertext"] is not None
    assert row["phone_ciphertext"] is not None
    for column, value in row.items():
        if isinstance(value, bytes):
            for secret in (b"jane.doe@example.com", b"jane.doe", b"4155550100", b"555-0100"):
                assert secret not in value.lower(), column
        elif isinstance(value, str):
            for plain in ("jane.doe@example.com", "jane.doe", "4155550100", "555-0100"):
                assert plain not in value.lower(), column


async def test_email_uniqueness_ignores_case(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    await _create_ok(client, tenant=tenant, displayName="Jane", email="Jane@X.com")
    payload = await _create(client, tenant=tenant, displayName="Other Jane", email="jane@x.COM")
    _assert_error(payload, code="CONFLICT", field=["email"])
    assert await _names(client, tenant=tenant, search="") == ["Jane"]


async def test_phone_uniqueness_across_formats(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    await _create_ok(client, tenant=tenant, displayName="Pat", phone="(415) 555-0100")
    payload = await _create(client, tenant=tenant, displayName="Pat Again", phone="+1 415-555-0100")
    _assert_error(payload, code="CONFLICT", field=["phone"])
    assert await _names(client, tenant=tenant, search="") == ["Pat"]


async def test_same_email_in_another_tenant_is_fine(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    other = await make_tenant(client, name="Other")
    await _create_ok(client, tenant=tenant, displayName="Jane", email="jane@x.com", phone="415 555 0100")
    await _create_ok(client, tenant=other, displayName="Jane", email="jane@x.com", phone="415 555 0100")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"email": "not-an-email"}, ["email"]),
        ({"email": "jane@"}, ["email"]),
        ({"phone": "12"}, ["phone"]),
        ({"phone": "415-555-CALL"}, ["phone"]),
        ({"smsConsent": True}, ["smsConsent"]),
        ({"smsConsent": True, "email": "jane@x.com"}, ["smsConsent"]),
        ({"emailConsent": True, "phone": "+1 415 555 0100"}, ["emailConsent"]),
        ({"tags": ["x" * 41]}, ["tags"]),
    ],
)
async def test_invalid_contact_stores_nothing(
    client: httpx.AsyncClient,
    tenant: TenantFixture,
    migrated: Settings,
    fields: dict[str, Any],
    field: list[str],
) -> None:
    payload = await _create(client, tenant=tenant, displayName="Nobody", **fields)
    _assert_error(payload, code="INVALID", field=field)
    assert (await _list(client, tenant=tenant))["edges"] == []
    assert await _owner_rows(migrated, tenant=tenant) == []


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
async def test_display_name_is_required(client: httpx.AsyncClient, tenant: TenantFixture, name: str) -> None:
    payload = await _create(client, tenant=tenant, displayName=name)
    _assert_error(payload, code="INVALID", field=["displayName"])


# ---------------------------------------------------------------- search


async def test_search_by_exact_email_any_case(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    await _create_ok(client, tenant=tenant, displayName="Jane Doe", email="jane.doe@example.com")
    await _create_ok(client, tenant=tenant, displayName="John Doe", email="john.doe@example.com")
    assert await _names(client, tenant=tenant, search="JANE.DOE@Example.COM") == ["Jane Doe"]
    assert await _names(client, tenant=tenant, search="  jane.doe@example.com ") == ["Jane Doe"]
    # Exact only: no partial email matches.
    assert await _names(client, tenant=tenant, search="jane.do@example.com") == []
    assert await _names(client, tenant=tenant, search="nobody@example.com") == []


async def test_search_by_phone_in_another_format(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    await _create_ok(client, tenant=tenant, displayName="Pat", phone="+1 415-555-0123")
    await _create_ok(client, tenant=tenant, displayName="Sam", phone="+1 415-555-0199")
    assert await _names(client, tenant=tenant, search="(415) 555-0123") == ["Pat"]
    assert await _names(client, tenant=tenant, search="415.555.0123") == ["Pat"]
    assert await _names(client, tenant=tenant, search="+14155550123") == ["Pat"]
    assert await _names(client, tenant=tenant, search="(415) 555-0124") == []


async def test_search_by_name_prefix_ignores_case(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    for name in ("Janet Smith", "Jane Doe", "Bob Jansen", "JANICE"):
        await _create_ok(client, tenant=tenant, displayName=name)
    assert await _names(client, tenant=tenant, search="jan") == ["JANICE", "Jane Doe", "Janet Smith"]
    assert await _names(client, tenant=tenant, search="JANE") == ["Jane Doe", "Janet Smith"]
    assert await _names(client, tenant=tenant, search="  jane   d ") == ["Jane Doe"]
    assert await _names(client, tenant=tenant, search="doe") == []  # a prefix, not a substring


async def test_name_search_wildcards_are_literal(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    for name in ("A_B Salon", "AxB Salon", "50% Off", "500 Club", "Back\\slash", "Backslash"):
        await _create_ok(client, tenant=tenant, displayName=name)
    assert await _names(client, tenant=tenant, search="a_b") == ["A_B Salon"]
    assert await _names(client, tenant=tenant, search="50%") == ["50% Off"]
    assert await _names(client, tenant=tenant, search="%") == []
    assert await _names(client, tenant=tenant, search="_") == []
    assert await _names(client, tenant=tenant, search="back\\") == ["Back\\slash"]


# ---------------------------------------------------------------- pagination


async def test_keyset_pagination_through_45(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    created = [(await _create_ok(client, tenant=tenant, displayName=f"C{i:02d}"))["id"] for i in range(45)]
    newest_first = list(reversed(created))

    seen: list[str] = []
    pages: list[tuple[int, bool, bool]] = []
    after: str | None = None
    for _ in range(4):
        connection = await _list(client, tenant=tenant, first=20, after=after)
        edges = connection["edges"]
        info = connection["pageInfo"]
        pages.append((len(edges), info["hasNextPage"], info["hasPreviousPage"]))
        seen.extend(e["node"]["id"] for e in edges)
        assert info["startCursor"] == edges[0]["cursor"]
        assert info["endCursor"] == edges[-1]["cursor"]
        after = info["endCursor"]
        if not info["hasNextPage"]:
            break
    assert pages == [(20, True, False), (20, True, True), (5, False, True)]
    assert len(seen) == len(set(seen)) == 45
    assert seen == newest_first

    # A contact added meanwhile does not shift later pages (keyset, not offset).
    first_page = await _list(client, tenant=tenant, first=20)
    await _create_ok(client, tenant=tenant, displayName="Newcomer")
    second_page = await _list(client, tenant=tenant, first=20, after=first_page["pageInfo"]["endCursor"])
    assert [e["node"]["id"] for e in second_page["edges"]] == newest_first[20:40]


async def test_default_page_size_is_20(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    for i in range(21):
        await _create_ok(client, tenant=tenant, displayName=f"D{i}")
    connection = await _list(client, tenant=tenant)
    assert len(connection["edges"]) == 20
    assert connection["pageInfo"]["hasNextPage"] is True


async def test_empty_connection(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    assert await _list(client, tenant=tenant) == {
        "edges": [],
        "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None},
    }


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"after": "not-a-cursor"}, ["after"]),
        ({"after": base64.urlsafe_b64encode(b'["yesterday","x"]').decode()}, ["after"]),
        ({"after": base64.urlsafe_b64encode(b"{}").decode()}, ["after"]),
        ({"first": 0}, ["first"]),
        ({"first": -1}, ["first"]),
        ({"first": 101}, ["first"]),
    ],
)
async def test_bad_page_arguments_are_bad_user_input(
    client: httpx.AsyncClient, tenant: TenantFixture, variables: dict[str, Any], field: list[str]
) -> None:
    body = await gql(client, CONTACTS, variables, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}
    assert error["path"] == ["contacts"]


async def test_first_100_is_allowed(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    await _create_ok(client, tenant=tenant, displayName="Only")
    connection = await _list(client, tenant=tenant, first=100)
    assert [e["node"]["displayName"] for e in connection["edges"]] == ["Only"]


# ---------------------------------------------------------------- query counts


async def test_listing_cost_does_not_grow_with_contacts(
    client: httpx.AsyncClient, count_statements: StatementCounter
) -> None:
    small = await make_tenant(client, name="Small")
    large = await make_tenant(client, name="Large")
    for i in range(5):
        await _create_ok(
            client, tenant=small, displayName=f"S{i}", email=f"s{i}@example.com", tags=["a", "b"]
        )
    for i in range(50):
        await _create_ok(
            client, tenant=large, displayName=f"L{i}", email=f"l{i}@example.com", tags=["a", "b"]
        )

    async def measure(tenant: TenantFixture, expected: int) -> list[str]:
        start = len(count_statements.statements)
        body = await gql(client, N_PLUS_ONE, token=tenant.owner.token, tenant=tenant.uuid)
        assert len(body["data"]["contacts"]["edges"]) == expected
        assert body["data"]["contacts"]["edges"][0]["node"]["tags"] == ["a", "b"]
        return [s for s in count_statements.statements[start:] if "set_config" not in s]

    small_queries = await measure(small, 5)
    large_queries = await measure(large, 50)
    assert len(small_queries) == len(large_queries)
    assert len(large_queries) <= 4, large_queries
    assert sum("FROM contacts" in q for q in large_queries) == 1
