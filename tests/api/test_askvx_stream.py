"""AskVX replies end to end: `brandvx serve` (API) and `brandvx worker` in their own processes, a
real graphql-transport-ws socket, and FakeOpenAI speaking the Responses API over HTTP.

The stack (and its helpers) is shared with test_askvx_rules.py, which imports the fixtures.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import redis
from sqlalchemy.engine import make_url
from websockets.asyncio.client import ClientConnection

from brandvx.settings import Settings
from tests.conftest import TenantFixture, free_port, gql, make_tenant, make_user
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.processes import (
    brandvx_env,
    frame,
    graphql_ws,
    next_payloads,
    spawn_brandvx,
    start_subscription,
    stop_process,
    wait_for_heartbeat,
    wait_until_ready,
)

pytestmark = pytest.mark.slow

API_KEY = "sk-test-askvx-" + uuid.uuid4().hex
MODEL = "gpt-askvx-test"
IDLE_TIMEOUT = 1.5
AI_TIMEOUT = 4.0


@dataclass(frozen=True)
class Stack:
    fake: FakeOpenAI
    base_url: str
    ws_url: str
    namespace: str
    settings: Settings  # the servers of this run, the fake as provider, this stack's namespace


@pytest.fixture(scope="module")
def askvx_stack(migrated: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    namespace = f"askvx-{uuid.uuid4().hex[:10]}"
    fake = FakeOpenAI(api_key=API_KEY).start()
    env = brandvx_env(
        migrated,
        namespace=namespace,
        data_dir=tmp_path_factory.mktemp("askvx-data"),
        extra={
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": fake.base_url,
            "BRANDVX_AI_MODEL": MODEL,
            "BRANDVX_AI_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
            "BRANDVX_AI_TIMEOUT_SECONDS": str(AI_TIMEOUT),
            "BRANDVX_AI_MAX_RETRIES": "0",
        },
    )
    logs = tmp_path_factory.mktemp("askvx-log")
    port = free_port()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        serve_args = ("serve", "--port", str(port), "--no-worker", "--no-migrate")
        processes.append(spawn_brandvx(*serve_args, env=env, log=logs / "serve.log"))
        processes.append(spawn_brandvx("worker", env=env, log=logs / "worker.log"))
        api, worker = processes
        base = f"http://127.0.0.1:{port}"
        store = redis.Redis.from_url(migrated.redis_url or "")
        wait_until_ready(api, base, logs / "serve.log")
        wait_for_heartbeat(worker, store, namespace, logs / "worker.log")
        settings = migrated.model_copy(
            update={
                "redis_namespace": namespace,
                "openai_api_key": API_KEY,
                "openai_base_url": fake.base_url,
                "ai_model": MODEL,
                "ai_idle_timeout_seconds": IDLE_TIMEOUT,
                "ai_timeout_seconds": AI_TIMEOUT,
                "ai_max_retries": 0,
            }
        )
        yield Stack(fake, base, f"ws://127.0.0.1:{port}/graphql", namespace, settings)
    finally:
        for process in processes:
            stop_process(process)
        fake.stop()
        cleanup = redis.Redis.from_url(migrated.redis_url or "")
        for key in cleanup.scan_iter(match=f"bvx:{namespace}:*"):
            cleanup.delete(key)
        cleanup.close()


@pytest.fixture
def stack(askvx_stack: Stack) -> Stack:
    askvx_stack.fake.reset()
    return askvx_stack


@pytest.fixture
async def api(askvx_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=askvx_stack.base_url, timeout=10) as http:
        yield http


# ---------------------------------------------------------------- helpers

START = "mutation($t: String) { startChatSession(input: {title: $t}) { session { id } userErrors { code } } }"
SEND = """
mutation($s: ID!, $c: String!) {
  sendChatMessage(input: {sessionId: $s, content: $c}) {
    userMessage { id role content status error }
    replyMessage { id role content status error }
    userErrors { field message code }
  }
}
"""
MESSAGE = "query($id: ID!) { node(id: $id) { ... on ChatMessage { id role content status error } } }"
SESSIONS = """
{ chatSessions(first: 20) { edges { node { id title
    messages { edges { node { id role content status error } } } } } } }
