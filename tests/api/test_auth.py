"""Authentication over HTTP: JWT users and partner API keys, statuses and error codes."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx

from integrations.auth_jwt import mint_token
from tests.conftest import JWT_SECRET, TenantFixture, gql, make_tenant, make_user

VIEWER = "{ viewer { userId role tenant { id } } }"

CREATE_KEY = """
mutation($name: String!, $scopes: [ApiScope!]!) {
  createApiKey(input: {name: $name, scopes: $scopes}) {
    apiKey { id name prefix scopes createdAt lastUsedAt }
    token
    userErrors { field message code }
  }
}
"""

LIST_KEYS = "{ apiKeys { id name prefix scopes createdAt lastUsedAt } }"

REVOKE_KEY = """
mutation($id: ID!) {
  revokeApiKey(input: {apiKeyId: $id}) { revokedApiKeyId userErrors { field message code } }
}
"""

CREATE_CONTACT = """
mutation($name: String!) {
  createContact(input: {displayName: $name}) {
    contact { id displayName }
    userErrors { field message code }
  }
}
"""

CREATE_TENANT = """
mutation { createTenant(input: {name: "Key Salon"}) { tenant { id } userErrors { field code } } }
"""


async def _post(
    client: httpx.AsyncClient, query: str, *, headers: dict[str, str], variables: dict[str, Any] | None = None
) -> httpx.Response:
    return await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)


def _bearer(token: str, tenant: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if tenant is not None:
        headers["X-Tenant-Id"] = tenant
    return headers


def _assert_refused(response: httpx.Response, *, status: int, code: str, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["data"] is None
    assert len(body["errors"]) == 1
    assert body["errors"][0]["extensions"]["code"] == code
    if message is not None:
        assert body["errors"][0]["message"] == message


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def _create_key(
    client: httpx.AsyncClient,
    *,
    tenant: TenantFixture,
    name: str = "Partner",
    scopes: list[str] | None = None,
) -> dict[str, Any]:
    body = await gql(
        client,
        CREATE_KEY,
        {"name": name, "scopes": scopes or ["READ", "WRITE"]},
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    payload: dict[str, Any] = body["data"]["createApiKey"]
    assert payload["userErrors"] == []
    return payload


# ---------------------------------------------------------------- JWT users


async def test_missing_authorization_is_401_with_challenge(client: httpx.AsyncClient) -> None:
    response = await _post(client, VIEWER, headers={})
    _assert_refused(response, status=401, code="UNAUTHENTICATED")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="brandvx"'


async def test_basic_scheme_is_401(client: httpx.AsyncClient) -> None:
    response = await _post(client, VIEWER, headers={"Authorization": "Basic x"})
    _assert_refused(response, status=401, code="UNAUTHENTICATED")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="brandvx"'


async def test_bearer_without_token_is_401(client: httpx.AsyncClient) -> None:
    response = await _post(client, VIEWER, headers={"Authorization": "Bearer   "})
    _assert_refused(response, status=401, code="UNAUTHENTICATED")


async def test_valid_token_without_tenant_header_is_accepted(client: httpx.AsyncClient) -> None:
    user = make_user()
    body = await gql(client, VIEWER, token=user.token)
    assert body == {"data": {"viewer": {"userId": user.id, "role": None, "tenant": None}}}


async def test_bad_signature_is_401(client: httpx.AsyncClient) -> None:
    forged = mint_token("another-secret-" + "y" * 40, user_id=str(uuid.uuid4()))
    response = await _post(client, VIEWER, headers=_bearer(forged))
    _assert_refused(response, status=401, code="UNAUTHENTICATED", message="Invalid token: bad signature")


async def test_token_expired_beyond_leeway_is_401(client: httpx.AsyncClient) -> None:
    expired = mint_token(JWT_SECRET, user_id=str(uuid.uuid4()), ttl_seconds=-90)
    response = await _post(client, VIEWER, headers=_bearer(expired))
    _assert_refused(response, status=401, code="UNAUTHENTICATED", message="Invalid token: expired")


async def test_token_expired_within_clock_skew_is_accepted(client: httpx.AsyncClient) -> None:
    user_id = str(uuid.uuid4())
    recent = mint_token(JWT_SECRET, user_id=user_id, ttl_seconds=-30)
    body = await gql(client, "{ viewer { userId } }", token=recent)
    assert body == {"data": {"viewer": {"userId": user_id}}}


async def test_wrong_audience_is_401(client: httpx.AsyncClient) -> None:
    token = mint_token(JWT_SECRET, user_id=str(uuid.uuid4()), audience="anon")
    response = await _post(client, VIEWER, headers=_bearer(token))
    _assert_refused(response, status=401, code="UNAUTHENTICATED", message="Invalid token: wrong audience")


async def test_alg_none_token_is_401(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "aud": "authenticated", "iat": now, "exp": now + 3600}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    response = await _post(client, VIEWER, headers=_bearer(unsigned))
    _assert_refused(
        response, status=401, code="UNAUTHENTICATED", message="Invalid token: unsupported algorithm"
    )


async def test_garbage_token_is_401(client: httpx.AsyncClient) -> None:
    response = await _post(client, VIEWER, headers=_bearer("not.a.jwt-at-all"))
    _assert_refused(response, status=401, code="UNAUTHENTICATED", message="Invalid token: malformed token")


async def test_malformed_tenant_header_is_400(client: httpx.AsyncClient) -> None:
    user = make_user()
    for value in ("not-a-uuid", base64.urlsafe_b64encode(f"Contact:{uuid.uuid4()}".encode()).decode()):
        response = await _post(client, VIEWER, headers=_bearer(user.token, value))
        _assert_refused(
            response, status=400, code="BAD_USER_INPUT", message="X-Tenant-Id must be a tenant ID"
        )


async def test_tenant_header_accepts_global_id(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    body = await gql(client, VIEWER, token=tenant.owner.token, tenant=tenant.global_id)
    assert body["data"]["viewer"] == {
        "userId": tenant.owner.id,
        "role": "OWNER_ADMIN",
        "tenant": {"id": tenant.global_id},
    }


async def test_non_member_tenant_is_403(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    stranger = make_user()
    response = await _post(client, VIEWER, headers=_bearer(stranger.token, tenant.uuid))
    _assert_refused(response, status=403, code="FORBIDDEN")


# ---------------------------------------------------------------- API keys


async def test_owner_creates_key_shown_once_and_listed_without_secret(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    payload = await _create_key(client, tenant=tenant, name="  Booking   partner ")
    token = payload["token"]
    key = payload["apiKey"]
    assert token.startswith("bvx_")
    assert len(token) > 40
    assert key["name"] == "Booking partner"
    assert key["prefix"] == token[:12]
    assert key["scopes"] == ["READ", "WRITE"]
    assert key["lastUsedAt"] is None

    listing = await gql(client, LIST_KEYS, token=tenant.owner.token, tenant=tenant.uuid)
    assert listing["data"]["apiKeys"] == [key]
    text = json.dumps(listing)
    assert token not in text
    assert token[12:] not in text
    # The secret is not a field of ApiKey: it cannot be asked for again.
    again = await gql(client, "{ apiKeys { token } }", token=tenant.owner.token, tenant=tenant.uuid)
    assert again["data"] is None
    assert again["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_key_authenticates_with_and_without_tenant_header(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    payload = await _create_key(client, tenant=tenant, scopes=["READ"])
    global_id = payload["apiKey"]["id"]
    key_uuid = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode().split(":", 1)[1]
    expected = {"userId": f"apikey:{key_uuid}", "role": "STAFF", "tenant": {"id": tenant.global_id}}
    without = await gql(client, VIEWER, token=payload["token"])
    assert without == {"data": {"viewer": expected}}
    with_header = await gql(client, VIEWER, token=payload["token"], tenant=tenant.uuid)
    assert with_header == {"data": {"viewer": expected}}


async def test_key_of_another_tenant_is_403(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    other = await make_tenant(client, name="Other Salon")
    payload = await _create_key(client, tenant=tenant)
    response = await _post(client, VIEWER, headers=_bearer(payload["token"], other.uuid))
    _assert_refused(response, status=403, code="FORBIDDEN")


async def test_last_used_at_is_set_after_use(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    payload = await _create_key(client, tenant=tenant)
    before = await gql(client, LIST_KEYS, token=tenant.owner.token, tenant=tenant.uuid)
    assert before["data"]["apiKeys"][0]["lastUsedAt"] is None
    await gql(client, "{ viewer { userId } }", token=payload["token"])
    after = await gql(client, LIST_KEYS, token=tenant.owner.token, tenant=tenant.uuid)
    (listed,) = after["data"]["apiKeys"]
    assert listed["id"] == payload["apiKey"]["id"]
    assert listed["lastUsedAt"] is not None
    assert listed["lastUsedAt"] >= listed["createdAt"]


async def test_write_key_creates_contact_read_key_cannot(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    writer = await _create_key(client, tenant=tenant, name="Writer", scopes=["WRITE"])
    body = await gql(client, CREATE_CONTACT, {"name": "Ada Lovelace"}, token=writer["token"])
    created = body["data"]["createContact"]
    assert created["userErrors"] == []
    assert created["contact"]["displayName"] == "Ada Lovelace"

    reader = await _create_key(client, tenant=tenant, name="Reader", scopes=["READ"])
    body = await gql(client, CREATE_CONTACT, {"name": "Grace Hopper"}, token=reader["token"])
    refused = body["data"]["createContact"]
    assert refused["contact"] is None
    assert [e["code"] for e in refused["userErrors"]] == ["FORBIDDEN"]

    listing = await gql(client, "{ contacts { edges { node { displayName } } } }", token=reader["token"])
    assert listing["data"]["contacts"]["edges"] == [{"node": {"displayName": "Ada Lovelace"}}]


async def test_revoked_key_is_refused_and_unlisted(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    keep = await _create_key(client, tenant=tenant, name="Keep")
    gone = await _create_key(client, tenant=tenant, name="Gone")
    await gql(client, "{ viewer { userId } }", token=gone["token"])  # works before revocation

    body = await gql(
        client, REVOKE_KEY, {"id": gone["apiKey"]["id"]}, token=tenant.owner.token, tenant=tenant.uuid
    )
    assert body["data"]["revokeApiKey"] == {"revokedApiKeyId": gone["apiKey"]["id"], "userErrors": []}

    response = await _post(client, VIEWER, headers=_bearer(gone["token"]))
    _assert_refused(response, status=401, code="UNAUTHENTICATED", message="Invalid or revoked API key")
    listing = await gql(client, LIST_KEYS, token=tenant.owner.token, tenant=tenant.uuid)
    assert [k["name"] for k in listing["data"]["apiKeys"]] == ["Keep"]
    still = await gql(client, "{ viewer { role } }", token=keep["token"])
    assert still == {"data": {"viewer": {"role": "STAFF"}}}

    twice = await gql(
        client, REVOKE_KEY, {"id": gone["apiKey"]["id"]}, token=tenant.owner.token, tenant=tenant.uuid
    )
    assert twice["data"]["revokeApiKey"]["revokedApiKeyId"] is None
    assert [e["code"] for e in twice["data"]["revokeApiKey"]["userErrors"]] == ["NOT_FOUND"]


async def test_api_key_cannot_create_keys_or_tenants(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    payload = await _create_key(client, tenant=tenant, scopes=["READ", "WRITE"])
    body = await gql(client, CREATE_KEY, {"name": "Escalate", "scopes": ["WRITE"]}, token=payload["token"])
    created = body["data"]["createApiKey"]
    assert created["apiKey"] is None
    assert created["token"] is None
    assert [e["code"] for e in created["userErrors"]] == ["FORBIDDEN"]

    body = await gql(client, CREATE_TENANT, token=payload["token"])
    assert body["data"]["createTenant"] == {
        "tenant": None,
        "userErrors": [{"field": None, "code": "FORBIDDEN"}],
    }

    body = await gql(client, REVOKE_KEY, {"id": payload["apiKey"]["id"]}, token=payload["token"])
    assert [e["code"] for e in body["data"]["revokeApiKey"]["userErrors"]] == ["FORBIDDEN"]

    listing = await gql(client, LIST_KEYS, token=tenant.owner.token, tenant=tenant.uuid)
    assert [k["id"] for k in listing["data"]["apiKeys"]] == [payload["apiKey"]["id"]]


async def test_made_up_api_key_is_401(client: httpx.AsyncClient) -> None:
    response = await _post(client, VIEWER, headers=_bearer("bvx_" + "A" * 43))
    _assert_refused(response, status=401, code="UNAUTHENTICATED", message="Invalid or revoked API key")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="brandvx"'
