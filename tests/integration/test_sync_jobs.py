"""Calendar and inventory sync jobs, in process: the job functions run directly against local fakes of
Square, Google Calendar, Acuity and Shopify over real HTTP, on this run's PostgreSQL and Redis.

Tenants are made through the GraphQL API (the in-process ``client``); connections are stored with
``domain.connections.save_connection``; jobs are created with ``domain.jobs.create_job`` and run by
calling ``jobs.syncs.sync_calendar`` / ``sync_inventory`` with a worker context, as ARQ would.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from arq.worker import Retry
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from brandvx.runtime import worker_runtime
from brandvx.settings import Settings
from domain import connections
from domain import jobs as domain_jobs
from domain.model import Connection, ConnectionStatus, Job, JobStatus, Provider
from domain.sync import TokenSet
from integrations.http import RetryPolicy
from jobs.context import WorkerRuntime
from jobs.syncs import SYSTEM_ROLE, jobs_sweep, sync_calendar, sync_inventory
from schema.common import to_global_id
from tests.conftest import StatementCounter, TenantFixture, app_client, gql, make_tenant
from tests.fakes.acuity_server import FakeAcuity
from tests.fakes.google_server import FakeGoogle
from tests.fakes.shopify_server import FakeShop, FakeShopify, generate_shop
from tests.fakes.square_server import FakeSquare

SQUARE_ID, SQUARE_SECRET, SQUARE_TOKEN = "sq0idp-sync-jobs", "sq0csp-sync-jobs", "EAAA-sync-jobs-token"
SQUARE_MERCHANT = "MLSYNCJOBS"
SQUARE_VERSION = "2024-10-17"
GOOGLE_ID, GOOGLE_SECRET = "sync-jobs.apps.googleusercontent.com", "google-sync-jobs-secret"
SHOPIFY_ID, SHOPIFY_SECRET = "shopify-sync-jobs", "shopify-sync-jobs-secret"
SHOP_A, SHOP_B = "sync-inv-a.myshopify.com", "sync-inv-b.myshopify.com"
FAR_FUTURE = timedelta(days=20)
HTTP_ATTEMPTS = RetryPolicy().attempts


@dataclass(frozen=True)
class Fakes:
    square: FakeSquare
    google: FakeGoogle
    acuity: FakeAcuity
    shopify: FakeShopify


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    started: list[Any] = []
    try:
        square = FakeSquare(
            client_id=SQUARE_ID,
            client_secret=SQUARE_SECRET,
            access_token=SQUARE_TOKEN,
            merchant_id=SQUARE_MERCHANT,
        ).start()
        started.append(square)
        google = FakeGoogle(client_id=GOOGLE_ID, client_secret=GOOGLE_SECRET).start()
        started.append(google)
        acuity = FakeAcuity(timezone="America/New_York").start()
        started.append(acuity)
        shopify = FakeShopify(client_id=SHOPIFY_ID, client_secret=SHOPIFY_SECRET).start()
        started.append(shopify)
        yield Fakes(square, google, acuity, shopify)
    finally:
        for fake in reversed(started):
            fake.stop()


@pytest.fixture(scope="module")
def sync_settings(migrated: Settings, fakes: Fakes) -> Settings:
    return migrated.model_copy(
        update={
            "square_client_id": SQUARE_ID,
            "square_client_secret": SQUARE_SECRET,
            "square_base_url": fakes.square.base_url,
            "acuity_base_url": fakes.acuity.base_url,
            "google_client_id": GOOGLE_ID,
            "google_client_secret": GOOGLE_SECRET,
            "google_auth_base_url": fakes.google.base_url,
            "google_token_base_url": fakes.google.base_url,
            "google_api_base_url": fakes.google.base_url,
            "shopify_client_id": SHOPIFY_ID,
            "shopify_client_secret": SHOPIFY_SECRET,
            "shopify_base_url_overrides_raw": ",".join(
                f"{shop}={fakes.shopify.base_url_for(shop)}" for shop in (SHOP_A, SHOP_B)
            ),
        }
    )


@pytest.fixture(scope="module")
async def rt(sync_settings: Settings) -> AsyncIterator[WorkerRuntime]:
    runtime = await worker_runtime(sync_settings)
    yield runtime
    await runtime.close()


@asynccontextmanager
async def own_runtime(settings: Settings) -> AsyncIterator[WorkerRuntime]:
    """A runtime with provider clients of its own: its circuit breakers start closed and stay private."""
    runtime = await worker_runtime(settings)
    try:
        yield runtime
    finally:
        await runtime.close()


@pytest.fixture
def square(fakes: Fakes) -> Iterator[FakeSquare]:
    fakes.square.reset()
    fakes.square.latency = 0.0
    yield fakes.square
    fakes.square.latency = 0.0


@pytest.fixture
def acuity(fakes: Fakes) -> FakeAcuity:
    fakes.acuity.reset()
    return fakes.acuity


# ---------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _base_time(days: int = 2) -> datetime:
    return (_now() + timedelta(days=days)).replace(hour=10, minute=0, second=0, microsecond=0)


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def new_tenant(client: httpx.AsyncClient, name: str = "Sync Salon") -> tuple[TenantFixture, uuid.UUID]:
    tenant = await make_tenant(client, name=name)
    return tenant, uuid.UUID(tenant.uuid)


@asynccontextmanager
async def system(rt: WorkerRuntime, tid: uuid.UUID) -> AsyncIterator[Any]:
    async with rt.db.transaction(tenant_id=tid, role=SYSTEM_ROLE) as uow:
        yield uow


async def connect(
    rt: WorkerRuntime,
    tid: uuid.UUID,
    provider: Provider,
    tokens: TokenSet,
    config: dict[str, Any] | None = None,
) -> None:
    async with system(rt, tid) as uow:
        await connections.save_connection(uow, rt.vault.keyring, tid, provider, tokens, config)


async def connect_square(rt: WorkerRuntime, tid: uuid.UUID, token: str = SQUARE_TOKEN) -> None:
    await connect(
        rt,
        tid,
        Provider.SQUARE,
        TokenSet(
            access_token=token,
            refresh_token="EQAA-unused",
            expires_at=_now() + FAR_FUTURE,
            account_id=SQUARE_MERCHANT,
        ),
    )


async def connection_of(rt: WorkerRuntime, tid: uuid.UUID, provider: Provider) -> Connection:
    async with system(rt, tid) as uow:
        found = await uow.connections.get(provider)
    assert found is not None
    return found


async def new_job(rt: WorkerRuntime, tid: uuid.UUID, kind: str = "calendar_sync") -> uuid.UUID:
    async with system(rt, tid) as uow:
        job = await domain_jobs.create_job(uow, tid, kind=kind)
    return job.id


async def job_of(rt: WorkerRuntime, tid: uuid.UUID, job_id: uuid.UUID) -> Job:
    async with system(rt, tid) as uow:
        job = await uow.jobs.get(job_id)
    assert job is not None
    return job


async def run_job(
    rt: WorkerRuntime,
    tid: uuid.UUID,
    providers: Sequence[Provider],
    *,
    kind: str = "calendar",
    job_id: uuid.UUID | None = None,
    job_try: int = 1,
) -> tuple[str, Job]:
    job_id = job_id or await new_job(rt, tid, f"{kind}_sync")
    function = sync_calendar if kind == "calendar" else sync_inventory
    outcome = await function(
        {"runtime": rt, "job_try": job_try}, str(tid), str(job_id), [p.value for p in providers]
    )
    return outcome, await job_of(rt, tid, job_id)


async def scalar(rt: WorkerRuntime, tid: uuid.UUID, sql: str) -> Any:
    async with system(rt, tid) as uow:
        return (await uow.connection.execute(text(sql))).scalar_one()


async def rows(rt: WorkerRuntime, tid: uuid.UUID, sql: str) -> list[Any]:
    async with system(rt, tid) as uow:
        return list((await uow.connection.execute(text(sql))).all())


def stats_of(job: Job, provider: Provider) -> dict[str, Any]:
    assert job.result is not None, job
    found: dict[str, Any] = job.result["providers"][provider.value]
    return found


async def call(
    client: httpx.AsyncClient, tenant: TenantFixture, query: str, **variables: Any
) -> dict[str, Any]:
    body = await gql(client, query, variables, token=tenant.owner.token, tenant=tenant.uuid)
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def add_square_bookings(
    square: FakeSquare, starts: Sequence[datetime], customers: Sequence[str | None] | None = None
) -> list[str]:
    """ACCEPTED one-hour bookings; ``customers`` are Square customer ids (None: no customer)."""
    ids = []
    for index, start in enumerate(starts):
        customer = customers[index] if customers is not None else None
        ids.append(square.add_booking(start_at=start, status="ACCEPTED", customer_id=customer)["id"])
    return ids


def add_square_customers(square: FakeSquare, emails: Sequence[str], prefix: str = "Client") -> list[str]:
    return [
        square.add_customer(given_name=f"{prefix}{i}", family_name="Tester", email_address=email)["id"]
        for i, email in enumerate(emails)
    ]


async def sync_square_bookings(
    rt: WorkerRuntime, square: FakeSquare, tid: uuid.UUID, count: int, *, tag: str
) -> list[tuple[str, str, datetime]]:
    """Seed ``count`` bookings (each with its own customer), connect Square, sync; (id, email, start)."""
    square.reset()
    base = _base_time(3)
    emails = [f"{tag}{i}.{uuid.uuid4().hex[:6]}@example.com" for i in range(count)]
    customers = add_square_customers(square, emails)
    starts = [base + timedelta(minutes=45 * i) for i in range(count)]
    ids = add_square_bookings(square, starts, customers)
    await connect_square(rt, tid)
    outcome, job = await run_job(rt, tid, [Provider.SQUARE])
    assert (outcome, job.status) == ("complete", JobStatus.COMPLETED), job
    return list(zip(ids, emails, starts, strict=True))


async def wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.02)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# ---------------------------------------------------------------- 1. merge across providers


async def test_square_and_google_bookings_merge_into_one_appointment_each(
    rt: WorkerRuntime, square: FakeSquare, fakes: Fakes, client: httpx.AsyncClient
) -> None:
    google = fakes.google
    _, tid = await new_tenant(client)
    tag = uuid.uuid4().hex[:6]
    shared = [f"shared{i}.{tag}@example.com" for i in range(20)]
    square_only_people = [f"sqonly{i}.{tag}@example.com" for i in range(7)]
    google_only_people = [f"gonly{i}.{tag}@example.com" for i in range(3)]
    customer_of = dict(
        zip(
            shared + square_only_people,
            add_square_customers(square, shared + square_only_people),
            strict=True,
        )
    )
    base = _base_time(2)
    # 20 shared bookings, and 10 only in Square (three by clients who also have a shared one).
    shared_starts = [base + timedelta(hours=2 * i) for i in range(20)]
    square_only_emails = square_only_people + shared[:3]
    square_only_starts = [base + timedelta(days=5, hours=2 * j) for j in range(10)]
    shared_ids = add_square_bookings(square, shared_starts, [customer_of[e] for e in shared])
    square_only_ids = add_square_bookings(
        square, square_only_starts, [customer_of[e] for e in square_only_emails]
    )

    # Google: the same 20 bookings 1-5 minutes later, the client's email in another case, plus 5 of its own
    # (two by clients known from Square, on days they have no Square booking).
    account = f"owner-{tag}@example.com"
    google_token = google.add_account(account)
    me = {"email": account, "organizer": True, "self": True, "responseStatus": "accepted"}

    def event(start: datetime, email: str, name: str) -> str:
        return google.add_event(
            account=account,
            summary=f"Visit - {name}",
            start=start,
            end=start + timedelta(hours=1),
            attendees=[me, {"email": email, "displayName": name, "responseStatus": "accepted"}],
        )

    shared_events = [
        event(
            start + timedelta(minutes=1 + i % 5),
            shared[i].upper() if i % 2 else shared[i].capitalize(),
            f"Client{i} Tester",
        )
        for i, start in enumerate(shared_starts)
    ]
    google_only_emails = [*google_only_people, square_only_people[0].upper(), shared[3].upper()]
    google_only_events = [
        event(base + timedelta(days=8, hours=2 * k), email, f"G{k}")
        for k, email in enumerate(google_only_emails)
    ]

    await connect_square(rt, tid)
    await connect(
        rt,
        tid,
        Provider.GOOGLE,
        TokenSet(access_token=google_token, expires_at=_now() + FAR_FUTURE, account_id=account),
        {"calendar_id": "primary"},
    )
    outcome, job = await run_job(rt, tid, [Provider.SQUARE, Provider.GOOGLE])
    assert (outcome, job.status, job.error) == ("complete", JobStatus.COMPLETED, None)
    square_stats, google_stats = stats_of(job, Provider.SQUARE), stats_of(job, Provider.GOOGLE)
    assert {k: square_stats[k] for k in ("fetched", "created", "updated", "matched", "contactsCreated")} == {
        "fetched": 30,
        "created": 30,
        "updated": 0,
        "matched": 0,
        "contactsCreated": 27,
    }
    assert {k: google_stats[k] for k in ("fetched", "created", "updated", "matched", "contactsCreated")} == {
        "fetched": 25,
        "created": 5,
        "updated": 0,
        "matched": 20,
        "contactsCreated": 3,
    }

    assert await scalar(rt, tid, "SELECT count(*) FROM appointments") == 35
    assert await scalar(rt, tid, "SELECT count(*) FROM appointment_sources") == 55
    sources: dict[str, set[tuple[str, str]]] = {}
    linked = await rows(
        rt, tid, "SELECT appointment_id::text, provider, external_id FROM appointment_sources"
    )
    for row in linked:
        sources.setdefault(row[0], set()).add((row[1], row[2]))
    expected = sorted(
        [sorted({("SQUARE", s), ("GOOGLE", g)}) for s, g in zip(shared_ids, shared_events, strict=True)]
        + [[("SQUARE", s)] for s in square_only_ids]
        + [[("GOOGLE", g)] for g in google_only_events]
    )
    assert sorted(sorted(found) for found in sources.values()) == expected

    # One contact per distinct client, matched by email whatever its case.
    distinct = {e.lower() for e in shared + square_only_people + google_only_people}
    assert len(distinct) == 30
    assert await scalar(rt, tid, "SELECT count(*) FROM contacts") == 30
    bidx = {bytes(r[0]) for r in await rows(rt, tid, "SELECT email_bidx FROM contacts")}
    assert bidx == {rt.vault.index(tid, "email", e) for e in distinct}
    # Each shared appointment belongs to its client's contact.
    contact_by_email = {
        bytes(r[0]): r[1] for r in await rows(rt, tid, "SELECT email_bidx, id::text FROM contacts")
    }
    owner_of = {
        r[0]: r[1]
        for r in await rows(
            rt,
            tid,
            "SELECT s.external_id, a.contact_id::text FROM appointment_sources s "
            "JOIN appointments a ON a.id = s.appointment_id WHERE s.provider = 'GOOGLE'",
        )
    }
    for email, google_id in zip(shared, shared_events, strict=True):
        assert owner_of[google_id] == contact_by_email[rt.vault.index(tid, "email", email)]

    # Again: nothing new (Square updates its 30, Google's sync token reports no change).
    outcome, again = await run_job(rt, tid, [Provider.SQUARE, Provider.GOOGLE])
    assert (outcome, again.status) == ("complete", JobStatus.COMPLETED)
    square_again, google_again = stats_of(again, Provider.SQUARE), stats_of(again, Provider.GOOGLE)
    assert {k: square_again[k] for k in ("fetched", "created", "updated", "matched", "contactsCreated")} == {
        "fetched": 30,
        "created": 0,
        "updated": 30,
        "matched": 0,
        "contactsCreated": 0,
    }
    assert {
        k: google_again[k] for k in ("fetched", "created", "matched", "contactsCreated", "incremental")
    } == {"fetched": 0, "created": 0, "matched": 0, "contactsCreated": 0, "incremental": True}
    assert await scalar(rt, tid, "SELECT count(*) FROM appointments") == 35
    assert await scalar(rt, tid, "SELECT count(*) FROM appointment_sources") == 55
    assert await scalar(rt, tid, "SELECT count(*) FROM contacts") == 30


# ---------------------------------------------------------------- 2. Acuity window splitting


async def connect_acuity(rt: WorkerRuntime, tid: uuid.UUID, acuity: FakeAcuity) -> None:
    await connect(
        rt,
        tid,
        Provider.ACUITY,
        TokenSet(access_token=acuity.api_key, account_id=str(acuity.account_id)),
        {"mode": "basic", "user_id": acuity.user_id},
    )


async def test_acuity_busy_day_is_split_into_windows_and_read_in_full(
    rt: WorkerRuntime, acuity: FakeAcuity, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    first_day = (_now() + timedelta(days=2)).date()
    # 1,100 on one day: more than the 1,000 a request returns, so a window must be split below a day.
    seeded = acuity.seed(1150, first_day, 10, busy={3: 1100})
    cancelled = len(seeded) // 17  # the fake cancels every 17th
    await connect_acuity(rt, tid, acuity)

    outcome, job = await run_job(rt, tid, [Provider.ACUITY])
    assert (outcome, job.status, job.error) == ("complete", JobStatus.COMPLETED, None)
    stats = stats_of(job, Provider.ACUITY)
    assert stats["fetched"] == len(seeded) == 1150
    assert stats["created"] == len(seeded) - cancelled  # a cancellation never seen adds nothing
    assert stats["skipped"] == cancelled
    assert await scalar(rt, tid, "SELECT count(*) FROM appointments") == len(seeded) - cancelled
    assert {r[0] for r in await rows(rt, tid, "SELECT external_id FROM appointment_sources")} == {
        str(appointment_id) for n, appointment_id in enumerate(seeded, start=1) if n % 17
    }

    windows = [(_parse(a), _parse(b)) for a, b in stats["windows"]]
    assert len(windows) > 3
    assert all(a < b for a, b in windows)
    assert all(windows[i][1] == windows[i + 1][0] for i in range(len(windows) - 1)), "windows not contiguous"
    assert min(b - a for a, b in windows) < timedelta(days=1)  # split below a day
    answers = [r.returned for r in acuity.list_requests()]
    full = sum(1 for n in answers if n is not None and n >= 1000)
    assert full >= 2
    # Every full answer was split; every accepted window was asked once.
    assert len(answers) == len(windows) + full
    assert stats["pages"] == len(windows)


async def test_acuity_burst_that_cannot_be_split_fails_the_job(
    rt: WorkerRuntime, acuity: FakeAcuity, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    at = _base_time(4).replace(hour=15)
    acuity.burst(1000, at)
    await connect_acuity(rt, tid, acuity)

    outcome, job = await run_job(rt, tid, [Provider.ACUITY])
    assert outcome == "failed"
    assert job.status is JobStatus.FAILED
    assert job.status is not JobStatus.COMPLETED
    assert job.error is not None
    assert job.error.startswith("Acuity returned its 1000-appointment ceiling for ")
    assert job.error.endswith(
        "a window that cannot be split further (smallest window 1:00:00); the range was not fully read"
    )
    assert job.message == "Failed"


# ---------------------------------------------------------------- 3. retries


async def test_transient_errors_beyond_the_http_retries_defer_the_job_then_it_completes(
    sync_settings: Settings, square: FakeSquare, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    starts = [_base_time(2) + timedelta(hours=3 * i) for i in range(12)]
    add_square_bookings(square, starts)
    # One failure more than ProviderHttp retries on its own: the job itself must be retried.
    square.fail_next(HTTP_ATTEMPTS + 1, status=500, path="/v2/bookings")
    async with own_runtime(sync_settings) as runtime:
        await connect_square(runtime, tid)
        job_id = await new_job(runtime, tid)
        with pytest.raises(Retry) as retry:
            await sync_calendar({"runtime": runtime, "job_try": 1}, str(tid), str(job_id), ["SQUARE"])
        assert square.count("/v2/bookings", status=500) == HTTP_ATTEMPTS
        job = await job_of(runtime, tid, job_id)
        assert job.status is JobStatus.RUNNING
        assert job.attempts == 1
        delay_ms = retry.value.defer_score
        assert delay_ms is not None
        assert 1000 <= delay_ms <= 2000  # random.uniform(1, 2 ** 1) seconds
        prefix = (
            "Square had a temporary error (HTTP 500) while listing bookings (INTERNAL_SERVER_ERROR); "
            "retrying in "
        )
        assert job.message is not None
        assert job.message.startswith(prefix)
        assert job.message.endswith(" s")
        shown = int(job.message.removeprefix(prefix).removesuffix(" s"))  # the delay, rounded
        assert abs(shown - delay_ms / 1000) <= 0.501

        # The outage lasts for one more call (a health probe spends it); then Square answers again.
        async with httpx.AsyncClient(base_url=square.base_url) as probe:
            assert (await probe.get("/v2/bookings")).status_code == 500
        outcome, job = await run_job(runtime, tid, [Provider.SQUARE], job_id=job_id, job_try=2)
    assert (outcome, job.status, job.error) == ("complete", JobStatus.COMPLETED, None)
    assert job.attempts == 2
    assert job.message == "Done"
    assert stats_of(job, Provider.SQUARE)["created"] == len(starts)


async def test_rate_limit_defers_the_job_by_retry_after(
    sync_settings: Settings, square: FakeSquare, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    add_square_bookings(square, [_base_time(2)])
    square.fail_next(HTTP_ATTEMPTS, status=429, retry_after=1, path="/v2/bookings")
    async with own_runtime(sync_settings) as runtime:
        await connect_square(runtime, tid)
        job_id = await new_job(runtime, tid)
        with pytest.raises(Retry) as retry:
            await sync_calendar({"runtime": runtime, "job_try": 1}, str(tid), str(job_id), ["SQUARE"])
        job = await job_of(runtime, tid, job_id)
    assert retry.value.defer_score == 1000  # Retry-After: 1
    assert job.status is JobStatus.RUNNING
    assert job.message == (
        "Square is rate limiting requests while listing bookings (RATE_LIMITED); retrying in 1 s"
    )


async def test_job_retry_waits_out_an_open_circuit(
    sync_settings: Settings, square: FakeSquare, client: httpx.AsyncClient
) -> None:
    """Five failed calls in a row open Square's circuit for 30 s: calls are then refused locally. A job
    retried before the circuit lets calls through again spends one of its MAX_TRIES for nothing, so the
    deferral must cover what is left of the cooldown."""
    _, tid = await new_tenant(client)
    add_square_bookings(square, [_base_time(2)])
    square.fail_next(HTTP_ATTEMPTS + 1, status=500, path="/v2/bookings")
    async with own_runtime(sync_settings) as runtime:
        await connect_square(runtime, tid)
        job_id = await new_job(runtime, tid)
        with pytest.raises(Retry):
            await sync_calendar({"runtime": runtime, "job_try": 1}, str(tid), str(job_id), ["SQUARE"])
        # Square has recovered after one more failure, which opens the circuit.
        with pytest.raises(Retry) as retry:
            await sync_calendar({"runtime": runtime, "job_try": 2}, str(tid), str(job_id), ["SQUARE"])
        opened_at = time.monotonic()
        job = await job_of(runtime, tid, job_id)
    assert square.count("/v2/bookings") == HTTP_ATTEMPTS + 1
    assert job.message is not None
    assert "circuit open" in job.message
    delay_ms = retry.value.defer_score
    assert delay_ms is not None
    remaining_cooldown = 30.0 - (time.monotonic() - opened_at)
    assert delay_ms / 1000 >= remaining_cooldown - 1, (
        f"the job is retried in {delay_ms / 1000:.1f} s while Square's circuit stays open "
        f"for another {remaining_cooldown:.0f} s"
    )


# ---------------------------------------------------------------- 4. expired credentials


async def square_grant(square: FakeSquare) -> dict[str, Any]:
    """Tokens from Square's code flow (the fake knows their refresh token)."""
    async with httpx.AsyncClient(base_url=square.base_url, timeout=5) as http:
        response = await http.post(
            "/oauth2/token",
            json={
                "client_id": SQUARE_ID,
                "client_secret": SQUARE_SECRET,
                "grant_type": "authorization_code",
                "code": square.issue_code(),
            },
            headers={"Square-Version": SQUARE_VERSION},
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_token_expiring_soon_is_refreshed_before_syncing(
    rt: WorkerRuntime, square: FakeSquare, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    add_square_bookings(square, [_base_time(2), _base_time(3)])
    grant = await square_grant(square)
    await connect(
        rt,
        tid,
        Provider.SQUARE,
        TokenSet(
            access_token=grant["access_token"],
            refresh_token=grant["refresh_token"],
            expires_at=_now() + timedelta(minutes=2),
            account_id=SQUARE_MERCHANT,
        ),
    )
    before = await connection_of(rt, tid, Provider.SQUARE)
    square.reset_calls()

    outcome, job = await run_job(rt, tid, [Provider.SQUARE])
    assert (outcome, job.status, job.error) == ("complete", JobStatus.COMPLETED, None)
    refreshes = [c for c in square.calls if c.path == "/oauth2/token"]
    assert [(c.status, c.body["grant_type"], c.body["refresh_token"]) for c in refreshes] == [
        (200, "refresh_token", grant["refresh_token"])
    ]
    after = await connection_of(rt, tid, Provider.SQUARE)
    assert after.access_token_ciphertext != before.access_token_ciphertext
    assert after.status is ConnectionStatus.CONNECTED
    assert after.expires_at is not None
    assert after.expires_at > _now() + timedelta(days=29)
    fresh = connections.open_tokens(rt.vault.keyring, tid, after)
    assert fresh.access_token != grant["access_token"]
    assert fresh.refresh_token == grant["refresh_token"]  # Square's code-flow refresh tokens do not rotate
    bookings_auth = {c.authorization for c in square.calls if c.path == "/v2/bookings"}
    assert bookings_auth == {f"Bearer {fresh.access_token}"}  # the sync used the refreshed token
    assert await scalar(rt, tid, "SELECT count(*) FROM appointments") == 2


async def test_revoked_refresh_token_expires_the_connection_and_fails_the_job(
    rt: WorkerRuntime, square: FakeSquare, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    add_square_bookings(square, [_base_time(2)])
    grant = await square_grant(square)
    async with httpx.AsyncClient(base_url=square.base_url, timeout=5) as http:
        revoked = await http.post(
            "/oauth2/revoke",
            json={"client_id": SQUARE_ID, "merchant_id": SQUARE_MERCHANT},
            headers={"Authorization": f"Client {SQUARE_SECRET}", "Square-Version": SQUARE_VERSION},
        )
    assert revoked.status_code == 200, revoked.text
    await connect(
        rt,
        tid,
        Provider.SQUARE,
        TokenSet(
            access_token=grant["access_token"],
            refresh_token=grant["refresh_token"],
            expires_at=_now() + timedelta(minutes=2),
            account_id=SQUARE_MERCHANT,
        ),
    )
    outcome, job = await run_job(rt, tid, [Provider.SQUARE])
    assert (outcome, job.status) == ("failed", JobStatus.FAILED)
    assert job.error == (
        "Square refused the refresh token while refreshing the access token (UNAUTHORIZED); reconnect Square"
    )
    assert square.count("/v2/bookings") == 0
    connection = await connection_of(rt, tid, Provider.SQUARE)
    assert (connection.status, connection.last_error) == (
        ConnectionStatus.EXPIRED,
        "Square refused the refresh token while refreshing the access token (UNAUTHORIZED); reconnect Square",
    )


async def test_access_token_revoked_mid_sync_expires_the_connection(
    rt: WorkerRuntime, square: FakeSquare, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    base = _base_time(1)
    add_square_bookings(square, [base + timedelta(days=d) for d in range(0, 150, 5)])  # no customers
    await connect_square(rt, tid)
    square.latency = 0.2
    job_id = await new_job(rt, tid)
    task = asyncio.create_task(
        sync_calendar({"runtime": rt, "job_try": 1}, str(tid), str(job_id), ["SQUARE"])
    )

    async def two_pages_read() -> bool:
        return square.count("/v2/bookings", status=200) >= 2

    await wait_for(two_pages_read, 10, "two bookings pages")
    square.revoke_token(SQUARE_TOKEN)
    outcome = await asyncio.wait_for(task, 20)
    job = await job_of(rt, tid, job_id)
    assert (outcome, job.status) == ("failed", JobStatus.FAILED)
    assert job.error == (
        "Square refused the access token while listing bookings (ACCESS_TOKEN_REVOKED): reconnect Square"
    )
    connection = await connection_of(rt, tid, Provider.SQUARE)
    assert (connection.status, connection.last_error) == (
        ConnectionStatus.EXPIRED,
        "Square refused the access token while listing bookings (ACCESS_TOKEN_REVOKED)",
    )
    assert square.count("/v2/bookings", status=401) == 1


# ---------------------------------------------------------------- 5. cancel

CANCEL = """
mutation($id: ID!) {
  cancelJob(input: {jobId: $id}) { job { id status message } userErrors { field message code } }
}
"""


async def test_cancel_stops_a_running_sync_at_its_next_page(
    rt: WorkerRuntime, square: FakeSquare, client: httpx.AsyncClient
) -> None:
    tenant, tid = await new_tenant(client)
    base = _base_time(-20)
    # 360 bookings over 90 days from 20 days ago: 31-day windows of more than one 100-booking page each.
    add_square_bookings(square, [base + timedelta(hours=6 * i) for i in range(360)])
    await connect_square(rt, tid)
    square.latency = 0.15
    job_id = await new_job(rt, tid)
    task = asyncio.create_task(
        sync_calendar({"runtime": rt, "job_try": 1}, str(tid), str(job_id), ["SQUARE"])
    )

    async def progressed() -> bool:
        job = await job_of(rt, tid, job_id)
        return job.status is JobStatus.RUNNING and job.progress > 0.05

    await wait_for(progressed, 10, "the first page")
    payload = (await call(client, tenant, CANCEL, id=to_global_id("Job", job_id)))["cancelJob"]
    at_cancel = square.count("/v2/bookings")
    assert payload == {
        "job": {"id": to_global_id("Job", job_id), "status": "RUNNING", "message": "Cancelling"},
        "userErrors": [],
    }
    assert await asyncio.wait_for(task, 10) == "cancelled"
    job = await job_of(rt, tid, job_id)
    assert (job.status, job.message, job.result) == (
        JobStatus.CANCELLED,
        "Cancelled",
        {"providers": {}, "cancelled": True},
    )
    assert square.count("/v2/bookings") <= at_cancel + 1  # at most the page in flight
    assert square.count("/v2/bookings") < 10  # far from the whole walk
    created = await scalar(rt, tid, "SELECT count(*) FROM appointments")
    assert 0 < created < 360


async def test_cancel_of_a_pending_job_is_immediate(
    rt: WorkerRuntime, square: FakeSquare, client: httpx.AsyncClient
) -> None:
    tenant, tid = await new_tenant(client)
    add_square_bookings(square, [_base_time(2)])
    await connect_square(rt, tid)
    job_id = await new_job(rt, tid)
    payload = (await call(client, tenant, CANCEL, id=to_global_id("Job", job_id)))["cancelJob"]
    assert payload == {
        "job": {"id": to_global_id("Job", job_id), "status": "CANCELLED", "message": "Cancelled"},
        "userErrors": [],
    }
    # A delivery after the cancel does nothing.
    outcome, job = await run_job(rt, tid, [Provider.SQUARE], job_id=job_id)
    assert (outcome, job.status, job.attempts) == ("already finished", JobStatus.CANCELLED, 0)
    assert square.count("/v2/bookings") == 0
    again = await gql(
        client, CANCEL, {"id": to_global_id("Job", job_id)}, token=tenant.owner.token, tenant=tenant.uuid
    )
    assert again["data"]["cancelJob"]["userErrors"] == [
        {"field": ["jobId"], "message": "The job has already ended (CANCELLED)", "code": "INVALID"}
    ]


# ---------------------------------------------------------------- 6. stuck sweep


async def test_sweep_fails_a_running_job_without_progress(
    rt: WorkerRuntime, migrated: Settings, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    stuck, fresh, waiting = [await new_job(rt, tid) for _ in range(3)]
    async with system(rt, tid) as uow:
        await domain_jobs.start(uow, stuck, "Syncing calendar (attempt 1)")
        await domain_jobs.start(uow, fresh, "Syncing calendar (attempt 1)")
    owner = await asyncpg.connect(_libpq(migrated.database_url or ""), timeout=10)
    try:
        async with owner.transaction():
            await owner.execute("SELECT set_config('app.tenant_id', $1, true)", str(tid))
            updated = await owner.execute(
                "UPDATE jobs SET updated_at = now() - interval '2 hours' WHERE id = ANY($1::uuid[])",
                [stuck, waiting],
            )
            assert updated == "UPDATE 2"
    finally:
        await owner.close()

    assert await jobs_sweep({"runtime": rt}) >= 1
    swept = await job_of(rt, tid, stuck)
    assert (swept.status, swept.error, swept.message) == (
        JobStatus.FAILED,
        "Stopped: no progress for 30 minutes",
        "Failed",
    )
    assert (await job_of(rt, tid, fresh)).status is JobStatus.RUNNING
    assert (await job_of(rt, tid, waiting)).status is JobStatus.PENDING


# ---------------------------------------------------------------- 7. inventory

INVENTORY = """
query($first: Int, $after: String, $low: Boolean) {
  inventoryItems(first: $first, after: $after, lowStockOnly: $low) {
    edges { cursor node { id sku name quantity tracked lowStockThreshold priceCents provider } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
SUMMARY = "{ inventorySummary { totalSkus totalUnits lowStockCount valueCents untrackedCount lastSyncedAt } }"


def square_catalog(square: FakeSquare) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, Any]]:
    """Retail items with known stock; (provider, sku) -> expected item, and the item to delete later."""
    expected: dict[tuple[str, str], dict[str, Any]] = {}

    def want(sku: str, name: str, quantity: int, threshold: int, price: int) -> None:
        expected[("SQUARE", sku)] = {
            "sku": sku,
            "name": name,
            "quantity": quantity,
            "tracked": True,
            "lowStockThreshold": threshold,
            "priceCents": price,
            "provider": "SQUARE",
        }

    square.add_item(
        "Argan Oil",
        [{"sku": "SQ-ARGAN", "amount": 2500, "counts": {"L1": 3, "L2": 4}, "thresholds": {"L1": 5, "L2": 5}}],
    )
    want("SQ-ARGAN", "Argan Oil", 7, 10, 2500)
    bond = square.add_item("Bond Builder", [{"sku": "SQ-BOND", "amount": 4200, "counts": {"L1": 20}}])
    want("SQ-BOND", "Bond Builder", 20, 5, 4200)
    square.add_item(
        "Curl Cream",
        [
            {"name": "Small", "sku": "SQ-CURL-S", "amount": 1800, "counts": {"L1": "2.5"}},
            {
                "name": "Large",
                "sku": "SQ-CURL-L",
                "amount": 3000,
                "counts": {"L1": 9},
                "other_counts": {"SOLD": "7"},
            },
        ],
    )
    want("SQ-CURL-S", "Curl Cream (Small)", 2, 5, 1800)
    want("SQ-CURL-L", "Curl Cream (Large)", 9, 5, 3000)
    square.add_item("Dry Shampoo", [{"sku": "SQ-DRY", "amount": 1500}])
    want("SQ-DRY", "Dry Shampoo", 0, 5, 1500)
    square.add_item(
        "Haircut",
        [{"name": "Regular", "amount": 4500, "duration_minutes": 60}],
        product_type="APPOINTMENTS_SERVICE",
    )
    for n in range(20):
        spec = {"sku": f"SQ-FILL-{n:02d}", "amount": 100 + n, "counts": {"L1": n}}
        square.add_item(f"Filler {n:02d}", [spec])
        want(f"SQ-FILL-{n:02d}", f"Filler {n:02d}", n, 5, 100 + n)
    return expected, bond


def shopify_expected(shop: FakeShop) -> dict[tuple[str, str], dict[str, Any]]:
    expected = {}
    for product in shop.products:
        for variant in product.variants:
            name = product.title
            if variant.title != "Default Title":
                name = f"{product.title} \u2013 {variant.title}"
            sku = variant.sku or str(variant.id)
            available = shop.available(variant.inventory_item_id)
            expected[("SHOPIFY", sku)] = {
                "sku": sku,
                "name": name,
                "quantity": available or 0,  # the API's quantity is non-null; `tracked` says why
                "tracked": available is not None,
                "lowStockThreshold": 5,
                "priceCents": variant.price_cents,
                "provider": "SHOPIFY",
            }
    return expected


async def all_items(
    client: httpx.AsyncClient, tenant: TenantFixture, *, first: int, low: bool | None = None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = None
    for _ in range(100):
        page = (await call(client, tenant, INVENTORY, first=first, after=after, low=low))["inventoryItems"]
        items.extend(edge["node"] for edge in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            return items
        after = page["pageInfo"]["endCursor"]
    raise AssertionError("inventory paging did not end")


def summary_of(expected: dict[tuple[str, str], dict[str, Any]]) -> dict[str, int]:
    items = list(expected.values())
    return {
        "totalSkus": len(items),
        "totalUnits": sum(max(i["quantity"], 0) for i in items),
        "lowStockCount": sum(1 for i in items if i["tracked"] and i["quantity"] <= i["lowStockThreshold"]),
        "valueCents": sum(max(i["quantity"], 0) * i["priceCents"] for i in items),
        "untrackedCount": sum(1 for i in items if not i["tracked"]),
    }


async def test_inventory_from_square_and_shopify(
    rt: WorkerRuntime, square: FakeSquare, fakes: Fakes, client: httpx.AsyncClient
) -> None:
    tenant, tid = await new_tenant(client)
    expected, bond = square_catalog(square)
    shop = fakes.shopify.add_shop(
        generate_shop(
            SHOP_A,
            variants=40,
            locations=2,
            seed=11,
            access_token="shpat_" + uuid.uuid4().hex,
            untracked_every=8,
        )
    )
    expected |= shopify_expected(shop)
    # Untracked stock (available: null) is its own state: quantity 0 over the API, never low stock.
    assert sum(1 for item in expected.values() if not item["tracked"]) == 5
    assert len(expected) == 25 + 40
    await connect_square(rt, tid)
    await connect(rt, tid, Provider.SHOPIFY, TokenSet(access_token=shop.access_token), {"shop": SHOP_A})

    outcome, job = await run_job(rt, tid, [Provider.SQUARE, Provider.SHOPIFY], kind="inventory")
    assert (outcome, job.status, job.error) == ("complete", JobStatus.COMPLETED, None)
    assert stats_of(job, Provider.SQUARE)["fetched"] == 25
    assert stats_of(job, Provider.SHOPIFY)["fetched"] == 40
    assert stats_of(job, Provider.SQUARE)["removed"] == stats_of(job, Provider.SHOPIFY)["removed"] == 0

    listed = await all_items(client, tenant, first=100)
    assert {(i["provider"], i["sku"]): {k: v for k, v in i.items() if k != "id"} for i in listed} == expected
    summary = (await call(client, tenant, SUMMARY))["inventorySummary"]
    assert summary.pop("lastSyncedAt") is not None
    assert summary == summary_of(expected)

    # Paging by name, 7 at a time: every item once, in the database's (name, id) order.
    paged = await all_items(client, tenant, first=7)
    ordered = [
        to_global_id("InventoryItem", r[0])
        for r in await rows(rt, tid, "SELECT id FROM inventory_items ORDER BY name, id")
    ]
    assert [i["id"] for i in paged] == ordered
    assert len(set(ordered)) == len(expected)

    low = await all_items(client, tenant, first=10, low=True)
    assert sorted((i["provider"], i["sku"]) for i in low) == sorted(
        key
        for key, item in expected.items()
        if item["tracked"] and item["quantity"] <= item["lowStockThreshold"]
    )
    assert not any(i["provider"] == "SHOPIFY" and not i["tracked"] for i in low)
    stored = await rows(
        rt, tid, "SELECT external_id FROM inventory_items WHERE provider = 'SHOPIFY' AND quantity IS NULL"
    )
    assert sorted(r[0] for r in stored) == sorted(str(v.id) for v in shop.variants() if not v.tracked)

    # Gone at the providers: one Square item, one Shopify product.
    bond["is_deleted"] = True
    gone_product = shop.products.pop(0)
    for variant in gone_product.variants:
        del expected[("SHOPIFY", variant.sku or str(variant.id))]
    del expected[("SQUARE", "SQ-BOND")]
    outcome, again = await run_job(rt, tid, [Provider.SQUARE, Provider.SHOPIFY], kind="inventory")
    assert (outcome, again.status) == ("complete", JobStatus.COMPLETED)
    assert stats_of(again, Provider.SQUARE)["removed"] == 1
    assert stats_of(again, Provider.SHOPIFY)["removed"] == len(gone_product.variants)
    listed = await all_items(client, tenant, first=100)
    assert {(i["provider"], i["sku"]) for i in listed} == set(expected)
    summary = (await call(client, tenant, SUMMARY))["inventorySummary"]
    summary.pop("lastSyncedAt")
    assert summary == summary_of(expected)


# ---------------------------------------------------------------- 8. GraphQL surface

SYNC_CALENDAR = """
mutation($providers: [Provider!]) {
  syncCalendar(input: {providers: $providers}) {
    job { id kind status progress } userErrors { field message code }
  }
}
"""
APPOINTMENTS = """
query($from: DateTime!, $to: DateTime!, $first: Int) {
  appointments(from: $from, to: $to, first: $first) {
    edges { node { id title startsAt endsAt status contact { displayName emailMasked }
                   sources { provider externalId } } }
    pageInfo { hasNextPage }
  }
}
"""
APPOINTMENTS_LEAN = """
query($from: DateTime!, $to: DateTime!) {
  appointments(from: $from, to: $to, first: 50) {
    edges { node { title contact { displayName } sources { provider externalId } } }
  }
}
"""


async def test_sync_calendar_needs_a_connected_calendar_provider(client: httpx.AsyncClient) -> None:
    tenant, _ = await new_tenant(client)
    for providers, message, code in (
        (None, "Connect a calendar provider first", "NOT_CONNECTED"),
        (["SQUARE"], "Connect Square first", "NOT_CONNECTED"),
        (["SHOPIFY"], "Shopify cannot sync calendar", "INVALID"),
    ):
        payload = (await call(client, tenant, SYNC_CALENDAR, providers=providers))["syncCalendar"]
        error = {"field": ["providers"], "message": message, "code": code}
        assert payload == {"job": None, "userErrors": [error]}, providers


async def test_sync_calendar_enqueue_is_idempotent_while_pending(
    rt: WorkerRuntime, migrated: Settings
) -> None:
    # An app on a Redis namespace no worker listens to: the job stays PENDING.
    namespace = f"syncq-{uuid.uuid4().hex[:10]}"
    settings = migrated.model_copy(update={"redis_namespace": namespace})
    job_uuid = None
    try:
        async with app_client(settings) as (_, http):
            tenant, tid = await new_tenant(http)
            await connect_square(rt, tid)
            first = (await call(http, tenant, SYNC_CALENDAR, providers=["SQUARE"]))["syncCalendar"]
            second = (await call(http, tenant, SYNC_CALENDAR, providers=None))["syncCalendar"]
            assert first["userErrors"] == second["userErrors"] == []
            assert first["job"] == second["job"]
            assert first["job"]["status"] == "PENDING"
            assert first["job"]["kind"] == "calendar_sync"
            raw = base64.urlsafe_b64decode(first["job"]["id"] + "==").decode()
            job_uuid = raw.split(":", 1)[1]
            redis = Redis.from_url(settings.redis_url or "")
            try:
                queued = await redis.zrange(settings.arq_queue, 0, -1)
            finally:
                await redis.aclose()
            assert queued == [f"sync:{job_uuid}".encode()]
            listed = (await call(http, tenant, "{ jobs { edges { node { id status } } } }"))["jobs"]
            assert listed["edges"] == [{"node": {"id": first["job"]["id"], "status": "PENDING"}}]
    finally:
        redis = Redis.from_url(settings.redis_url or "")
        async for key in redis.scan_iter(match=settings.key_prefix + "*"):
            await redis.delete(key)
        if job_uuid:
            await redis.delete(f"arq:job:sync:{job_uuid}")
        await redis.aclose()


async def test_a_tenant_creates_sync_jobs_one_after_another(
    sync_settings: Settings, client: httpx.AsyncClient
) -> None:
    # A fresh runtime: one pooled connection serves every transaction below, as a quiet worker's would.
    _, tid = await new_tenant(client)
    async with own_runtime(sync_settings) as runtime:
        created = [await new_job(runtime, tid) for _ in range(8)]
        async with system(runtime, tid) as uow:
            keyed = await domain_jobs.create_job(
                uow, tid, kind="calendar_sync", dedupe_key="calendar_sync:SQUARE"
            )
        async with system(runtime, tid) as uow:
            again = await domain_jobs.create_job(
                uow, tid, kind="calendar_sync", dedupe_key="calendar_sync:SQUARE"
            )
    assert len(set(created)) == 8
    assert again.id == keyed.id


async def test_appointments_in_start_order_with_sources_and_contact(
    rt: WorkerRuntime, square: FakeSquare, client: httpx.AsyncClient
) -> None:
    tenant, tid = await new_tenant(client)
    synced = await sync_square_bookings(rt, square, tid, 5, tag="order")
    window_from, window_to = _base_time(3) - timedelta(hours=1), _base_time(3) + timedelta(days=1)
    span = {"from": window_from.isoformat(), "to": window_to.isoformat(), "first": 50}
    data = await call(client, tenant, APPOINTMENTS, **span)
    nodes = [edge["node"] for edge in data["appointments"]["edges"]]
    assert data["appointments"]["pageInfo"] == {"hasNextPage": False}
    assert [
        {
            "title": n["title"],
            "startsAt": _parse(n["startsAt"]),
            "endsAt": _parse(n["endsAt"]),
            "status": n["status"],
            "contact": n["contact"],
            "sources": n["sources"],
        }
        for n in nodes
    ] == [
        {
            "title": "Square booking",
            "startsAt": start,
            "endsAt": start + timedelta(hours=1),
            "status": "booked",
            "contact": {"displayName": f"Client{i} Tester", "emailMasked": f"{email[0]}***@example.com"},
            "sources": [{"provider": "SQUARE", "externalId": booking_id}],
        }
        for i, (booking_id, email, start) in enumerate(synced)
    ]
    # A range that only overlaps the second appointment's end.
    second_start = synced[1][2]
    narrow = await call(
        client,
        tenant,
        APPOINTMENTS,
        **{
            "from": (second_start + timedelta(minutes=30)).isoformat(),
            "to": (second_start + timedelta(minutes=40)).isoformat(),
            "first": 10,
        },
    )
    assert [e["node"]["sources"][0]["externalId"] for e in narrow["appointments"]["edges"]] == [synced[1][0]]

    naive = await gql(
        client,
        APPOINTMENTS,
        {"from": "2026-01-01T00:00:00", "to": "2026-02-01T00:00:00", "first": 5},
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    assert naive["data"] is None
    assert [(e["message"], e["extensions"]["code"]) for e in naive["errors"]] == [
        (
            "`from` needs a timezone offset and a date between years 1 and 9999 in UTC "
            "(e.g. 2026-11-26T09:00:00-05:00)",
            "BAD_USER_INPUT",
        )
    ]


async def test_appointments_statement_count_does_not_grow_with_the_page(
    rt: WorkerRuntime,
    square: FakeSquare,
    client: httpx.AsyncClient,
    count_statements: StatementCounter,
) -> None:
    counts = {}
    for size in (5, 50):
        tenant, tid = await new_tenant(client, name=f"N+1 {size}")
        await sync_square_bookings(rt, square, tid, size, tag=f"n{size}-")
        variables = {
            "from": (_base_time(3) - timedelta(hours=1)).isoformat(),
            "to": (_base_time(3) + timedelta(days=3)).isoformat(),
        }
        warm = await call(client, tenant, APPOINTMENTS_LEAN, **variables)
        assert len(warm["appointments"]["edges"]) == size
        count_statements.statements.clear()
        data = await call(client, tenant, APPOINTMENTS_LEAN, **variables)
        assert len(data["appointments"]["edges"]) == size
        assert all(e["node"]["contact"] is not None for e in data["appointments"]["edges"])
        assert all(len(e["node"]["sources"]) == 1 for e in data["appointments"]["edges"])
        counts[size] = len(count_statements.queries)
    assert counts[5] == counts[50], counts


# ---------------------------------------------------------------- 9. cross-tenant

CROSS = """
query($from: DateTime!, $to: DateTime!, $job: ID!, $appointment: ID!, $item: ID!) {
  appointments(from: $from, to: $to, first: 50) { edges { node { id } } }
  inventoryItems(first: 50) { edges { node { id } } }
  inventorySummary { totalSkus totalUnits lowStockCount valueCents }
  connectedAccounts { provider status }
  jobs(first: 50) { edges { node { id } } }
  job(id: $job) { id status }
  appointment: node(id: $appointment) { id }
  item: node(id: $item) { id }
}
"""


async def test_tenants_see_only_their_own_sync_data(
    rt: WorkerRuntime, square: FakeSquare, client: httpx.AsyncClient
) -> None:
    tenant_a, tid_a = await new_tenant(client, name="Tenant A")
    tenant_b, _ = await new_tenant(client, name="Tenant B")
    synced = await sync_square_bookings(rt, square, tid_a, 3, tag="cross")
    square.add_item("Argan Oil", [{"sku": "SQ-ARGAN", "amount": 2500, "counts": {"L1": 3}}])
    outcome, inventory_job = await run_job(rt, tid_a, [Provider.SQUARE], kind="inventory")
    assert outcome == "complete"
    [appointment_id] = [
        r[0]
        for r in await rows(
            rt, tid_a, f"SELECT appointment_id FROM appointment_sources WHERE external_id = '{synced[0][0]}'"
        )
    ]
    [item_id] = [r[0] for r in await rows(rt, tid_a, "SELECT id FROM inventory_items")]
    variables = {
        "from": (_base_time(3) - timedelta(hours=1)).isoformat(),
        "to": (_base_time(3) + timedelta(days=1)).isoformat(),
        "job": to_global_id("Job", inventory_job.id),
        "appointment": to_global_id("Appointment", appointment_id),
        "item": to_global_id("InventoryItem", item_id),
    }

    seen_by_a = await call(client, tenant_a, CROSS, **variables)
    assert len(seen_by_a["appointments"]["edges"]) == 3
    assert seen_by_a["inventoryItems"]["edges"] == [{"node": {"id": variables["item"]}}]
    assert seen_by_a["connectedAccounts"] == [{"provider": "SQUARE", "status": "CONNECTED"}]
    assert len(seen_by_a["jobs"]["edges"]) == 2
    assert seen_by_a["job"] == {"id": variables["job"], "status": "COMPLETED"}
    assert seen_by_a["appointment"] == {"id": variables["appointment"]}
    assert seen_by_a["item"] == {"id": variables["item"]}

    seen_by_b = await call(client, tenant_b, CROSS, **variables)
    assert seen_by_b == {
        "appointments": {"edges": []},
        "inventoryItems": {"edges": []},
        "inventorySummary": {"totalSkus": 0, "totalUnits": 0, "lowStockCount": 0, "valueCents": 0},
        "connectedAccounts": [],
        "jobs": {"edges": []},
        "job": None,
        "appointment": None,
        "item": None,
    }
    pending = await new_job(rt, tid_a)
    cancel = (await call(client, tenant_b, CANCEL, id=to_global_id("Job", pending)))["cancelJob"]
    assert cancel == {
        "job": None,
        "userErrors": [{"field": ["jobId"], "message": "Job not found", "code": "NOT_FOUND"}],
    }
    assert (await job_of(rt, tid_a, pending)).status is JobStatus.PENDING
