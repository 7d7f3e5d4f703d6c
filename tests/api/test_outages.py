"""Redis and PostgreSQL going away and coming back, under a small load, with `brandvx serve` and
`brandvx worker` in processes of their own (issue 18).

Each test starts the server it stops: a `redis-server` without persistence on a free port (it comes
back empty), or an embedded PostgreSQL cluster of its own (`pg_ctl restart -m fast`, stop, start).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from brandvx.settings import Settings
from persistence.migrate import upgrade
from tests.conftest import TenantFixture, free_port, gql, make_tenant, make_user
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.outages import Answer, Load, PostgresCluster, RedisServer, error_codes, succeeded
from tests.processes import (
    brandvx_env,
    frame,
    graphql_ws,
    log_tail,
    spawn_brandvx,
    start_subscription,
    stop_process,
    wait_for_heartbeat,
    wait_until_ready,
)

pytestmark = pytest.mark.slow

# The load's rate limit is checked (every answer has its cost), never reached: its budget refills fast.
UNLIMITED = {"BRANDVX_RATE_LIMIT_RESTORE_PER_SECOND": "100000"}
RECOVERY_SECONDS = 60  # the reconciler runs every 15 s and leaves work alone for its first 10 s
SEND = """
mutation($s: ID!, $c: String!) {
  sendChatMessage(input: {sessionId: $s, content: $c}) {
    replyMessage { id status } userErrors { code }
  }
}
"""
START = 'mutation { startChatSession(input: {title: "Outage"}) { session { id } } }'
MESSAGE = "query($id: ID!) { node(id: $id) { ... on ChatMessage { content status error } } }"
GENERATE = (
    'mutation { generateStrategy(input: {goals: "Fill Mondays"}) { job { id status } userErrors { code } } }'
)
JOB = "query($id: ID!) { job(id: $id) { status message error } }"
REPLY = "subscription($m: ID!) { chatReply(messageId: $m) { delta text done error } }"
CONTACTS = "{ contacts(first: 100) { edges { node { displayName } } pageInfo { hasNextPage endCursor } } }"


@dataclass
class Stack:
    api: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    base_url: str
    ws_url: str
    api_log: Path
    worker_log: Path


def start_stack(env: dict[str, str], logs: Path, heartbeat_redis: redis.Redis, namespace: str) -> Stack:
    port = free_port()
    api_log, worker_log = logs / "serve.log", logs / "worker.log"
    api = spawn_brandvx("serve", "--port", str(port), "--no-worker", "--no-migrate", env=env, log=api_log)
    worker = spawn_brandvx("worker", env=env, log=worker_log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(api, base, api_log)
        wait_for_heartbeat(worker, heartbeat_redis, namespace, worker_log)
    except Exception:
        stop_process(api)
        stop_process(worker)
        raise
    return Stack(api, worker, base, f"ws://127.0.0.1:{port}/graphql", api_log, worker_log)


async def call(
    http: httpx.AsyncClient, tenant: TenantFixture, query: str, **variables: Any
) -> dict[str, Any]:
    return await gql(http, query, variables, token=tenant.owner.token, tenant=tenant.uuid)


async def wait_status(
    http: httpx.AsyncClient, tenant: TenantFixture, query: str, field: str, node_id: str, done: set[str]
) -> dict[str, Any]:
    """Poll a record until its status is one of ``done`` (the record is the only signal here)."""
    async with asyncio.timeout(RECOVERY_SECONDS):
        while True:
            body = await call(http, tenant, query, id=node_id)
            assert "errors" not in body, body
            found: dict[str, Any] = body["data"][field]
            if found["status"] in done:
                return found
            await asyncio.sleep(0.25)


async def wait_ready(http: httpx.AsyncClient, *, ready: bool) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            response = await http.get("/ready")
            if (response.status_code == 200) is ready:
                body: dict[str, Any] = response.json()
                return body
            await asyncio.sleep(0.1)


def lines_with(path: Path, text: str) -> int:
    return sum(text in line for line in path.read_text(errors="replace").splitlines())


async def all_contacts(http: httpx.AsyncClient, tenant: TenantFixture) -> set[str]:
    names: set[str] = set()
    after: str | None = None
    while True:
        query = CONTACTS if after is None else CONTACTS.replace("first: 100", f'first: 100, after: "{after}"')
        body = await call(http, tenant, query)
        connection = body["data"]["contacts"]
        names.update(edge["node"]["displayName"] for edge in connection["edges"])
        if not connection["pageInfo"]["hasNextPage"]:
            return names
        after = connection["pageInfo"]["endCursor"]


def assert_no_address(answers: list[Answer], *addresses: str) -> None:
    for answer in answers:
        text = json.dumps(answer.body)
        for needle in (*addresses, "127.0.0.1", "Connection refused", "Errno"):
            assert needle not in text, text


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder of this test's own, outside pytest's basetemp: pytest sessions run by others on the
    machine prune old basetemps and reset their modes, which a server running as another user (the
    embedded PostgreSQL runs as `pgserver` under root) or a long test cannot survive."""
    folder = Path(tempfile.mkdtemp(prefix="brandvx-outage-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- Redis


@pytest.fixture
def redis_server(scratch: Path) -> Iterator[RedisServer]:
    server = RedisServer(scratch)
    server.start()
    yield server
    server.stop()


async def test_a_redis_outage_keeps_reads_and_writes_working_and_loses_no_queued_work(
    migrated: Settings, redis_server: RedisServer, scratch: Path
) -> None:
    namespace = f"outage-{uuid.uuid4().hex[:8]}"
    settings = migrated.model_copy(update={"redis_url": redis_server.url})
    env = brandvx_env(settings, namespace=namespace, data_dir=scratch / "data", extra=UNLIMITED)
    store = redis.Redis.from_url(redis_server.url)
    stack = start_stack(env, scratch, store, namespace)
    try:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
            tenant = await make_tenant(http, name="Outage Salon", owner=make_user())
            session = (await call(http, tenant, START))["data"]["startChatSession"]["session"]["id"]

            # Work queued in Redis that no worker has taken yet (the worker is paused)...
            stack.worker.send_signal(signal.SIGSTOP)
            strategy = (await call(http, tenant, GENERATE))["data"]["generateStrategy"]["job"]
            sent = (await call(http, tenant, SEND, s=session, c="Before the outage?"))["data"][
                "sendChatMessage"
            ]
            assert sent["userErrors"] == []
            assert strategy["status"] == "PENDING"

            load = Load(stack.base_url, tenant.owner.token, tenant.uuid)
            load.start()
            await load.wait_for(0, "write", ok=True, count=3)

            # ...is lost with Redis: it stops, and comes back empty.
            redis_server.stop()
            outage = load.mark()
            await load.wait_for(outage, "read", ok=True, count=20)
            await load.wait_for(outage, "write", ok=True, count=5)

            # A message sent during the outage is accepted: its job waits in the outbox (PostgreSQL),
            # and the relay loop hands it to ARQ once Redis is back.
            accepted = await call(http, tenant, SEND, s=session, c="During the outage?")
            during_send = accepted["data"]["sendChatMessage"]
            assert during_send["userErrors"] == [], accepted
            ready = await wait_ready(http, ready=False)
            assert ready["checks"]["redis"].startswith("error")
            assert ready["rateLimiter"].startswith("memory")
            async with graphql_ws(stack.ws_url, token=tenant.owner.token, tenant_id=tenant.uuid) as ws:
                await start_subscription(ws, "r", REPLY, {"m": sent["replyMessage"]["id"]})
                refused = await frame(ws)
                errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
                assert [e["extensions"]["code"] for e in errors] == ["SERVICE_UNAVAILABLE"], refused

            stack.worker.send_signal(signal.SIGCONT)  # the worker finds Redis gone, and must ride it out
            during = load.answers[outage:]
            redis_server.start()
            await wait_ready(http, ready=True)
            back = load.mark()
            await load.wait_for(back, "write", ok=True, count=3)

            # PostgreSQL says both were queued: they run within a minute of Redis coming back.
            done = await wait_status(http, tenant, JOB, "job", strategy["id"], {"COMPLETED", "FAILED"})
            assert done["status"] == "COMPLETED", done
            reply = await wait_status(
                http, tenant, MESSAGE, "node", sent["replyMessage"]["id"], {"COMPLETE", "FAILED"}
            )
            assert reply["status"] == "COMPLETE", reply
            queued = await wait_status(
                http, tenant, MESSAGE, "node", during_send["replyMessage"]["id"], {"COMPLETE", "FAILED"}
            )
            assert queued["status"] == "COMPLETE", queued
            await load.stop()

            assert stack.worker.poll() is None, log_tail(stack.worker_log)
            wait_for_heartbeat(stack.worker, store, namespace, stack.worker_log)
            assert {a.kind for a in during if succeeded(a)} == {"read", "write"}
            assert error_codes(load.answers) <= {"SERVICE_UNAVAILABLE"}  # never BAD_USER_INPUT or INTERNAL
            assert_no_address(load.answers, f":{redis_server.port}")
            assert_no_address([Answer("send", 200, accepted, 0)], f":{redis_server.port}")
            assert set(load.acknowledged) <= await all_contacts(http, tenant)  # no acknowledged write lost
        # One line for the outage in each process, not one per failed call.
        assert lines_with(stack.api_log, "redis unavailable") == 1, log_tail(stack.api_log)
        assert lines_with(stack.worker_log, "redis unavailable") >= 1
        assert "Traceback" not in stack.api_log.read_text(errors="replace")
    finally:
        stack.worker.send_signal(signal.SIGCONT)
        stop_process(stack.api)
        stop_process(stack.worker)
        store.close()


# ---------------------------------------------------------------- PostgreSQL


API_KEY = "sk-test-outage-" + uuid.uuid4().hex


@pytest.fixture
def cluster(scratch: Path) -> Iterator[PostgresCluster]:
    pg = PostgresCluster(scratch)
    pg.psql('CREATE DATABASE "brandvx";')
    yield pg
    pg.cleanup()


async def test_postgres_restart_and_outage_answer_clearly_and_finish_the_reply(
    migrated: Settings, cluster: PostgresCluster, scratch: Path
) -> None:
    url = cluster.url("brandvx")
    await upgrade(url, runtime_role=migrated.runtime_db_role, runtime_password=None)
    namespace = f"pg-outage-{uuid.uuid4().hex[:8]}"
    fake = FakeOpenAI(api_key=API_KEY).start()
    settings = migrated.model_copy(update={"database_url": url})
    extra = {
        **UNLIMITED,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "BRANDVX_AI_MAX_RETRIES": "0",
    }
    env = brandvx_env(settings, namespace=namespace, data_dir=scratch / "data", extra=extra)
    store = redis.Redis.from_url(migrated.redis_url or "")
    stack = start_stack(env, scratch, store, namespace)
    try:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
            tenant = await make_tenant(http, name="Restart Salon", owner=make_user())
            session = (await call(http, tenant, START))["data"]["startChatSession"]["session"]["id"]
            deltas = [f"word{i} " for i in range(30)]
            fake.enqueue(Script(deltas=deltas, delay_between=0.1))
            async with graphql_ws(stack.ws_url, token=tenant.owner.token, tenant_id=tenant.uuid) as ws:
                sent = (await call(http, tenant, SEND, s=session, c="Across a restart?"))["data"][
                    "sendChatMessage"
                ]
                await start_subscription(ws, "r", REPLY, {"m": sent["replyMessage"]["id"]})
                events = [(await frame(ws))["payload"]["data"]["chatReply"]]
                # PostgreSQL restarts while the reply streams: its pooled connections all die.
                await asyncio.to_thread(cluster.restart)
                while not events[-1]["done"]:
                    received = await frame(ws, 30)
                    assert received["type"] == "next", received
                    events.append(received["payload"]["data"]["chatReply"])
            text = ""
            for event in events:
                assert event["text"] == text + event["delta"], events
                text = event["text"]
            assert text == "".join(deltas)
            assert events[-1]["error"] is None
            stored = (await call(http, tenant, MESSAGE, id=sent["replyMessage"]["id"]))["data"]["node"]
            assert stored == {"content": "".join(deltas), "status": "COMPLETE", "error": None}

            load = Load(stack.base_url, tenant.owner.token, tenant.uuid, readers=2)
            load.start()
            await load.wait_for(0, "write", ok=True, count=3)
            before_stop = load.mark()
            await asyncio.to_thread(cluster.stop)
            outage = load.mark()
            await load.wait_for(outage, "read", ok=False, count=20)
            headers = {"Authorization": f"Bearer {tenant.owner.token}", "X-Tenant-Id": tenant.uuid}
            down = await http.post("/graphql", json={"query": Load.READ}, headers=headers)
            await asyncio.to_thread(cluster.start)
            back = load.mark()
            await load.wait_for(back, "write", ok=True, count=3)
            await load.stop()

            # After the restart, the pools' dead connections were renewed: nothing failed before the stop.
            assert all(succeeded(a) for a in load.answers[:before_stop]), error_codes(
                load.answers[:before_stop]
            )
            assert down.status_code == 503
            assert down.headers["retry-after"].isdigit()
            assert down.headers["content-type"].startswith("application/json")
            [error] = down.json()["errors"]
            assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
            assert error["extensions"]["errorId"]
            failed = [a for a in load.answers[outage:back] if not succeeded(a)]
            assert failed
            assert {a.status for a in failed} <= {200, 503}
            assert error_codes(failed) == {"SERVICE_UNAVAILABLE"}
            assert_no_address(load.answers, cluster.socket_dir, ".s.PGSQL")
            assert set(load.acknowledged) <= await all_contacts(http, tenant)
        assert stack.worker.poll() is None
        assert stack.api.poll() is None
        # One line per outage (the restart may have made one of its own), not one per failed request.
        assert 1 <= lines_with(stack.api_log, "database unavailable") <= 2, log_tail(stack.api_log)
        assert "Traceback" not in stack.api_log.read_text(errors="replace")
    finally:
        stop_process(stack.api)
        stop_process(stack.worker)
        fake.stop()
        for key in store.scan_iter(match=f"bvx:{namespace}:*"):
            store.delete(key)
        store.close()


# ---------------------------------------------------------------- a worker that dies mid-job

PROGRESS = "subscription($j: ID!) { jobProgress(jobId: $j) { done job { status message error } } }"
DEAD_JOB_SECONDS = 90  # 45 s without a heartbeat, the next 15 s cron, and slack for a busy machine


async def test_a_job_whose_worker_died_ends_its_subscription_within_about_a_minute(
    migrated: Settings, scratch: Path
) -> None:
    namespace = f"dead-worker-{uuid.uuid4().hex[:8]}"
    fake = FakeOpenAI(api_key=API_KEY).start()
    extra = {
        **UNLIMITED,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "BRANDVX_AI_MAX_RETRIES": "0",
        "BRANDVX_AI_TIMEOUT_SECONDS": "600",
        "BRANDVX_AI_IDLE_TIMEOUT_SECONDS": "600",
    }
    env = brandvx_env(migrated, namespace=namespace, data_dir=scratch / "data", extra=extra)
    store = redis.Redis.from_url(migrated.redis_url or "")
    stack = start_stack(env, scratch, store, namespace)
    successor: subprocess.Popen[bytes] | None = None
    try:
        # A strategy that would take minutes to write.
        fake.enqueue(Script(deltas=[f"part {i}\n" for i in range(600)], delay_between=0.5))
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
            tenant = await make_tenant(http, name="Dead Worker Salon", owner=make_user())
            job = (await call(http, tenant, GENERATE))["data"]["generateStrategy"]["job"]
            await wait_status(http, tenant, JOB, "job", job["id"], {"RUNNING"})
            async with graphql_ws(stack.ws_url, token=tenant.owner.token, tenant_id=tenant.uuid) as ws:
                await start_subscription(ws, "p", PROGRESS, {"j": job["id"]})
                first = await frame(ws)
                assert first["payload"]["data"]["jobProgress"]["job"]["status"] == "RUNNING", first

                stack.worker.kill()  # SIGKILL: no cleanup, no last word in the record
                stack.worker.wait(10)
                killed = asyncio.get_running_loop().time()
                successor = spawn_brandvx("worker", env=env, log=scratch / "successor.log")

                last: dict[str, Any] = first["payload"]["data"]["jobProgress"]
                async with asyncio.timeout(DEAD_JOB_SECONDS):
                    while not last["done"]:
                        received = await frame(ws, DEAD_JOB_SECONDS)
                        assert received["type"] == "next", received
                        last = received["payload"]["data"]["jobProgress"]
                elapsed = asyncio.get_running_loop().time() - killed
        assert last["job"]["status"] == "FAILED", last
        assert last["job"]["error"].startswith("The worker running this job stopped"), last
        assert elapsed < DEAD_JOB_SECONDS, elapsed
        assert successor.poll() is None
    finally:
        stop_process(stack.api)
        stop_process(stack.worker)
        if successor is not None:
            stop_process(successor)
        fake.stop()
        for key in store.scan_iter(match=f"bvx:{namespace}:*"):
            store.delete(key)
        store.close()
