"""Request and error handling: HTTP failures, validation codes, query limits, masked internal errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from brandvx.runtime import Runtime
from brandvx.settings import Settings
from domain.model import Actor, Role
from resolvers.context import Context
from schema import build_schema
from tests.conftest import TenantFixture, gql, without_cost

CONTACT_NAMES = "{ contacts(first: 100) { edges { node { displayName } } } }"
CREATE_CONTACT = (
    'mutation { createContact(input: {displayName: "%s"}) { contact { id } userErrors { code } } }'
)


def _headers(tenant: TenantFixture, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.owner.token}", "X-Tenant-Id": tenant.uuid, **extra}


async def _contact_names(client: httpx.AsyncClient, *, tenant: TenantFixture) -> list[str]:
    body = await gql(client, CONTACT_NAMES, token=tenant.owner.token, tenant=tenant.uuid)
    return [e["node"]["displayName"] for e in body["data"]["contacts"]["edges"]]


def _only_error(response: httpx.Response, *, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code
    return error  # type: ignore[no-any-return]


def _body_of_size(size: int, *, name: str) -> bytes:
    """A createContact request of exactly `size` bytes (the query is padded with whitespace)."""
    base = json.dumps({"query": CREATE_CONTACT % name}).encode()
    padding = size - len(base)
    assert padding >= 0
    return json.dumps({"query": CREATE_CONTACT % name + " " * padding}).encode()


# ---------------------------------------------------------------- HTTP-level failures


async def test_malformed_json_is_400(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    for raw in (b"{not json", b""):
        response = await client.post(
            "/graphql", content=raw, headers=_headers(tenant, **{"content-type": "application/json"})
        )
        error = _only_error(response, status=400, code="BAD_USER_INPUT")
        assert error["message"] == "Unable to parse request body as JSON"


async def test_body_without_query_is_400(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    for payload in ({"variables": {}}, {"query": None}, {"query": 5}):
        response = await client.post("/graphql", json=payload, headers=_headers(tenant))
        _only_error(response, status=400, code="BAD_USER_INPUT")


async def test_batch_body_is_400(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    response = await client.post(
        "/graphql", json=[{"query": "{ viewer { userId } }"}], headers=_headers(tenant)
    )
    _only_error(response, status=400, code="BAD_USER_INPUT")


@pytest.mark.parametrize("raw", [b'"a string"', b"5", b"null"])
async def test_json_body_that_is_not_an_object_is_400(app: Any, tenant: TenantFixture, raw: bytes) -> None:
    # A JSON scalar instead of an object must be a client error, not an unhandled exception (500).
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as raw_client:
        response = await raw_client.post(
            "/graphql", content=raw, headers=_headers(tenant, **{"content-type": "application/json"})
        )
    _only_error(response, status=400, code="BAD_USER_INPUT")


async def test_body_over_limit_is_413_and_changes_nothing(
    client: httpx.AsyncClient, tenant: TenantFixture, migrated: Settings
) -> None:
    assert migrated.max_body_bytes == 65536
    raw = _body_of_size(migrated.max_body_bytes + 1, name="Too Big")
    response = await client.post(
        "/graphql", content=raw, headers=_headers(tenant, **{"content-type": "application/json"})
    )
    assert response.status_code == 413
    assert await _contact_names(client, tenant=tenant) == []


async def test_chunked_body_over_limit_is_413_and_changes_nothing(
    client: httpx.AsyncClient, tenant: TenantFixture, migrated: Settings
) -> None:
    raw = _body_of_size(migrated.max_body_bytes * 2, name="Streamed")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit must hold while reading
        for start in range(0, len(raw), 4096):
            yield raw[start : start + 4096]

    response = await client.post(
        "/graphql", content=chunks(), headers=_headers(tenant, **{"content-type": "application/json"})
    )
    assert response.status_code == 413
    assert await _contact_names(client, tenant=tenant) == []


async def test_body_at_limit_is_accepted(
    client: httpx.AsyncClient, tenant: TenantFixture, migrated: Settings
) -> None:
    raw = _body_of_size(migrated.max_body_bytes, name="Just Fits")
    assert len(raw) == migrated.max_body_bytes
    response = await client.post(
        "/graphql", content=raw, headers=_headers(tenant, **{"content-type": "application/json"})
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["createContact"]["userErrors"] == []
    assert await _contact_names(client, tenant=tenant) == ["Just Fits"]


async def test_body_over_limit_gets_a_json_error(
    client: httpx.AsyncClient, tenant: TenantFixture, migrated: Settings
) -> None:
    # Like every other HTTP failure of /graphql, a 413 should be a GraphQL-shaped JSON error.
    raw = _body_of_size(migrated.max_body_bytes + 1, name="Too Big")
    response = await client.post(
        "/graphql", content=raw, headers=_headers(tenant, **{"content-type": "application/json"})
    )
    _only_error(response, status=413, code="BAD_USER_INPUT")


# ---------------------------------------------------------------- parse and validation errors


async def test_unknown_field_is_bad_user_input(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    body = await gql(client, "{ viewer { userId } nope }", token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert "nope" in error["message"]


async def test_unknown_enum_value_in_variables_is_bad_user_input(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    query = (
        "mutation($step: OnboardingStepKey!) { completeOnboardingStep(input: {step: $step}) "
        "{ onboarding { completedCount } } }"
    )
    body = await gql(client, query, {"step": "LAUNCH_ROCKET"}, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    onboarding = await gql(
        client, "{ onboarding { completedCount } }", token=tenant.owner.token, tenant=tenant.uuid
    )
    assert onboarding["data"]["onboarding"] == {"completedCount": 0}


async def test_wrong_variable_type_is_bad_user_input(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    body = await gql(
        client,
        "query($n: Int) { contacts(first: $n) { edges { cursor } } }",
        {"n": "ten"},
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]


async def test_syntax_error_has_a_code(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    body = await gql(client, "{ viewer { userId ", token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["message"].startswith("Syntax Error")
    assert error.get("extensions", {}).get("code") == "BAD_USER_INPUT"


# ---------------------------------------------------------------- query limits


async def test_too_many_aliases_is_query_too_complex_and_runs_nothing(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    fields = " ".join(
        f'c{i}: createContact(input: {{displayName: "Alias {i}"}}) {{ contact {{ id }} }}' for i in range(20)
    )
    body = await gql(client, f"mutation {{ {fields} }}", token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
    assert await _contact_names(client, tenant=tenant) == []


async def test_fifteen_aliases_are_allowed(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    fields = " ".join(f"v{i}: viewer {{ userId }}" for i in range(15))
    body = await gql(client, f"{{ {fields} }}", token=tenant.owner.token, tenant=tenant.uuid)
    assert "errors" not in body
    assert body["data"] == {f"v{i}": {"userId": tenant.owner.id} for i in range(15)}


async def test_deep_query_is_query_too_complex(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    # The schema has no cycles, so depth is built through nested fragments; depth is checked on the
    # document, before (and besides) whether the fields exist.
    fragments = "".join(f"fragment F{i} on Query {{ a{i} {{ ...F{i + 1} }} }} " for i in range(12))
    query = "{ ...F0 } " + fragments + "fragment F12 on Query { leaf }"
    body = await gql(client, query, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"] is None
    depth_errors = [e for e in body["errors"] if "exceeds maximum operation depth" in e["message"]]
    assert len(depth_errors) == 1
    assert depth_errors[0]["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
    assert {e["extensions"]["code"] for e in body["errors"]} <= {"QUERY_TOO_COMPLEX", "BAD_USER_INPUT"}


async def test_token_limit_is_query_too_complex(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    # 2000 tokens is the configured limit; 700 `viewer { userId }` selections are 2800 tokens.
    query = "{ " + " ".join(["viewer { userId }"] * 700) + " }"
    body = await gql(client, query, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"] is None
    (error,) = body["errors"]
    assert "2000 tokens" in error["message"]
    assert error.get("extensions", {}).get("code") == "QUERY_TOO_COMPLEX"


# ---------------------------------------------------------------- GET


async def test_get_query_with_auth(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    response = await client.get("/graphql", params={"query": "{viewer{userId}}"}, headers=_headers(tenant))
    assert response.status_code == 200
    assert without_cost(response.json()) == {"data": {"viewer": {"userId": tenant.owner.id}}}


async def test_get_query_without_auth_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": "{viewer{userId}}"})
    _only_error(response, status=401, code="UNAUTHENTICATED")


@pytest.mark.parametrize(
    ("query", "operation"),
    [
        (CREATE_CONTACT % "Via GET", None),
        (
            "query A { viewer { userId } } " + (CREATE_CONTACT % "Via GET").replace("mutation", "mutation B"),
            "B",
        ),
    ],
)
async def test_mutation_via_get_is_refused(
    client: httpx.AsyncClient, tenant: TenantFixture, query: str, operation: str | None
) -> None:
    params = {"query": query} | ({"operationName": operation} if operation else {})
    response = await client.get("/graphql", params=params, headers=_headers(tenant))
    error = _only_error(response, status=400, code="BAD_USER_INPUT")
    assert error["message"] == "mutations are not allowed when using GET"
    assert await _contact_names(client, tenant=tenant) == []


# ---------------------------------------------------------------- internal errors


class _BrokenUnitOfWork:
    def for_actor(self, actor: Actor) -> Any:
        raise RuntimeError("secret detail")


async def test_internal_errors_are_masked_and_logged(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    schema = build_schema()
    context = Context(
        services=dataclasses.replace(runtime.app_services, uow=_BrokenUnitOfWork()),  # type: ignore[arg-type]
        actor=Actor(user_id="u", tenant_id=uuid.uuid4(), role=Role.OWNER_ADMIN),
    )
    with caplog.at_level(logging.ERROR, logger="brandvx.graphql"):
        result = await schema.execute("{ settings { timezone } }", context_value=context)

    assert result.data is None
    assert result.errors is not None
    (error,) = result.errors
    formatted = error.formatted
    assert formatted["message"] == "Internal server error"
    assert formatted["path"] == ["settings"]
    extensions = formatted["extensions"]
    assert set(extensions) == {"code", "errorId"}
    assert extensions["code"] == "INTERNAL"
    error_id = extensions["errorId"]
    assert re.fullmatch(r"[0-9a-f]{16}", error_id)
    assert "secret detail" not in json.dumps(formatted)
    assert error.original_error is None

    records = [r for r in caplog.records if r.name == "brandvx.graphql" and error_id in r.getMessage()]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None
    assert str(records[0].exc_info[1]) == "secret detail"


async def test_each_internal_error_gets_its_own_id(runtime: Runtime) -> None:
    schema = build_schema()
    context = Context(
        services=dataclasses.replace(runtime.app_services, uow=_BrokenUnitOfWork()),  # type: ignore[arg-type]
        actor=Actor(user_id="u", tenant_id=uuid.uuid4(), role=Role.OWNER_ADMIN),
    )
    ids = []
    for query in ("{ settings { timezone } }", "{ onboarding { complete } }"):
        result = await schema.execute(query, context_value=context)
        assert result.errors is not None
        (error,) = result.errors
        assert error.message == "Internal server error"
        ids.append(error.formatted["extensions"]["errorId"])
    assert ids[0] != ids[1]


async def test_domain_errors_are_not_masked(runtime: Runtime) -> None:
    schema = build_schema()
    context = Context(services=dataclasses.replace(runtime.app_services, uow=_BrokenUnitOfWork()))  # type: ignore[arg-type]
    result = await schema.execute("{ settings { timezone } }", context_value=context)
    assert result.errors is not None
    (error,) = result.errors
    assert error.formatted["message"] == "Not signed in"
    assert error.formatted["extensions"] == {"code": "FORBIDDEN"}


async def test_a_cursor_from_another_list_is_bad_input(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    created = await gql(
        client,
        'mutation { createContact(input: {displayName: "Cursor Test"}) { contact { id } } }',
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    assert created["data"]["createContact"]["contact"] is not None
    listed = await gql(
        client,
        "{ contacts(first: 1) { pageInfo { endCursor } } }",
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    contacts_cursor = listed["data"]["contacts"]["pageInfo"]["endCursor"]
    # Contacts are ordered by time, inventory by name: the cursor cannot mean anything there.
    body = await gql(
        client,
        "query($a: String) { inventoryItems(after: $a) { edges { cursor } } }",
        {"a": contacts_cursor},
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "This cursor belongs to another list"


async def test_a_subscription_over_http_is_told_where_subscriptions_are_served(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    job = "Sm9iOjAwMDAwMDAwLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMA"
    query = f'subscription {{ jobProgress(jobId: "{job}") {{ progress }} }}'
    body = await gql(client, query, token=tenant.owner.token, tenant=tenant.uuid, expect_status=400)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "graphql-transport-ws" in error["message"]
