"""Sync jobs end to end with real processes: `brandvx serve --no-worker` (API) and separate
`python -m brandvx worker` processes, on a Redis namespace of their own, against a slow FakeSquare.

* A worker killed (SIGKILL) in the middle of a sync: ARQ hands the job to the next worker once the dead
  worker's in-progress mark expires (the worker's longest function timeout + 10 s); the sync body is
  idempotent, so the second run completes without duplicates.
* ``jobProgress`` over a real graphql-transport-ws socket, live and after the end.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection

from brandvx.runtime import Runtime
from brandvx.settings import Settings
from domain import connections
from domain.model import Job, JobStatus, Provider
from domain.sync import TokenSet
from jobs.syncs import SYSTEM_ROLE
from schema.common import to_global_id
from tests.conftest import TenantFixture, free_port, gql, make_tenant, make_user
from tests.fakes.square_server import FakeSquare
from tests.processes import (
    brandvx_env,
    graphql_ws,
    log_tail,
    next_payloads,
    spawn_brandvx,
    start_subscription,
    stop_process,
    wait_for_heartbeat,
    wait_until_ready,
)

pytestmark = pytest.mark.slow

SQUARE_ID, SQUARE_SECRET, SQUARE_TOKEN = "sq0idp-sync-worker", "sq0csp-sync-worker", "EAAA-sync-worker"
SQUARE_MERCHANT = "MLSYNCWORKER"
SYNC_TIMEOUT = 12  # BRANDVX_SYNC_JOB_TIMEOUT_SECONDS: a sync here takes ~3-5 s
AI_TIMEOUT = 3  # BRANDVX_AI_TIMEOUT_SECONDS: `brandvx worker` gives replies this + 30 s
# What ARQ waits before handing a dead worker's job to another: the longest function timeout + 10 s.
REDELIVERY_SECONDS = max(SYNC_TIMEOUT, AI_TIMEOUT + 30) + 10
BOOKINGS = 150
FRAME_SECONDS = 20  # the longest wait for one socket message

SYNC_CALENDAR = """
mutation { syncCalendar(input: {providers: [SQUARE]}) { job { id status } userErrors { code message } } }
"""
PROGRESS = "subscription($id: ID!) { jobProgress(jobId: $id) { done job { id status progress message } } }"


@dataclass
class SyncStack:
    square: FakeSquare
    base_url: str
    ws_url: str
    namespace: str
    env: dict[str, str]
    logs: Path
    redis: redis.Redis
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A new `brandvx worker` process, returned once its heartbeat (with its pid) is in Redis."""
        log = self.logs / f"worker{len(self.workers)}.log"
        process = spawn_brandvx("worker", env=self.env, log=log)
        self.workers.append(process)
        wait_for_heartbeat(process, self.redis, self.namespace, log)
        return process

    def worker_logs(self) -> str:
        return "\n".join(log_tail(p) for p in sorted(self.logs.glob("worker*.log")))


def _seed(square: FakeSquare) -> None:
    """ACCEPTED bookings over the next 60 days, by 30 customers, without services (no catalog calls)."""
    customers = [c["id"] for c in square.seed_customers(30)]
    base = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    for index in range(BOOKINGS):
        square.add_booking(
            start_at=base + timedelta(hours=(index * 9) % (60 * 24)),
            status="ACCEPTED",
            customer_id=customers[index % len(customers)],
        )


@pytest.fixture(scope="module")
def sync_stack(migrated: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncStack]:
    namespace = f"syncw-{uuid.uuid4().hex[:10]}"
    square = FakeSquare(
        client_id=SQUARE_ID,
        client_secret=SQUARE_SECRET,
        access_token=SQUARE_TOKEN,
        merchant_id=SQUARE_MERCHANT,
    ).start()
    _seed(square)
    env = brandvx_env(
        migrated,
        namespace=namespace,
        data_dir=tmp_path_factory.mktemp("sync-worker-data"),
        extra={
            "SQUARE_CLIENT_ID": SQUARE_ID,
            "SQUARE_CLIENT_SECRET": SQUARE_SECRET,
            "SQUARE_BASE_URL": square.base_url,
            "BRANDVX_SYNC_JOB_TIMEOUT_SECONDS": str(SYNC_TIMEOUT),
            "BRANDVX_AI_TIMEOUT_SECONDS": str(AI_TIMEOUT),
        },
    )
    logs = tmp_path_factory.mktemp("sync-worker-log")
    port = free_port()
    store = redis.Redis.from_url(migrated.redis_url or "")
    api = spawn_brandvx(
        "serve", "--port", str(port), "--no-worker", "--no-migrate", env=env, log=logs / "serve.log"
    )
    stack = SyncStack(
        square=square,
        base_url=f"http://127.0.0.1:{port}",
        ws_url=f"ws://127.0.0.1:{port}/graphql",
        namespace=namespace,
        env=env,
        logs=logs,
        redis=store,
    )
    try:
        wait_until_ready(api, stack.base_url, logs / "serve.log")
        yield stack
    finally:
        for process in [api, *stack.workers]:
            stop_process(process)
        square.stop()
        for key in store.scan_iter(match=f"bvx:{namespace}:*"):
            store.delete(key)
        for job_id in stack.job_ids:
            for prefix in ("arq:job:", "arq:in-progress:", "arq:retry:", "arq:result:"):
                store.delete(f"{prefix}sync:{job_id}")
        store.close()