"""
REPLY = "subscription($m: ID!) { chatReply(messageId: $m) { messageId delta text done error } }"


def uuid_of(global_id: str) -> str:
    return base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode().split(":", 1)[1]


async def new_tenant(api: httpx.AsyncClient, name: str = "AskVX Salon") -> TenantFixture:
    return await make_tenant(api, name=name, owner=make_user())


async def call(api: httpx.AsyncClient, tenant: TenantFixture, query: str, **variables: Any) -> dict[str, Any]:
    body = await gql(api, query, variables, token=tenant.owner.token, tenant=tenant.uuid)
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def start_session(api: httpx.AsyncClient, tenant: TenantFixture, title: str = "Rebooking") -> str:
    payload = (await call(api, tenant, START, t=title))["startChatSession"]
    assert payload["userErrors"] == []
    session_id: str = payload["session"]["id"]
    return session_id


async def send(api: httpx.AsyncClient, tenant: TenantFixture, session: str, content: str) -> dict[str, Any]:
    payload: dict[str, Any] = (await call(api, tenant, SEND, s=session, c=content))["sendChatMessage"]
    return payload


async def ask(api: httpx.AsyncClient, tenant: TenantFixture, session: str, content: str) -> str:
    """Send a question that must be accepted; the reply message's global id."""
    payload = await send(api, tenant, session, content)
    assert payload["userErrors"] == [], payload
    assert payload["replyMessage"]["status"] == "STREAMING"
    reply_id: str = payload["replyMessage"]["id"]
    return reply_id


