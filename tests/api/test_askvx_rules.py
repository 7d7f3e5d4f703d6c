"""AskVX rules: monthly caps and usage, tenancy, TrainVX, the nightly crons, strategy jobs, analytics.

Uses the stack of test_askvx_stream.py (API and worker processes, FakeOpenAI); a stack per module.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import deserialize_job, deserialize_result
from redis.asyncio import Redis

from brandvx.runtime import worker_runtime
from domain import prompts
from jobs.askvx import askvx_reply, askvx_retention, askvx_sweep
from tests.api.test_askvx_stream import (
    MODEL,
    SESSIONS,
    Stack,
    api,
    ask,
    askvx_stack,
    call,
    message,
    new_tenant,
    owner_db,
    send,
    socket,
    stack,
    start_session,
    subscribe,
    uuid_of,
    wait_finished,
)
from tests.conftest import TenantFixture, app_client, gql, make_tenant
from tests.fakes.openai_server import Script
from tests.processes import frame

pytestmark = pytest.mark.slow

__all__ = ["api", "askvx_stack", "stack"]  # fixtures, imported to be used here

THIS_MONTH = "date_trunc('month', now() AT TIME ZONE 'UTC')::date"


# ---------------------------------------------------------------- caps and usage


async def set_usage(stack: Stack, tenant: TenantFixture, *, tokens: int, messages: int) -> None:
    async with owner_db(stack.settings, tenant.uuid) as db:
        await db.execute(
            "INSERT INTO usage_limits (tenant_id, period, ai_tokens_used, ai_messages_used) "
            f"VALUES ($1::uuid, {THIS_MONTH}, $2, $3) ON CONFLICT (tenant_id, period) DO UPDATE "
            "SET ai_tokens_used = EXCLUDED.ai_tokens_used, ai_messages_used = EXCLUDED.ai_messages_used",
            tenant.uuid,
            tokens,
            messages,
        )


async def usage(stack: Stack, tenant: TenantFixture) -> tuple[int, int] | None:
    async with owner_db(stack.settings, tenant.uuid) as db:
        row = await db.fetchrow(
            "SELECT ai_tokens_used, ai_messages_used FROM usage_limits "
            f"WHERE tenant_id = $1::uuid AND period = {THIS_MONTH}",
            tenant.uuid,
        )
    return (row["ai_tokens_used"], row["ai_messages_used"]) if row else None


def limit_error(message: str) -> dict[str, Any]:
    return {
        "userMessage": None,
        "replyMessage": None,
        "userErrors": [{"field": None, "message": message, "code": "LIMIT_EXCEEDED"}],
    }


MESSAGE_CAP = "This month's AskVX message limit (100) on the Lite plan is reached"
TOKEN_CAP = "This month's AI token limit (50000) on the Lite plan is reached"


async def reply_jobs_of(stack: Stack, tenant: TenantFixture) -> list[str]:
    """The AskVX reply jobs ever enqueued for a tenant: queued or running (ARQ's job key) or done
    (its result, kept an hour). A request that enqueued one shows here at once, with no wait."""
    found: list[str] = []
    redis = Redis.from_url(stack.settings.redis_url or "")
    try:
        for prefix, read in ((job_key_prefix, deserialize_job), (result_key_prefix, deserialize_result)):
            async for key in redis.scan_iter(match=f"{prefix}askvx-reply:*"):
                raw = await redis.get(key)
                if raw is not None and read(raw).args[:1] == (str(tenant.uuid),):
                    found.append(key.decode())
    finally:
        await redis.aclose()
    return found


async def stored_messages(api: httpx.AsyncClient, tenant: TenantFixture) -> list[dict[str, Any]]:
    edges = (await call(api, tenant, SESSIONS))["chatSessions"]["edges"]
    return [m["node"] for s in edges for m in s["node"]["messages"]["edges"]]


async def test_lite_plan_caps(stack: Stack, api: httpx.AsyncClient) -> None:
    tenant = await new_tenant(api)
    plans = await call(
        api, tenant, "{ plans { tier aiTokensMonthly messagesMonthly } viewer { tenant { planTier } } }"
    )
    assert plans["viewer"]["tenant"]["planTier"] == "LITE"
    assert {"tier": "LITE", "aiTokensMonthly": 50000, "messagesMonthly": 100} in plans["plans"]


async def test_message_cap_refuses_and_stores_nothing(stack: Stack, api: httpx.AsyncClient) -> None:
    tenant = await new_tenant(api)
    session = await start_session(api, tenant)
    await set_usage(stack, tenant, tokens=0, messages=100)
    assert await send(api, tenant, session, "One more question?") == limit_error(MESSAGE_CAP)
    assert await stored_messages(api, tenant) == []
    assert await usage(stack, tenant) == (0, 100)  # the refused message is not counted
    assert await reply_jobs_of(stack, tenant) == []
    assert stack.fake.requests == []


async def test_token_cap_refuses(stack: Stack, api: httpx.AsyncClient) -> None:
    tenant = await new_tenant(api)
    session = await start_session(api, tenant)
    await set_usage(stack, tenant, tokens=50000, messages=0)
    assert await send(api, tenant, session, "Still there?") == limit_error(TOKEN_CAP)
    assert await stored_messages(api, tenant) == []
    assert await usage(stack, tenant) == (50000, 0)
    assert await reply_jobs_of(stack, tenant) == []
    assert stack.fake.requests == []


async def test_a_reply_counts_one_message_and_the_providers_tokens(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    stack.fake.enqueue(Script(deltas=["Yes."], usage=(321, 45)), Script(deltas=["Last one."], usage=(70, 3)))
    tenant = await new_tenant(api)
    session = await start_session(api, tenant)
    assert await usage(stack, tenant) is None
    reply = await ask(api, tenant, session, "Can I raise prices?")
    assert (await wait_finished(api, tenant, reply))["status"] == "COMPLETE"
    assert await usage(stack, tenant) == (321 + 45, 1)

    # The 100th message of the month is allowed; the 101st is not.
    await set_usage(stack, tenant, tokens=49_000, messages=99)
    reply = await ask(api, tenant, session, "And my last question?")
    assert (await wait_finished(api, tenant, reply))["status"] == "COMPLETE"
    assert await usage(stack, tenant) == (49_000 + 70 + 3, 100)
    assert await send(api, tenant, session, "One too many") == limit_error(MESSAGE_CAP)
    assert len(await stored_messages(api, tenant)) == 4
    assert len(stack.fake.requests) == 2


# ---------------------------------------------------------------- tenancy


async def a_finished_reply(stack: Stack, api: httpx.AsyncClient) -> tuple[TenantFixture, str, str]:
    stack.fake.enqueue(Script(deltas=["Private ", "answer for A."]))
    a = await new_tenant(api, "Salon A")
    session = await start_session(api, a, "A's plans")
    reply = await ask(api, a, session, "What is A's secret pricing?")
    assert (await wait_finished(api, a, reply))["status"] == "COMPLETE"
    return a, session, reply


async def test_other_tenant_cannot_follow_a_reply(stack: Stack, api: httpx.AsyncClient) -> None:
    _, _, reply = await a_finished_reply(stack, api)
    b = await new_tenant(api, "Salon B")
    async with socket(stack, b) as ws:
        await subscribe(ws, "x", reply)
        refused = await frame(ws)
        if refused["type"] == "next":
            assert await frame(ws) == {"id": "x", "type": "complete"}
    assert "Private" not in json.dumps(refused)
    assert refused["id"] == "x"
    assert refused["type"] in {"next", "error"}, refused
    if refused["type"] == "next":
        assert refused["payload"]["data"] is None, refused
        errors = refused["payload"]["errors"]
    else:
        errors = refused["payload"]
    assert [(e["message"], e.get("extensions", {}).get("code")) for e in errors] == [
        ("No AskVX reply with this ID", "NOT_FOUND")
    ]


async def test_other_tenant_cannot_see_or_write_into_a_session(stack: Stack, api: httpx.AsyncClient) -> None:
    a, session, reply = await a_finished_reply(stack, api)
    b = await new_tenant(api, "Salon B")
    requests_before = len(stack.fake.requests)
    payload = await send(api, b, session, "Let me in")
    assert payload == {
        "userMessage": None,
        "replyMessage": None,
        "userErrors": [{"field": ["sessionId"], "message": "Chat session not found", "code": "NOT_FOUND"}],
    }
    assert (await call(api, b, "query($id: ID!) { node(id: $id) { id } }", id=session))["node"] is None
    assert await message(api, b, reply) is None
    assert (await call(api, b, SESSIONS))["chatSessions"]["edges"] == []
    # A's session is untouched by B's attempt, and nothing was sent to the provider.
    edges = (await call(api, a, SESSIONS))["chatSessions"]["edges"]
    assert [e["node"]["content"] for e in edges[0]["node"]["messages"]["edges"]] == [
        "What is A's secret pricing?",
        "Private answer for A.",
    ]
    assert len(await reply_jobs_of(stack, a)) == 1  # A's own reply is seen: the check can see jobs
    assert await reply_jobs_of(stack, b) == []
    assert len(stack.fake.requests) == requests_before


# ---------------------------------------------------------------- TrainVX

UPSERT = """
mutation($k: String!, $v: String!) {
  upsertTrainvxMemory(input: {key: $k, value: $v}) {
    memory { id key value } userErrors { field message code }
  }
}
"""
DELETE = """
mutation($k: String!) {
  deleteTrainvxMemory(input: {key: $k}) { deletedKey userErrors { field message code } }
}
"""
MEMORIES = "{ trainvxMemories { key value } }"
BRAND = """
mutation($n: String!) {
  updateSettings(input: {brandProfile: {
    businessName: $n, tone: "Warm and direct", services: ["Balayage", "Gloss"]
  }}) {
    settings { brandProfile { businessName } } userErrors { code }
  }
}
"""


def invalid(field: str, text: str, code: str = "INVALID") -> list[dict[str, Any]]:
    return [{"field": [field], "message": text, "code": code}]


async def test_trainvx_memories_and_the_prompt(stack: Stack, api: httpx.AsyncClient) -> None:
    tenant = await new_tenant(api)
    long_key, long_value = "k" * 100, "v" * 4000
    stored = (await call(api, tenant, UPSERT, k=long_key, v=long_value))["upsertTrainvxMemory"]
    assert stored["userErrors"] == []
    assert (stored["memory"]["key"], stored["memory"]["value"]) == (long_key, long_value)
    too_long_key = (await call(api, tenant, UPSERT, k="k" * 101, v="x"))["upsertTrainvxMemory"]
    assert too_long_key == {"memory": None, "userErrors": invalid("key", "Key must be 1 to 100 characters")}
    too_long_value = (await call(api, tenant, UPSERT, k="Big", v="v" * 4001))["upsertTrainvxMemory"]
    assert too_long_value == {
        "memory": None,
        "userErrors": invalid("value", "Value must be 1 to 4000 characters"),
    }

    first = (await call(api, tenant, UPSERT, k="Signature service", v="Balayage"))["upsertTrainvxMemory"]
    value = "Balayage with a gloss finish, 3 hours"
    second = (await call(api, tenant, UPSERT, k="Signature service", v=value))["upsertTrainvxMemory"]
    assert second == {
        "memory": {"id": first["memory"]["id"], "key": "Signature service", "value": value},
        "userErrors": [],
    }
    assert (await call(api, tenant, MEMORIES))["trainvxMemories"] == [
        {"key": "Signature service", "value": value},
        {"key": long_key, "value": long_value},
    ]

    deleted = (await call(api, tenant, DELETE, k=long_key))["deleteTrainvxMemory"]
    assert deleted == {"deletedKey": long_key, "userErrors": []}
    again = (await call(api, tenant, DELETE, k=long_key))["deleteTrainvxMemory"]
    assert again == {"deletedKey": None, "userErrors": invalid("key", "No memory with this key", "NOT_FOUND")}
    assert (await call(api, tenant, MEMORIES))["trainvxMemories"] == [
        {"key": "Signature service", "value": value}
    ]
    other = await new_tenant(api, "Other Salon")
    assert (await call(api, other, MEMORIES))["trainvxMemories"] == []

    brand = (await call(api, tenant, BRAND, n="Maple & Fern Studio"))["updateSettings"]
    assert brand == {"settings": {"brandProfile": {"businessName": "Maple & Fern Studio"}}, "userErrors": []}
    stack.fake.enqueue(Script(deltas=["Lead ", "with balayage."]))
    reply = await ask(api, tenant, await start_session(api, tenant), "What should I promote?")
    assert (await wait_finished(api, tenant, reply))["status"] == "COMPLETE"
    [request] = stack.fake.requests
    system = request.input[0]
    assert system["role"] == "system"
    assert (
        "Business: Maple & Fern Studio\nTone: Warm and direct\nServices: Balayage, Gloss" in system["content"]
    )
    assert f"{prompts.MEMORIES_HEADER}\n- Signature service: {value}" in system["content"]
    assert long_key not in system["content"]
    assert request.input[-1] == {"role": "user", "content": "What should I promote?"}


# ---------------------------------------------------------------- crons (run in-process)


async def insert_session(db: Any, tenant: TenantFixture) -> uuid.UUID:
    session = uuid.uuid4()
    await db.execute(
        "INSERT INTO askvx_sessions (id, tenant_id, user_id, title) VALUES ($1, $2::uuid, $3, 'Old chat')",
        session,
        tenant.uuid,
        tenant.owner.id,
    )
    return session


async def insert_message(
    db: Any, tenant: TenantFixture, session: uuid.UUID, status: str, age: timedelta
) -> str:
    ident = uuid.uuid4()
    await db.execute(
        "INSERT INTO askvx_messages (id, tenant_id, session_id, role, content, status, created_at) "
        "VALUES ($1, $2::uuid, $3, 'ASSISTANT', 'Some advice', $4, now() - $5::interval)",
        ident,
        tenant.uuid,
        session,
        status,
        age,
    )
    return str(ident)


def global_id(type_name: str, ident: str) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{ident}".encode()).decode().rstrip("=")


async def test_retention_and_sweep_crons(stack: Stack, api: httpx.AsyncClient) -> None:
    tenant = await new_tenant(api)
    async with owner_db(stack.settings, tenant.uuid) as db:
        session = await insert_session(db, tenant)
        old = await insert_message(db, tenant, session, "COMPLETE", timedelta(days=100))
        kept = await insert_message(db, tenant, session, "COMPLETE", timedelta(days=89))
        stuck = await insert_message(db, tenant, session, "STREAMING", timedelta(minutes=20))
        running = await insert_message(db, tenant, session, "STREAMING", timedelta(minutes=2))
        # Being written by a worker (its heartbeat is fresh): recover_work leaves it to that worker.
        await db.execute("UPDATE askvx_messages SET heartbeat_at = now() WHERE id = $1::uuid", running)
    rt = await asyncio.wait_for(worker_runtime(stack.settings), 20)
    try:
        assert await askvx_retention({"runtime": rt}) >= 1
        assert await askvx_sweep({"runtime": rt}) >= 1
    finally:
        await rt.close()

    async def status(ident: str) -> tuple[str, str | None] | None:
        found = await message(api, tenant, global_id("ChatMessage", ident))
        return (found["status"], found["error"]) if found else None

    assert await status(old) is None
    assert await status(kept) == ("COMPLETE", None)
    assert await status(stuck) == ("FAILED", "The reply was interrupted. Ask again.")
    assert await status(running) == ("STREAMING", None)
    async with owner_db(stack.settings, tenant.uuid) as db:
        left = {
            str(r["id"])
            for r in await db.fetch("SELECT id FROM askvx_messages WHERE session_id = $1", session)
        }
    assert left == {kept, stuck, running}


# ---------------------------------------------------------------- strategy jobs

GENERATE = """
mutation($g: String) {
  generateStrategy(input: {goals: $g}) {
    job { id kind status progress result error } userErrors { code message }
  }
}
"""
JOB = "query($id: ID!) { job(id: $id) { id kind status progress message result error } }"


async def test_generate_strategy_job(stack: Stack, api: httpx.AsyncClient) -> None:
    deltas = ["## Positioning\n", "Own lived-in colour.\n", "## Client retention\n", "Rebook at checkout."]
    document = "".join(deltas)
    stack.fake.enqueue(Script(deltas=deltas, delay_between=0.3, usage=(900, 120)))
    tenant = await new_tenant(api)
    goals = "Fill weekday mornings"
    first = (await call(api, tenant, GENERATE, g=goals))["generateStrategy"]
    second = (await call(api, tenant, GENERATE, g=goals))["generateStrategy"]
    assert first["userErrors"] == []
    assert second["userErrors"] == []
    job = first["job"]
    assert (job["kind"], job["status"], job["progress"], job["result"], job["error"]) == (
        "strategy",
        "PENDING",
        0.0,
        None,
        None,
    )
    assert second["job"]["id"] == job["id"]
    assert second["job"]["status"] in {"PENDING", "RUNNING"}

    found = await wait_job(api, tenant, job["id"])
    assert found["status"] == "COMPLETED", found
    assert (found["progress"], found["message"], found["error"]) == (1.0, "Done", None)
    result = found["result"]
    assert result == {"artifactId": result["artifactId"], "kind": "strategy", "characters": len(document)}
    assert result["characters"] > 0
    async with owner_db(stack.settings, tenant.uuid) as db:
        row = await db.fetchrow(
            "SELECT kind, content, job_id FROM onboarding_artifacts WHERE id = $1::uuid", result["artifactId"]
        )
    assert row is not None
    assert (row["kind"], row["content"], str(row["job_id"])) == ("strategy", document, uuid_of(job["id"]))
    [request] = stack.fake.requests  # one job ran, for both calls
    assert request.input[0]["role"] == "system"
    assert request.input[-1]["role"] == "user"
    assert goals in request.input[-1]["content"]
    other = await new_tenant(api, "Other Salon")
    assert (await call(api, other, JOB, id=job["id"]))["job"] is None


# ---------------------------------------------------------------- analytics


class Recorder:
    """Stands in for the Analytics port."""

    def __init__(self) -> None:
        self.captured: list[tuple[str, str, dict[str, Any]]] = []

    def capture(self, distinct_id: str, event: str, properties: dict[str, Any]) -> None:
        self.captured.append((distinct_id, event, dict(properties)))

    def shutdown(self) -> None:
        return None


def words(*texts: str) -> set[str]:
    return {w for t in texts for w in re.findall(r"[a-z0-9]+", t.lower())}


async def test_analytics_carry_no_text(stack: Stack) -> None:
    # An in-process API (as the `client` fixture, but with a Redis namespace no worker listens on, so
    # the enqueued reply job is left for this test to run itself).
    namespace = f"askvx-inproc-{uuid.uuid4().hex[:8]}"
    settings = stack.settings.model_copy(update={"redis_namespace": namespace})
    question = "Which regulars skipped their autumn appointment?"
    deltas = ["Marisol ", "and ", "Theo ", "missed ", "October."]
    answer = "".join(deltas)
    enqueued: list[str] = []
    try:
        async with app_client(settings) as (_, client):
            tenant = await make_tenant(client, name="Quiet Salon")
            session = await start_session(client, tenant)
            reply = await ask(client, tenant, session, question)
            failing = await ask(client, tenant, session, "Whisper Zanzibar secrets")
            enqueued += [f"arq:job:askvx-reply:{uuid_of(m)}" for m in (reply, failing)]
            rt = await asyncio.wait_for(worker_runtime(settings), 20)
            recorder = Recorder()
            rt2 = dataclasses.replace(rt, analytics=recorder)
            try:
                stack.fake.enqueue(Script(deltas=deltas, usage=(55, 8)))
                assert await askvx_reply({"runtime": rt2}, tenant.uuid, uuid_of(reply)) == "complete"
                stack.fake.enqueue(Script(deltas=["Zanzibar ", "whispers"], fail_after=1))
                assert (
                    await askvx_reply({"runtime": rt2}, tenant.uuid, uuid_of(failing)) == "failed: provider"
                )
            finally:
                await rt.close()
            assert (await message(client, tenant, reply) or {}).get("content") == answer
    finally:
        redis = Redis.from_url(settings.redis_url or "")
        async for key in redis.scan_iter(match=f"bvx:{namespace}:*"):
            await redis.delete(key)
        for key in enqueued:  # ARQ keeps job bodies outside the namespace
            await redis.delete(key)
        await redis.aclose()

    assert [(who, event) for who, event, _ in recorder.captured] == [
        (tenant.uuid, "ask.response_completed"),
        (tenant.uuid, "ask.response_error"),
    ]
    completed, failed = (props for _, _, props in recorder.captured)
    assert set(completed) == {"model", "plan", "latency_ms", "offline", "input_tokens", "output_tokens"}
    assert (completed["model"], completed["plan"], completed["offline"]) == (f"openai:{MODEL}", "LITE", False)
    assert (completed["input_tokens"], completed["output_tokens"]) == (55, 8)
    assert set(failed) == {"model", "plan", "latency_ms", "offline", "error_kind"}
    assert failed["error_kind"] == "provider"
    private = words(question, answer, "Whisper Zanzibar secrets", "Zanzibar whispers")
    for props in (completed, failed):
        assert all(isinstance(v, str | int | float | bool) for v in props.values())
        for value in props.values():
            leaked = {w for w in private if w in str(value).lower()}
            assert not leaked, (value, leaked)
    assert json.dumps(recorder.captured).count("Zanzibar") == 0


async def wait_job(api: httpx.AsyncClient, tenant: TenantFixture, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            found: dict[str, Any] = (await call(api, tenant, JOB, id=job_id))["job"]
            if found["status"] not in {"PENDING", "RUNNING"}:
                return found
            await asyncio.sleep(0.1)


async def test_concurrent_generate_strategy_calls_share_one_job(stack: Stack, api: httpx.AsyncClient) -> None:
    # A double click sends both requests at once: each must get the one running job, not an error.
    tenants = [await new_tenant(api, f"Busy Salon {i}") for i in range(3)]
    stack.fake.enqueue(*[Script(deltas=["## Plan\n", "Rebook."], delay_between=0.3) for _ in tenants])

    async def generate(tenant: TenantFixture) -> dict[str, Any]:
        return await gql(api, GENERATE, {"g": None}, token=tenant.owner.token, tenant=tenant.uuid)

    rounds = [await asyncio.gather(*[generate(t) for _ in range(8)]) for t in tenants]
    ids = [{b["data"]["generateStrategy"]["job"]["id"] for b in bodies if b.get("data")} for bodies in rounds]
    for tenant, job_ids in zip(tenants, ids, strict=True):
        for job_id in job_ids:  # let every job end before judging, so none outlives this test
            assert (await wait_job(api, tenant, job_id))["status"] == "COMPLETED"
    errors = [e for bodies in rounds for b in bodies for e in b.get("errors", [])]
    assert errors == []
    assert [len(job_ids) for job_ids in ids] == [1, 1, 1]
    assert len(stack.fake.requests) == len(tenants)