@pytest.fixture
def stack(sync_stack: SyncStack) -> Iterator[SyncStack]:
    sync_stack.square.latency = 0.0
    sync_stack.square.reset_calls()
    yield sync_stack
    for process in sync_stack.workers:
        stop_process(process)
    sync_stack.square.latency = 0.0


@pytest.fixture
async def api(sync_stack: SyncStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sync_stack.base_url, timeout=10) as http:
        yield http


# ---------------------------------------------------------------- helpers


async def square_tenant(api: httpx.AsyncClient, rt: Runtime) -> tuple[TenantFixture, uuid.UUID]:
    tenant = await make_tenant(api, name="Worker Salon", owner=make_user())
    tid = uuid.UUID(tenant.uuid)
    async with rt.db.transaction(tenant_id=tid, role=SYSTEM_ROLE) as uow:
        await connections.save_connection(
            uow,
            rt.vault.keyring,
            tid,
            Provider.SQUARE,
            TokenSet(
                access_token=SQUARE_TOKEN,
                refresh_token="EQAA-unused",
                expires_at=datetime.now(UTC) + timedelta(days=20),
                account_id=SQUARE_MERCHANT,
            ),
        )
    return tenant, tid


async def start_sync(
    api: httpx.AsyncClient, stack: SyncStack, tenant: TenantFixture
) -> tuple[str, uuid.UUID]:
    body = await gql(api, SYNC_CALENDAR, token=tenant.owner.token, tenant=tenant.uuid)
    payload = body["data"]["syncCalendar"]
    assert payload["userErrors"] == [], payload
    assert payload["job"]["status"] == "PENDING"
    global_id: str = payload["job"]["id"]
    job_id = uuid.UUID(base64.urlsafe_b64decode(global_id + "==").decode().split(":", 1)[1])
    stack.job_ids.append(str(job_id))
    return global_id, job_id


async def job_of(rt: Runtime, tid: uuid.UUID, job_id: uuid.UUID) -> Job:
    async with rt.db.transaction(tenant_id=tid, role=SYSTEM_ROLE) as uow:
        job = await uow.jobs.get(job_id)
    assert job is not None
    return job


async def scalar(rt: Runtime, tid: uuid.UUID, sql: str) -> Any:
    async with rt.db.transaction(tenant_id=tid, role=SYSTEM_ROLE) as uow:
        return (await uow.connection.execute(text(sql))).scalar_one()


def ws_session(stack: SyncStack, tenant: TenantFixture) -> AbstractAsyncContextManager[ClientConnection]:
    return graphql_ws(stack.ws_url, token=tenant.owner.token, tenant_id=tenant.uuid, seconds=FRAME_SECONDS)


async def progress_events(
    ws: ClientConnection, op: str, job_global_id: str, seconds: float = 30
) -> list[dict[str, Any]]:
    await start_subscription(ws, op, PROGRESS, {"id": job_global_id})
    return await next_payloads(ws, op, "jobProgress", seconds=seconds, frame_seconds=FRAME_SECONDS)


# ---------------------------------------------------------------- 11. jobProgress over a real socket