async def message(api: httpx.AsyncClient, tenant: TenantFixture, message_id: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = (await call(api, tenant, MESSAGE, id=message_id))["node"]
    return node


async def wait_finished(
    api: httpx.AsyncClient, tenant: TenantFixture, message_id: str, seconds: float = 10
) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        while True:
            found = await message(api, tenant, message_id)
            assert found is not None
            if found["status"] != "STREAMING":
                return found
            await asyncio.sleep(0.1)


def socket(stack: Stack, tenant: TenantFixture) -> AbstractAsyncContextManager[ClientConnection]:
    return graphql_ws(stack.ws_url, token=tenant.owner.token, tenant_id=tenant.uuid)


async def subscribe(ws: ClientConnection, op: str, message_id: str) -> None:
    await start_subscription(ws, op, REPLY, {"m": message_id})


async def reply_events(ws: ClientConnection, op: str, seconds: float = 10) -> list[dict[str, Any]]:
    """`next` events of one subscription until its `complete`; anything else fails the test."""
    return await next_payloads(ws, op, "chatReply", seconds=seconds)


async def follow(
    stack: Stack, tenant: TenantFixture, message_id: str, seconds: float = 10
) -> list[dict[str, Any]]:
    async with socket(stack, tenant) as ws:
        await subscribe(ws, "r", message_id)
        return await reply_events(ws, "r", seconds)


def cumulative(deltas: list[str]) -> list[str]:
    return ["".join(deltas[: i + 1]) for i in range(len(deltas))]


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def owner_db(settings: Settings, tenant_uuid: str) -> AsyncIterator[asyncpg.Connection]:
    """The owner's connection (as migrations use), in one transaction scoped to the tenant."""
    conn = await asyncpg.connect(libpq(settings.database_url or ""), timeout=10)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", tenant_uuid)
            yield conn
    finally:
        await conn.close()


# ---------------------------------------------------------------- streaming


async def test_reply_streams_over_a_real_websocket(stack: Stack, api: httpx.AsyncClient) -> None:
    deltas = ["Rebook ", "clients ", "before ", "they ", "leave."]
    full = "Rebook clients before they leave."
    question = "How do I keep my regulars coming back?"
    stack.fake.enqueue(Script(deltas=deltas, delay_between=0.05, usage=(40, 9)))
    tenant = await new_tenant(api)
    session = await start_session(api, tenant)
    async with socket(stack, tenant) as ws:
        payload = await send(api, tenant, session, question)
        assert payload["userErrors"] == []
        user, reply = payload["userMessage"], payload["replyMessage"]
        assert {k: user[k] for k in ("role", "content", "status", "error")} == {
            "role": "USER",
            "content": question,
            "status": "COMPLETE",
            "error": None,
        }
        assert {k: reply[k] for k in ("role", "content", "status", "error")} == {
            "role": "ASSISTANT",
            "content": "",
            "status": "STREAMING",
            "error": None,
        }
        await subscribe(ws, "1", reply["id"])
        events = await reply_events(ws, "1")

    assert [e["delta"] for e in events] == [*deltas, ""]
    assert [e["text"] for e in events] == [*cumulative(deltas), full]
    assert [e["done"] for e in events] == [False] * len(deltas) + [True]
    assert {e["messageId"] for e in events} == {reply["id"]}
    assert all(e["error"] is None for e in events)

    sessions = (await call(api, tenant, SESSIONS))["chatSessions"]["edges"]
    assert len(sessions) == 1
    assert sessions[0]["node"]["id"] == session
    stored = [edge["node"] for edge in sessions[0]["node"]["messages"]["edges"]]
    assert stored == [
        {"id": user["id"], "role": "USER", "content": question, "status": "COMPLETE", "error": None},
        {"id": reply["id"], "role": "ASSISTANT", "content": full, "status": "COMPLETE", "error": None},
    ]

    [request] = stack.fake.requests
    assert request.authorized
    assert request.stream is True
    assert request.model == MODEL
    assert [item["role"] for item in request.input] == ["system", "user"]
    assert request.input[0]["content"].startswith("You are AskVX")
    assert request.input[-1] == {"role": "user", "content": question}


async def test_late_subscriber_gets_the_whole_reply_at_once(stack: Stack, api: httpx.AsyncClient) -> None:
    stack.fake.enqueue(Script(deltas=["Post ", "a before-", "and-after ", "photo."], usage=(20, 4)))
    tenant = await new_tenant(api)
    reply = await ask(api, tenant, await start_session(api, tenant), "What should I post this week?")
    finished = await wait_finished(api, tenant, reply)
    assert finished["status"] == "COMPLETE"
    full = "Post a before-and-after photo."
    assert await follow(stack, tenant, reply) == [
        {"messageId": reply, "delta": full, "text": full, "done": True, "error": None}
    ]


async def test_reconnecting_subscriber_gets_a_replay_from_the_start(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    deltas = [f"step{i} " for i in range(10)]
    full = "".join(deltas)
    stack.fake.enqueue(Script(deltas=deltas, delay_between=0.2))
    tenant = await new_tenant(api)
    reply = await ask(api, tenant, await start_session(api, tenant), "Plan my slow Tuesdays")
    async with socket(stack, tenant) as ws:
        await subscribe(ws, "a", reply)
        first = [await frame(ws) for _ in range(3)]
    sent_at_disconnect = len(stack.fake.deltas_sent)
    assert [f["payload"]["data"]["chatReply"]["text"] for f in first] == cumulative(deltas)[:3]
    assert sent_at_disconnect < len(deltas)  # the socket went away mid-reply

    events = await follow(stack, tenant, reply)
    # The replay comes first, as one event: everything produced before the reconnect, from the start.
    assert events[0]["delta"] == events[0]["text"]
    assert events[0]["text"].startswith("".join(deltas[:3]))
    assert "".join(e["delta"] for e in events) == full
    assert events[-1]["text"] == full
    assert events[-1]["done"] is True
    assert [e["done"] for e in events].count(True) == 1
    assert len(stack.fake.requests) == 1  # replayed from the stream, not asked twice
    assert (await message(api, tenant, reply)) == {
        "id": reply,
        "role": "ASSISTANT",
        "content": full,
        "status": "COMPLETE",
        "error": None,
    }


# ---------------------------------------------------------------- failures


async def failed_reply(
    stack: Stack, api: httpx.AsyncClient, script: Script, seconds: float = 10
) -> tuple[TenantFixture, str, list[dict[str, Any]], float]:
    stack.fake.enqueue(script)
    tenant = await new_tenant(api)
    session = await start_session(api, tenant)
    async with socket(stack, tenant) as ws:
        started = time.monotonic()
        reply = await ask(api, tenant, session, "Why are my Friday bookings down?")
        await subscribe(ws, "f", reply)
        events = await reply_events(ws, "f", seconds)
        elapsed = time.monotonic() - started
    return tenant, reply, events, elapsed


async def assert_failed(
    api: httpx.AsyncClient,
    tenant: TenantFixture,
    reply: str,
    events: list[dict[str, Any]],
    text: str,
    error: str,
) -> None:
    assert events, "no events"
    assert events[-1] == {"messageId": reply, "delta": "", "text": text, "done": True, "error": error}
    assert [e["done"] for e in events].count(True) == 1
    assert await message(api, tenant, reply) == {
        "id": reply,
        "role": "ASSISTANT",
        "content": text,
        "status": "FAILED",
        "error": error,
    }


async def test_provider_failure_mid_stream(stack: Stack, api: httpx.AsyncClient) -> None:
    script = Script(deltas=["Check ", "your ", "reviews ", "first."], fail_after=2)
    tenant, reply, events, _ = await failed_reply(stack, api, script)
    error = "The AI provider failed while answering: the provider had an internal error (server_error)."
    await assert_failed(api, tenant, reply, events, "Check your ", error)
    assert [e["text"] for e in events[:-1]] == ["Check ", "Check your "]
    # A later subscriber hears the same ending from the record.
    assert await follow(stack, tenant, reply) == [
        {"messageId": reply, "delta": "Check your ", "text": "Check your ", "done": True, "error": error}
    ]


async def test_stalled_provider_times_out(stack: Stack, api: httpx.AsyncClient) -> None:
    script = Script(deltas=["Slow ", "answer."], stall_after=1, stall_seconds=IDLE_TIMEOUT + 3)
    tenant, reply, events, elapsed = await failed_reply(stack, api, script)
    error = f"The AI provider stopped sending for {IDLE_TIMEOUT:g} seconds."
    await assert_failed(api, tenant, reply, events, "Slow ", error)
    # ARQ picks the job up within its 0.5 s poll; the stall is noticed after the idle timeout.
    assert elapsed < IDLE_TIMEOUT + 3, elapsed


async def test_reply_over_the_total_time_limit_fails(stack: Stack, api: httpx.AsyncClient) -> None:
    # Never silent for the idle timeout, but longer in total than BRANDVX_AI_TIMEOUT_SECONDS.
    deltas = [f"w{i} " for i in range(12)]
    script = Script(deltas=deltas, delay_between=0.5)
    tenant, reply, events, elapsed = await failed_reply(stack, api, script)
    assert events
    text = events[-1]["text"]
    assert 0 < len(text) < len("".join(deltas))
    assert "".join(deltas).startswith(text)
    await assert_failed(
        api, tenant, reply, events, text, "The AI provider took too long to answer. Try again."
    )
    assert AI_TIMEOUT - 0.5 < elapsed < AI_TIMEOUT + 3, elapsed


async def test_cut_stream_fails(stack: Stack, api: httpx.AsyncClient) -> None:
    script = Script(deltas=["Offer ", "a loyalty ", "card."], cut_after=2)
    tenant, reply, events, _ = await failed_reply(stack, api, script)
    await assert_failed(
        api, tenant, reply, events, "Offer a loyalty ", "The AI provider's reply was cut off."
    )
