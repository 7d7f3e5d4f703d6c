"""One unit of work per request: transactions counted by SQLAlchemy's ``begin`` event on the app's engine."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text

from brandvx.runtime import Runtime
from persistence.unit_of_work import Scope
from tests.conftest import StatementCounter, TenantFixture, gql

SPA_QUERY = """
query {
  viewer { userId role tenant { id name } }
  settings { timezone }
  onboarding { complete }
  contacts(first: 20) { edges { node { id displayName } } pageInfo { hasNextPage } }
  connectedAccounts { provider status }
  jobs(first: 10) { edges { node { id status } } }
  apiKeys { id name }
}
"""

SESSIONS_WITH_MESSAGES = """
query {
  viewer { tenant { id name } }
  chatSessions(first: 10) {
    edges { node { id title messages(first: 5) { edges { node { id role content } } } } }
  }
}
"""

START_SESSION = "mutation { startChatSession(input: {}) { session { id } userErrors { code } } }"
SEND = """
mutation($s: ID!, $c: String!) {
  sendChatMessage(input: {sessionId: $s, content: $c}) { replyMessage { id } userErrors { code } }
}
"""
CREATE_CONTACT = """
mutation($name: String!, $email: String) {
  createContact(input: {displayName: $name, email: $email}) {
    contact { id displayName } userErrors { field code }
  }
}
"""


async def _contacts(client: httpx.AsyncClient, tenant: TenantFixture, count: int) -> None:
    for i in range(count):
        body = await gql(
            client, CREATE_CONTACT, {"name": f"Guest {i}"}, token=tenant.owner.token, tenant=tenant.uuid
        )
        assert body["data"]["createContact"]["userErrors"] == []


async def test_spa_query_opens_one_transaction(
    client: httpx.AsyncClient, tenant: TenantFixture, count_statements: StatementCounter
) -> None:
    await _contacts(client, tenant, 3)
    count_statements.clear()
    body = await gql(client, SPA_QUERY, token=tenant.owner.token, tenant=tenant.uuid)
    assert "errors" not in body, body
    assert len(body["data"]["contacts"]["edges"]) == 3
    assert body["data"]["viewer"]["tenant"]["name"] == "Salon"
    # Authentication, seven root fields and the tenant loader: one BEGIN, one scope statement.
    assert count_statements.begins == 1
    assert sum("set_config" in s for s in count_statements.statements) <= 2  # scope; role after sign-in


async def test_list_with_nested_loaders_opens_one_transaction(
    client: httpx.AsyncClient, tenant: TenantFixture, count_statements: StatementCounter
) -> None:
    for _ in range(2):
        started = await gql(client, START_SESSION, token=tenant.owner.token, tenant=tenant.uuid)
        session_id = started["data"]["startChatSession"]["session"]["id"]
        sent = await gql(
            client, SEND, {"s": session_id, "c": "hello"}, token=tenant.owner.token, tenant=tenant.uuid
        )
        assert sent["data"]["sendChatMessage"]["userErrors"] == []
    count_statements.clear()
    body = await gql(client, SESSIONS_WITH_MESSAGES, token=tenant.owner.token, tenant=tenant.uuid)
    assert "errors" not in body, body
    sessions = body["data"]["chatSessions"]["edges"]
    assert len(sessions) == 2
    assert all(len(s["node"]["messages"]["edges"]) == 2 for s in sessions)
    assert count_statements.begins == 1


async def test_mutation_field_is_one_transaction_with_sign_in(
    client: httpx.AsyncClient, tenant: TenantFixture, count_statements: StatementCounter
) -> None:
    count_statements.clear()
    body = await gql(
        client,
        CREATE_CONTACT,
        {"name": "Ada", "email": "ada@example.com"},
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    assert body["data"]["createContact"]["userErrors"] == []
    assert count_statements.begins == 1


async def test_each_mutation_field_commits_on_its_own(
    client: httpx.AsyncClient, tenant: TenantFixture, count_statements: StatementCounter
) -> None:
    two = """
    mutation {
      ok: createContact(input: {displayName: "Grace", email: "grace@example.com"}) {
        contact { id } userErrors { code }
      }
      dup: createContact(input: {displayName: "Grace again", email: "grace@example.com"}) {
        contact { id } userErrors { code }
      }
    }
    """
    count_statements.clear()
    body = await gql(client, two, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"]["ok"]["userErrors"] == []
    assert body["data"]["dup"]["contact"] is None
    assert [e["code"] for e in body["data"]["dup"]["userErrors"]] == ["CONFLICT"]
    assert count_statements.begins == 2  # one per mutation field
    listed = await gql(
        client,
        "{ contacts { edges { node { displayName } } } }",
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    assert [e["node"]["displayName"] for e in listed["data"]["contacts"]["edges"]] == ["Grace"]


async def test_a_failed_mutation_changes_nothing(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    body = await gql(
        client,
        CREATE_CONTACT,
        {"name": "Bad", "email": "not-an-email"},
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    assert body["data"]["createContact"]["contact"] is None
    assert body["data"]["createContact"]["userErrors"]
    listed = await gql(
        client, "{ contacts { edges { node { id } } } }", token=tenant.owner.token, tenant=tenant.uuid
    )
    assert listed["data"]["contacts"]["edges"] == []


# ---------------------------------------------------------------- the unit itself


async def test_after_commit_runs_only_after_a_commit(runtime: Runtime) -> None:
    ran: list[str] = []

    async def mark(name: str) -> None:
        ran.append(name)

    unit = runtime.db.unit(Scope(role="SYSTEM"))
    async with unit.join() as uow:
        await uow.connection.execute(text("SELECT 1"))
        uow.after_commit(lambda: mark("committed"))
        assert ran == []  # not before the commit
    assert await unit.finish() is True
    assert ran == ["committed"]

    async def fail_inside() -> None:
        async with unit.join() as uow:
            uow.after_commit(lambda: mark("rolled back"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail_inside()
    assert await unit.finish() is False  # doomed by the error: rolled back
    assert ran == ["committed"]


async def test_concurrent_users_share_one_transaction(runtime: Runtime) -> None:
    import asyncio

    unit = runtime.db.unit(Scope(tenant_id=uuid.uuid4(), role="SYSTEM"))

    async def txid() -> int:
        async with unit.join() as uow:
            value = await uow.connection.scalar(text("SELECT txid_current()"))
            assert isinstance(value, int)
            return value

    ids = await asyncio.gather(*(txid() for _ in range(5)))
    assert len(set(ids)) == 1
    assert unit.transactions == 1
    await unit.finish()
    assert await txid() != ids[0]  # used again: a new transaction
    await unit.finish()