async def test_job_progress_streams_over_a_real_websocket(
    stack: SyncStack, api: httpx.AsyncClient, standalone_runtime: Runtime
) -> None:
    rt = standalone_runtime
    stack.start_worker()
    tenant, tid = await square_tenant(api, rt)
    stack.square.latency = 0.25
    async with ws_session(stack, tenant) as ws:
        global_id, job_id = await start_sync(api, stack, tenant)
        events = await progress_events(ws, "p", global_id)

    assert events, stack.worker_logs()
    assert {e["job"]["id"] for e in events} == {global_id}
    last = events[-1]
    assert (last["done"], last["job"]["status"], last["job"]["progress"], last["job"]["message"]) == (
        True,
        "COMPLETED",
        1.0,
        "Done",
    ), stack.worker_logs()
    assert [e["done"] for e in events] == [False] * (len(events) - 1) + [True]
    progress = [e["job"]["progress"] for e in events]
    assert progress == sorted(progress), progress  # never goes back
    assert len(set(progress)) >= 4, progress  # several steps between the start and the end
    assert {e["job"]["status"] for e in events[:-1]} <= {"PENDING", "RUNNING"}
    assert any(e["job"]["status"] == "RUNNING" and 0.05 < e["job"]["progress"] < 1 for e in events)
    assert await scalar(rt, tid, "SELECT count(*) FROM appointments") == BOOKINGS

    # After the end: one event, the final state.
    async with ws_session(stack, tenant) as ws:
        late = await progress_events(ws, "late", global_id, seconds=10)
    assert late == [
        {"done": True, "job": {"id": global_id, "status": "COMPLETED", "progress": 1.0, "message": "Done"}}
    ]
    job = await job_of(rt, tid, job_id)
    assert (job.status, job.attempts) == (JobStatus.COMPLETED, 1)


# ---------------------------------------------------------------- 10. a worker killed mid-sync


async def test_sync_survives_a_killed_worker(
    stack: SyncStack, api: httpx.AsyncClient, standalone_runtime: Runtime
) -> None:
    rt = standalone_runtime
    first = stack.start_worker()
    tenant, tid = await square_tenant(api, rt)
    stack.square.latency = 0.4  # ~10 calls: a sync of about 4 s
    _, job_id = await start_sync(api, stack, tenant)

    deadline = time.monotonic() + 20
    while True:
        job = await job_of(rt, tid, job_id)
        if job.status is JobStatus.RUNNING and job.progress > 0.05:
            break
        assert job.status in (JobStatus.PENDING, JobStatus.RUNNING), (job, stack.worker_logs())
        assert time.monotonic() < deadline, f"no progress: {job}\n{stack.worker_logs()}"
        await asyncio.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    killed_at = time.monotonic()
    at_kill = await job_of(rt, tid, job_id)
    assert at_kill.status is JobStatus.RUNNING
    assert 0.05 < at_kill.progress < 1
    partial = await scalar(rt, tid, "SELECT count(*) FROM appointments")
    assert partial < BOOKINGS

    # The dead worker's mark on the job must expire after the longest function timeout + 10 s.
    in_progress_ms = stack.redis.pttl(f"arq:in-progress:sync:{job_id}")
    assert isinstance(in_progress_ms, int)
    assert 0 < in_progress_ms <= REDELIVERY_SECONDS * 1000, (
        f"ARQ will hand the killed worker's job to another worker only in {in_progress_ms / 1000:.0f} s "
        f"(expected at most {REDELIVERY_SECONDS} s: the longest sync/reply timeout + 10 s)"
    )

    stack.start_worker()
    deadline = killed_at + REDELIVERY_SECONDS + 25
    while True:
        job = await job_of(rt, tid, job_id)
        if job.status.finished:
            break
        assert time.monotonic() < deadline, f"not redelivered: {job}\n{stack.worker_logs()}"
        await asyncio.sleep(0.25)
    assert (job.status, job.error) == (JobStatus.COMPLETED, None), stack.worker_logs()
    assert job.attempts >= 2
    assert job.result is not None
    assert job.result["providers"]["SQUARE"]["fetched"] == BOOKINGS
    assert await scalar(rt, tid, "SELECT count(*) FROM appointments") == BOOKINGS
    assert await scalar(rt, tid, "SELECT count(*) FROM appointment_sources") == BOOKINGS
    assert await scalar(rt, tid, "SELECT count(DISTINCT external_id) FROM appointment_sources") == BOOKINGS
    assert await scalar(rt, tid, "SELECT count(*) FROM contacts") == 30
    job_global = to_global_id("Job", job_id)
    status = await gql(
        api,
        "query($id: ID!) { job(id: $id) { status progress } }",
        {"id": job_global},
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    assert status["data"]["job"] == {"status": "COMPLETED", "progress": 1.0}
