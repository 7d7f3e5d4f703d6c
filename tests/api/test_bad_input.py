"""Text no column can hold (NUL, unpaired surrogates) and times out of range are client errors,
refused before anything runs: BAD_USER_INPUT or 4xx JSON, never INTERNAL or HTTP 500."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from integrations.auth_jwt import mint_token
from tests.conftest import JWT_SECRET, TenantFixture, gql

NUL = "a\x00b"
SURROGATE = "a\ud800b"

# (query, variables) pairs: one string argument each, through variables at several depths.
ERRS = " { userErrors { code } } }"
THROUGH_VARIABLES: list[tuple[str, dict[str, Any]]] = [
    ("mutation($v: String!) { createTenant(input: {name: $v})" + ERRS, {}),
    (
        'mutation($v: String) { createTenant(input: {name: "Ok", timezone: $v})' + ERRS,
        {},
    ),
    ("mutation($v: String!) { createContact(input: {displayName: $v})" + ERRS, {}),
    (
        'mutation($v: String) { createContact(input: {displayName: "X", email: $v})' + ERRS,
        {},
    ),
    (
        'mutation($v: String) { createContact(input: {displayName: "X", phone: $v})' + ERRS,
        {},
    ),
    (
        'mutation($v: [String!]) { createContact(input: {displayName: "X", tags: $v})' + ERRS,
        {"list": True},
    ),
    ("mutation($v: String!) { createApiKey(input: {name: $v, scopes: [READ]})" + ERRS, {}),
    ("mutation($v: String) { updateSettings(input: {timezone: $v})" + ERRS, {}),
    (
        "mutation($v: String) { updateSettings(input: {brandProfile: {businessName: $v}})" + ERRS,
        {},
    ),
    ("mutation($v: JSON) { updateSettings(input: {extra: $v})" + ERRS, {"nested": True}),
    (
        "mutation($v: JSON) { completeOnboardingStep(input: {step: BUSINESS_BASICS, context: $v})" + ERRS,
        {"key": True},
    ),
    ("mutation($v: String) { startChatSession(input: {title: $v})" + ERRS, {}),
    (
        'mutation($v: String!) { upsertTrainvxMemory(input: {key: $v, value: "v"})' + ERRS,
        {},
    ),
    ("mutation($v: String) { generateStrategy(input: {goals: $v})" + ERRS, {}),
    ("query($v: String) { contacts(search: $v) { edges { node { id } } } }", {}),
    ("query($v: String) { contacts(after: $v) { edges { node { id } } } }", {}),
    ("query($v: ID!) { node(id: $v) { id } }", {}),
]


def _value(shape: dict[str, Any], text: str) -> Any:
    if shape.get("list"):
        return ["fine", text]
    if shape.get("nested"):
        return {"outer": [{"inner": text}]}
    if shape.get("key"):
        return {text: 1}
    return text


def _headers(tenant: TenantFixture) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.owner.token}", "X-Tenant-Id": tenant.uuid}


def _refused(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert "NUL" in error["message"], error
    return error  # type: ignore[no-any-return]


async def _counts(client: httpx.AsyncClient, tenant: TenantFixture) -> Any:
    body = await gql(
        client,
        "{ contacts(first: 100) { edges { node { id } } } apiKeys { id } settings { timezone extra } "
        "chatSessions(first: 100) { edges { node { id } } } trainvxMemories { key } }",
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    assert "errors" not in body, body
    return body["data"]


@pytest.mark.parametrize("text", [NUL, SURROGATE], ids=["nul", "surrogate"])
async def test_bad_text_in_any_variable_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, tenant: TenantFixture, text: str
) -> None:
    before = await _counts(client, tenant)
    for query, shape in THROUGH_VARIABLES:
        # A query string in GET-style JSON may carry a lone surrogate; json.dumps writes it escaped.
        raw = json.dumps({"query": query, "variables": {"v": _value(shape, text)}})
        response = await client.post(
            "/graphql", content=raw, headers={**_headers(tenant), "content-type": "application/json"}
        )
        assert response.status_code in (200, 400), (query, response.text)
        if response.status_code == 200:
            error = _refused(response.json())
            assert error["extensions"]["field"].startswith("v"), error
        else:  # the JSON parser already refuses a lone surrogate escape
            assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert await _counts(client, tenant) == before


async def test_bad_text_in_a_variable_sent_by_get_is_refused(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    # json.loads (GET parameters) accepts a lone surrogate escape; the guard still refuses it.
    for text in (NUL, SURROGATE):
        response = await client.get(
            "/graphql",
            params={
                "query": "query($v: String) { contacts(search: $v) { edges { node { id } } } }",
                "variables": json.dumps({"v": text}),
            },
            headers=_headers(tenant),
        )
        assert response.status_code == 200, response.text
        _refused(response.json())


async def test_bad_text_in_an_inline_literal_is_refused(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    before = await _counts(client, tenant)
    for literal in ('"a\\u0000b"', '"""a\x00b"""'):
        for query in (
            "mutation { createContact(input: {displayName: %s}) { userErrors { code } } }",
            "mutation { updateSettings(input: {extra: {note: %s}}) { userErrors { code } } }",
            'mutation { upsertTrainvxMemory(input: {key: "k", value: %s}) { userErrors { code } } }',
            "{ contacts(search: %s) { edges { node { id } } } }",
        ):
            body = await gql(client, query % literal, token=tenant.owner.token, tenant=tenant.uuid)
            _refused(body)
    assert await _counts(client, tenant) == before


async def test_chat_text_with_nul_is_refused(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    started = await gql(
        client,
        'mutation { startChatSession(input: {title: "t"}) { session { id } userErrors { code } } }',
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    session = started["data"]["startChatSession"]["session"]["id"]
    body = await gql(
        client,
        "mutation($s: ID!, $c: String!) { sendChatMessage(input: {sessionId: $s, content: $c}) "
        "{ userErrors { code } } }",
        {"s": session, "c": NUL},
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    _refused(body)


async def test_jwt_subject_with_nul_is_401_json(client: httpx.AsyncClient) -> None:
    token = mint_token(JWT_SECRET, user_id="user\x00evil")
    response = await client.post(
        "/graphql", json={"query": "{ viewer { userId } }"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "malformed subject" in response.json()["errors"][0]["message"]


APPOINTMENTS = (
    "query($from: DateTime!, $to: DateTime!, $after: String) "
    "{ appointments(from: $from, to: $to, after: $after) { edges { node { id } } } }"
)


def _time_cursor(iso: str) -> str:
    raw = json.dumps(["t", iso, "00000000-0000-0000-0000-000000000000"], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("start", "end", "after", "field"),
    [
        ("0001-01-01T00:00:00+05:00", "0001-01-02T00:00:00+00:00", None, "from"),
        ("9999-12-31T00:00:00+00:00", "9999-12-31T23:59:59-05:00", None, "to"),
        (
            "2026-01-01T00:00:00+00:00",
            "2026-01-02T00:00:00+00:00",
            _time_cursor("0001-01-01T00:00:00+05:00"),
            "after",
        ),
        (
            "2026-01-01T00:00:00+00:00",
            "2026-01-02T00:00:00+00:00",
            _time_cursor("2026-01-01T00:00:00"),
            "after",
        ),
    ],
)
async def test_out_of_range_times_are_bad_user_input(
    client: httpx.AsyncClient, tenant: TenantFixture, start: str, end: str, after: str | None, field: str
) -> None:
    body = await gql(
        client,
        APPOINTMENTS,
        {"from": start, "to": end, "after": after},
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["extensions"]["field"] == [field], error
