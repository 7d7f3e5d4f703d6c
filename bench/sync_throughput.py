"""Calendar and inventory sync throughput and peak worker memory, against the fake providers.

Run by hand (not a test):

    python bench/sync_throughput.py [--appointments 10000] [--small-appointments 2000]
                                    [--items 10000] [--small-items 5000] [--customers 500]
                                    [--kinds calendar,square,shopify] [--wait-quiet S]
                                    [--profile DIR] [--statements]

FakeSquare and FakeShopify (tests/fakes/) run in threads of this process on 127.0.0.1;
`python -m brandvx worker` runs as a separate process, as in production, so its memory is its own.
PostgreSQL and Redis are embedded in a temporary folder (or DATABASE_URL/REDIS_URL when both are set).

Every measured run gets a fresh worker, a fresh tenant and a warm-up job first (a small sync for
another tenant: imports, pools, clients), then the measured job is enqueued the way
resolvers/calendar_sync.py does (a jobs row, then ARQ). Reported per run:

* records/s over the job's own time (jobs.started_at -> jobs.finished_at) and end to end
  (enqueue -> COMPLETED seen by polling the row every 50 ms, which adds ARQ's pick-up delay);
* the worker's RSS sampled every 50 ms (psutil, else /proc/<pid>/status): before the job, peak,
  and the kernel's high-water mark VmHWM (reset through /proc/<pid>/clear_refs before the job);
* CPU seconds spent during the job by the worker, by this process (the fakes), by PostgreSQL and
  by everything else on the machine ("other": on a shared machine, someone else's load).

A second sync of the large calendar (every booking already stored) must create nothing; it runs
twice, right after the import (PostgreSQL's statistics still describe the tables before it) and
after an ANALYZE of the sync tables (as autovacuum would do within a minute or so). Memory is
"flat" when the large run's peak growth over its baseline exceeds the small run's by less than
FLAT_MB_PER_1000 per 1,000 extra records.

--profile DIR attaches `py-spy record` to the worker during the large runs (their figures are
perturbed) and prints where its CPU went. --statements runs the large calendar sync in this
process instead (no worker) and times each SQL statement. Bounded: record counts are capped, every
job has a deadline, and all traffic stays on 127.0.0.1 and Unix sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import event, func, select, text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from brandvx.embedded import EmbeddedServers  # noqa: E402
from brandvx.runtime import Runtime, build_runtime, worker_runtime  # noqa: E402
from brandvx.settings import Settings  # noqa: E402
from domain import connections, tenancy  # noqa: E402
from domain import jobs as djobs  # noqa: E402
from domain.crypto import Keyring  # noqa: E402
from domain.model import Actor, Provider  # noqa: E402
from domain.sync import TokenSet  # noqa: E402
from jobs.syncs import sync_calendar  # noqa: E402
from persistence import tables as t  # noqa: E402
from persistence.migrate import upgrade  # noqa: E402
from persistence.urls import to_asyncpg  # noqa: E402
from tests.fakes.shopify_server import FakeShopify, generate_shop  # noqa: E402
from tests.fakes.square_server import FakeSquare  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - psutil comes with the embedded servers' dependencies
    psutil = None

TARGET_PER_SECOND = 2000.0
# Flat: the large run's peak grows over the small run's by less than this per 1,000 extra records
# (100 bytes a record: noise). Streaming pages bounds memory by the page; per-record state does not.
FLAT_MB_PER_1000 = 0.1
SAMPLE_SECONDS = 0.05
JOB_DEADLINE_SECONDS = 900.0
MB = 1024 * 1024

SQUARE_ID, SQUARE_SECRET = "sq0idp-bench", "sq0csp-bench-secret"
SQUARE_TOKEN, SQUARE_REFRESH, MERCHANT = "EAAA-bench-token", "EQAA-bench-refresh", "MLBENCH"
SHOPIFY_ID, SHOPIFY_SECRET = "bench-shopify-id", "bench-shopify-secret"
SHOP, WARM_SHOP = "bench-sync.myshopify.com", "bench-warm.myshopify.com"
SHOP_TOKEN = "shpat_bench_" + "0" * 20
# Bookings are seeded over [now - SEED_PAST, now - SEED_PAST + SEED_DAYS); the sync range covers it.
SEED_PAST_DAYS, SEED_DAYS = 30, 120
WARM_RECORDS = 50


# --- worker process: memory and CPU ---


def rss_bytes(pid: int) -> int:
    if psutil is not None:
        return int(psutil.Process(pid).memory_info().rss)
    return _status_kb(pid, "VmRSS") * 1024


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_hwm(pid: int) -> bool:
    """Linux resets a process's VmHWM (peak RSS) when "5" is written to its clear_refs."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def hwm_bytes(pid: int) -> int | None:
    try:
        return _status_kb(pid, "VmHWM") * 1024
    except (OSError, KeyError):
        return None


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    if psutil is None:
        return {}
    found: dict[int, float] = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            found[pid] = times.user + times.system
        except psutil.Error:
            continue
    return found


def postgres_pids(postmaster: int | None) -> list[int]:
    if psutil is None or postmaster is None:
        return []
    try:
        root = psutil.Process(postmaster)
        return [root.pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.Error:
        return []


PROCESS_GONE: tuple[type[Exception], ...] = (OSError, KeyError) + ((psutil.Error,) if psutil else ())


def machine_busy_seconds() -> float:
    if psutil is None:
        return 0.0
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def wait_quiet(limit: float) -> float:
    """On a shared machine: wait (at most ``limit`` s) for two quiet seconds in a row (under 10 % busy)."""
    started = time.monotonic()
    quiet = 0
    while psutil is not None and quiet < 2 and time.monotonic() - started < limit:
        quiet = quiet + 1 if psutil.cpu_percent(interval=1.0) < 10 else 0
    return time.monotonic() - started


class RssSampler(threading.Thread):
    """Samples one process's RSS every SAMPLE_SECONDS on its own thread (not this event loop's)."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append((time.monotonic(), rss_bytes(self.pid)))
            except PROCESS_GONE:
                return
            if psutil is not None and not psutil.pid_exists(self.pid):
                return
            self._halt.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)


class Worker:
    """`python -m brandvx worker`, stopped with SIGTERM (ARQ shuts down gracefully) and waited for."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "brandvx", "worker"],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


class Profiler:
    """`py-spy record --pid` (collapsed stacks) around one measured job."""

    def __init__(self, pid: int, path: Path) -> None:
        self.path = path
        self._log = path.with_suffix(".log").open("wb")
        self.process = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "-o", str(path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        time.sleep(1.0)  # attached before the job starts

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


APP_PACKAGES = ("domain", "persistence", "integrations", "jobs", "brandvx", "resolvers")
# Leaf frames of a thread with nothing to do (py-spy cannot always tell idle threads apart).
IDLE_FRAMES = ("EpollSelector.select (selectors.py)", "_worker (concurrent/futures/thread.py)")


def summarize_profile(path: Path, top: int = 12) -> str:
    """Where the worker's CPU went, from py-spy's collapsed stacks.

    SQLAlchemy runs statements in greenlets, which py-spy shows as stacks of their own starting at
    ``Connection.execute``: those are put under "SQL statement: ..." by what they were doing. Other
    samples go to the deepest application frame (with the libraries it called).
    """
    if not path.exists():
        return f"  (no profile written to {path})"
    where: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = idle = 0
    app = re.compile(r"\((" + "|".join(APP_PACKAGES) + ")/")
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        if frames[-1] in IDLE_FRAMES:
            idle += count
            continue
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        names = {f.split(" (")[0] for f in frames}
        if frames[0].startswith("Connection.execute"):
            if "_extend_values_for_multiparams" in names:
                where["SQL statement: compile a multi-row INSERT ... VALUES (never cached)"] += count
            elif "_process_parameters_for_postcompile" in names:
                where["SQL statement: expand IN (...) parameters"] += count
            elif "Compiled.__init__" in names or "_compile_w_cache" in names:
                where["SQL statement: compile or cache lookup, other"] += count
            else:
                where["SQL statement: execute, results"] += count
        else:
            inside = [f for f in frames if app.search(f)]
            where[inside[-1] if inside else frames[0]] += count
    busy = total - idle
    if not busy:
        return "  (no samples)"
    out = [f"  {busy} busy samples at 100 Hz ({idle} idle ones left out)"]
    out.append("  by application frame (with the libraries it called):")
    out += [f"    {100 * n / busy:5.1f} %  {name}" for name, n in where.most_common(top)]
    out.append("  self time by package:")
    out += [f"    {100 * n / busy:5.1f} %  {name}" for name, n in packages.most_common(top)]
    out.append("  self time by function:")
    out += [f"    {100 * n / busy:5.1f} %  {name}" for name, n in own.most_common(top)]
    return "\n".join(out)


def _package(frame: str) -> str:
    match = re.search(r"\(([^()]*)\)$", frame)
    path = match.group(1) if match else frame
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in APP_PACKAGES:
        return f"app:{top}"
    return f"stdlib:{top}" if top in sys.stdlib_module_names or top.startswith("<frozen") else top


# --- the run ---


@dataclass
class Measured:
    label: str
    records: int
    stats: dict[str, Any]
    job_seconds: float
    e2e_seconds: float
    rss_before: int
    rss_peak: int
    rss_after: int
    hwm: int | None
    cpu: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def fetched(self) -> int:
        return int(self.stats.get("fetched", 0))

    @property
    def rate(self) -> float:
        return self.fetched / self.job_seconds if self.job_seconds else 0.0

    @property
    def growth(self) -> int:
        return self.rss_peak - self.rss_before


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.embedded: EmbeddedServers | None = None
        self.postmaster: int | None = None
        self.rt: Runtime | None = None
        self.square = FakeSquare(
            client_id=SQUARE_ID, client_secret=SQUARE_SECRET, access_token=SQUARE_TOKEN, merchant_id=MERCHANT
        )
        self.shopify = FakeShopify(client_id=SHOPIFY_ID, client_secret=SHOPIFY_SECRET)
        self.env: dict[str, str] = {}
        self.seed_start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=SEED_PAST_DAYS)
        self.results: list[Measured] = []
        self.profiles: list[tuple[str, Path]] = []
        self._workers = 0

    # setup and teardown

    async def setup(self) -> None:
        self.square.start()
        self.shopify.start()
        database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
        if not (database_url and redis_url):
            self.embedded = EmbeddedServers.start(self.tmp / "servers", temporary=True, database="bench_sync")
            database_url, redis_url = self.embedded.database_url, self.embedded.redis_url
            self.postmaster = next(
                (h.get_pid() for h in self.embedded._handles if hasattr(h, "get_pid")), None
            )
        assert database_url
        assert redis_url
        overrides = (
            f"{SHOP}={self.shopify.base_url_for(SHOP)},{WARM_SHOP}={self.shopify.base_url_for(WARM_SHOP)}"
        )
        self.env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "BRANDVX_DATA_DIR": str(self.tmp / "data"),
            "BRANDVX_REDIS_NAMESPACE": "bench-sync-" + secrets.token_hex(4),
            "BRANDVX_JWT_SECRET": secrets.token_urlsafe(48),
            "BRANDVX_ENCRYPTION_KEYS": Keyring.generate_spec("bench1"),
            "BRANDVX_BLIND_INDEX_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "BRANDVX_LOG_LEVEL": "WARNING",
            "BRANDVX_SYNC_PAST_DAYS": str(SEED_PAST_DAYS + 1),
            "BRANDVX_SYNC_FUTURE_DAYS": str(SEED_DAYS - SEED_PAST_DAYS + 1),
            "SQUARE_CLIENT_ID": SQUARE_ID,
            "SQUARE_CLIENT_SECRET": SQUARE_SECRET,
            "SQUARE_BASE_URL": self.square.base_url,
            "SHOPIFY_CLIENT_ID": SHOPIFY_ID,
            "SHOPIFY_CLIENT_SECRET": SHOPIFY_SECRET,
            "SHOPIFY_BASE_URL_OVERRIDES": overrides,
        }
        settings = Settings(**self.env)  # type: ignore[arg-type]
        await upgrade(
            database_url, runtime_role=settings.runtime_db_role, runtime_password=settings.runtime_db_password
        )
        self.rt = build_runtime(settings)

    async def analyze(self) -> None:
        """ANALYZE the sync tables as the database owner (the runtime role may not), as autovacuum would."""
        engine = create_async_engine(to_asyncpg(self.env["DATABASE_URL"]))
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text("ANALYZE appointments, appointment_sources, contacts, inventory_items")
                )
        finally:
            await engine.dispose()

    async def statements(self, n: int) -> None:
        """In this process (no worker): time every SQL statement of a calendar sync by its text."""
        timings: dict[str, list[float]] = {}
        runtime = await worker_runtime(Settings(**self.env))  # type: ignore[arg-type]
        engine = runtime.db.engine.sync_engine

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            conn.info.setdefault("bench_started", []).append(time.perf_counter())

        def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            took = time.perf_counter() - conn.info["bench_started"].pop()
            text_ = re.sub(r"\$\d+(::\w+)?", "?", " ".join(statement.split()))
            text_ = ("executemany " if many else "") + re.sub(
                r"\(\?(, \?)*\)(, \(\?(, \?)*\))*", "(?...)", text_
            )
            timings.setdefault(text_[:100], []).append(took)

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        try:
            self.square.reset()
            self.square.seed_bookings(n, self.seed_start, days=SEED_DAYS, customers=self.args.customers)
            tenant = await self.tenant(f"Statements {n}", Provider.SQUARE)
            ctx: Any = {"runtime": runtime, "job_try": 1}
            for label in ("first import", "again", "again, after ANALYZE"):
                if label == "again, after ANALYZE":
                    await self.analyze()
                assert self.rt is not None
                async with self.rt.db.transaction(tenant_id=tenant) as uow:
                    job = await djobs.create_job(uow, tenant, kind="calendar_sync")
                timings.clear()
                started, cpu = time.perf_counter(), time.process_time()
                await sync_calendar(ctx, str(tenant), str(job.id), [Provider.SQUARE.value])
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                sql, count = sum(sum(v) for v in timings.values()), sum(map(len, timings.values()))
                print(
                    f"\n{label}: {n / wall:,.0f} appointments/s in process, wall {wall:.2f} s, "
                    f"CPU {cpu:.2f} s (this process: sync and fakes), {count} statements {sql:.2f} s"
                )
                for statement, took in sorted(timings.items(), key=lambda kv: -sum(kv[1]))[:8]:
                    total, times = sum(took), len(took)
                    print(f"  {total:5.2f} s {times:4d} x {1000 * total / times:6.2f} ms  {statement}")
        finally:
            event.remove(engine, "before_cursor_execute", before)
            event.remove(engine, "after_cursor_execute", after)
            await runtime.close()

    async def close(self) -> None:
        if self.rt is not None:
            await self.rt.aclose()
        self.square.stop()
        self.shopify.stop()
        if self.embedded is not None:
            self.embedded.stop()

    # tenants, connections, jobs

    async def tenant(self, name: str, provider: Provider, shop: str = SHOP) -> uuid.UUID:
        assert self.rt is not None
        user = f"bench-{uuid.uuid4().hex[:8]}"
        async with self.rt.db.transaction(user_id=user) as uow:
            tenant = await tenancy.create_tenant(
                uow, Actor(user_id=user), name=name, timezone=None, max_owned=1_000_000
            )
        if provider is Provider.SQUARE:
            tokens = TokenSet(
                access_token=SQUARE_TOKEN,
                refresh_token=SQUARE_REFRESH,
                expires_at=datetime.now(UTC) + timedelta(days=20),
                account_id=MERCHANT,
            )
            config: dict[str, str] = {}
        else:
            tokens = TokenSet(access_token=SHOP_TOKEN, account_id=shop)
            config = {"shop": shop}
        async with self.rt.db.transaction(tenant_id=tenant.id) as uow:
            await connections.save_connection(
                uow, self.rt.vault.keyring, tenant.id, provider, tokens, config=config
            )
        return tenant.id

    async def enqueue(self, tenant: uuid.UUID, kind: str, provider: Provider) -> uuid.UUID:
        assert self.rt is not None
        async with self.rt.db.transaction(tenant_id=tenant) as uow:
            job = await djobs.create_job(
                uow, tenant, kind=f"{kind}_sync", dedupe_key=f"{kind}_sync:{provider.value}"
            )
        await self.rt.queue.enqueue(
            f"sync_{kind}", str(tenant), str(job.id), [provider.value], job_id=f"sync:{job.id}"
        )
        return job.id

    async def wait(self, tenant: uuid.UUID, job_id: uuid.UUID, worker: Worker) -> Any:
        assert self.rt is not None
        j = t.jobs.c
        deadline = time.monotonic() + JOB_DEADLINE_SECONDS
        while True:
            async with self.rt.db.transaction(tenant_id=tenant) as uow:
                row = (
                    await uow.connection.execute(
                        select(j.status, j.started_at, j.finished_at, j.result, j.error).where(j.id == job_id)
                    )
                ).one()
            if row.status == "COMPLETED":
                return row
            if row.status in ("FAILED", "CANCELLED"):
                raise RuntimeError(f"job {job_id} {row.status}: {row.error}\n{worker.tail()}")
            if not worker.alive():
                raise RuntimeError(f"the worker exited\n{worker.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not done after {JOB_DEADLINE_SECONDS:.0f} s")
            await asyncio.sleep(SAMPLE_SECONDS)

    async def counts(self, tenant: uuid.UUID) -> dict[str, int]:
        assert self.rt is not None
        found = {}
        async with self.rt.db.transaction(tenant_id=tenant) as uow:
            for name, table in (
                ("appointments", t.appointments),
                ("sources", t.appointment_sources),
                ("contacts", t.contacts),
                ("inventory", t.inventory_items),
            ):
                found[name] = int(await uow.connection.scalar(select(func.count()).select_from(table)) or 0)
        return found

    # measured runs

    def start_worker(self) -> Worker:
        self._workers += 1
        return Worker({**os.environ, **self.env}, self.tmp / f"worker-{self._workers}.log")

    async def measure(
        self,
        label: str,
        records: int,
        worker: Worker,
        tenant: uuid.UUID,
        kind: str,
        provider: Provider,
        profile: bool,
    ) -> Measured:
        pid = worker.pid
        profiler = None
        if profile:
            path = Path(self.args.profile) / (re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") + ".txt")
            profiler = await asyncio.to_thread(Profiler, pid, path)
            self.profiles.append((label, path))
        if self.args.wait_quiet:
            await asyncio.to_thread(wait_quiet, self.args.wait_quiet)
        pg = postgres_pids(self.postmaster)
        machine_before = machine_busy_seconds()
        cpu_before = cpu_seconds([pid, os.getpid(), *pg])
        hwm_reset = reset_hwm(pid)
        sampler = RssSampler(pid)
        rss_before = rss_bytes(pid)
        sampler.start()
        started = time.monotonic()
        job_id = await self.enqueue(tenant, kind, provider)
        row = await self.wait(tenant, job_id, worker)
        e2e = time.monotonic() - started
        sampler.stop()
        hwm = hwm_bytes(pid) if hwm_reset else None
        cpu_after = cpu_seconds([pid, os.getpid(), *postgres_pids(self.postmaster)])
        machine = machine_busy_seconds() - machine_before
        rss_after = rss_bytes(pid)
        if profiler is not None:
            await asyncio.to_thread(profiler.stop)

        def delta(pids: list[int]) -> float:
            return sum(cpu_after[p] - cpu_before.get(p, 0.0) for p in pids if p in cpu_after)

        cpu = {
            "worker": delta([pid]),
            "fakes": delta([os.getpid()]),
            "postgres": delta([p for p in cpu_after if p not in (pid, os.getpid())]),
        }
        # Everything else the machine did meanwhile (other people's processes on a shared machine).
        cpu["other"] = max(0.0, machine - sum(cpu.values()))
        stats = (row.result or {}).get("providers", {}).get(provider.value, {})
        measured = Measured(
            label=label,
            records=records,
            stats=stats,
            job_seconds=(row.finished_at - row.started_at).total_seconds(),
            e2e_seconds=e2e,
            rss_before=rss_before,
            rss_peak=max(sampler.peak, rss_after),
            rss_after=rss_after,
            hwm=hwm,
            cpu=cpu if psutil is not None else {},
            counts=await self.counts(tenant),
        )
        self.results.append(measured)
        print(line(measured), flush=True)
        return measured

    async def warm_up(self, worker: Worker, kind: str, provider: Provider) -> None:
        tenant = await self.tenant("Warm-up", provider, shop=WARM_SHOP)
        job_id = await self.enqueue(tenant, kind, provider)
        await self.wait(tenant, job_id, worker)

    async def calendar(self, n: int, *, rerun: bool, profile: bool) -> None:
        self.square.reset()
        self.square.seed_bookings(WARM_RECORDS, self.seed_start, days=SEED_DAYS, customers=20)
        worker = self.start_worker()
        try:
            await self.warm_up(worker, "calendar", Provider.SQUARE)
            self.square.reset()  # the same seed again gives the same ids, customers and times
            self.square.seed_bookings(n, self.seed_start, days=SEED_DAYS, customers=self.args.customers)
            tenant = await self.tenant(f"Calendar {n}", Provider.SQUARE)
            first = await self.measure(
                f"calendar Square {n:,}", n, worker, tenant, "calendar", Provider.SQUARE, profile
            )
            if rerun:
                # Right after the import PostgreSQL's statistics still describe the tables before it
                # (autovacuum analyzes them within a minute or so); then again once they are current.
                for label in ("again", "again, after ANALYZE"):
                    if label != "again":
                        await self.analyze()
                    again = await self.measure(
                        f"calendar Square {n:,} {label}",
                        n,
                        worker,
                        tenant,
                        "calendar",
                        Provider.SQUARE,
                        profile,
                    )
                    print(f"    {label}: {rerun_verdict(first, again)}", flush=True)
        finally:
            await asyncio.to_thread(worker.stop)

    async def square_inventory(self, n: int, *, profile: bool) -> None:
        self.square.reset()
        self.square.seed_catalog(WARM_RECORDS)
        worker = self.start_worker()
        try:
            await self.warm_up(worker, "inventory", Provider.SQUARE)
            self.square.reset()
            self.square.seed_catalog(n)
            tenant = await self.tenant(f"Square inventory {n}", Provider.SQUARE)
            await self.measure(
                f"inventory Square {n:,}", n, worker, tenant, "inventory", Provider.SQUARE, profile
            )
        finally:
            await asyncio.to_thread(worker.stop)

    async def shopify_inventory(self, n: int, *, profile: bool) -> None:
        self.shopify.add_shop(generate_shop(WARM_SHOP, variants=WARM_RECORDS, access_token=SHOP_TOKEN))
        self.shopify.add_shop(generate_shop(SHOP, variants=n, access_token=SHOP_TOKEN, seed=1))
        worker = self.start_worker()
        try:
            await self.warm_up(worker, "inventory", Provider.SHOPIFY)
            tenant = await self.tenant(f"Shopify inventory {n}", Provider.SHOPIFY)
            await self.measure(
                f"inventory Shopify {n:,}", n, worker, tenant, "inventory", Provider.SHOPIFY, profile
            )
        finally:
            await asyncio.to_thread(worker.stop)
            self.shopify.reset()


def rerun_verdict(first: Measured, again: Measured) -> str:
    problems = [
        f"{key} {again.stats.get(key)}"
        for key in ("created", "matched", "contactsCreated")
        if again.stats.get(key)
    ]
    problems += [
        f"{key} {first.counts[key]} -> {again.counts[key]}"
        for key in ("appointments", "sources", "contacts")
        if first.counts[key] != again.counts[key]
    ]
    return "OK, created nothing" if not problems else "FAILED: " + ", ".join(problems)


def line(m: Measured) -> str:
    s = m.stats
    hwm = f"{m.hwm / MB:6.1f}" if m.hwm is not None else "     -"
    cpu = "  ".join(f"{k} {v:5.2f}" for k, v in m.cpu.items())
    return (
        f"{m.label:43s} {m.fetched:6d} {s.get('created', 0):6d} {s.get('updated', 0):6d} "
        f"{s.get('skipped', 0):5d} {s.get('contactsCreated', 0):5d} {s.get('pages', 0):4d} "
        f"{m.job_seconds:6.2f} {m.rate:7.0f} {m.e2e_seconds:6.2f} {m.fetched / m.e2e_seconds:7.0f} "
        f"{m.rss_before / MB:6.1f} {m.rss_peak / MB:6.1f} {m.growth / MB:+6.1f} {hwm}  {cpu}"
    )


HEADER = (
    f"{'run':43s} {'fetch':>6s} {'create':>6s} {'update':>6s} {'skip':>5s} {'cont.':>5s} {'pages':>4s} "
    f"{'job s':>6s} {'rec/s':>7s} {'e2e s':>6s} {'rec/s':>7s} "
    f"{'RSS0':>6s} {'peak':>6s} {'grow':>6s} {'HWM':>6s}  CPU s during the job"
)


def flatness(small: Measured | None, large: Measured | None, what: str) -> str | None:
    if small is None or large is None:
        return None
    extra = (large.growth - small.growth) / MB
    per_k = extra / max(1, (large.fetched - small.fetched) / 1000)
    flat = per_k < FLAT_MB_PER_1000
    return (
        f"{what}: peak growth {small.growth / MB:.1f} MB at {small.fetched:,}, "
        f"{large.growth / MB:.1f} MB at {large.fetched:,}: {extra:+.1f} MB ({per_k:+.2f} MB per 1,000) "
        f"-> {'flat' if flat else 'NOT flat'} (flat: < {FLAT_MB_PER_1000} MB per 1,000)"
    )


async def run(args: argparse.Namespace) -> int:
    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}
    tmp = Path(tempfile.mkdtemp(prefix="brandvx-bench-sync-"))
    bench = Bench(args, tmp)
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f}, Python {sys.version.split()[0]}, "
        f"RSS via {'psutil' if psutil is not None else '/proc'}, worker logs in {tmp}"
    )
    try:
        await bench.setup()
        if args.statements:
            await bench.statements(args.appointments)
            return 0
        print(HEADER, flush=True)
        by_label: dict[str, Measured] = {}
        plan: list[tuple[str, Callable[..., Any], int, dict[str, Any]]] = []
        if "calendar" in kinds:
            plan += [
                ("calendar", bench.calendar, args.small_appointments, {"rerun": False}),
                ("calendar", bench.calendar, args.appointments, {"rerun": True}),
            ]
        if "square" in kinds:
            plan += [("square", bench.square_inventory, n, {}) for n in (args.small_items, args.items)]
        if "shopify" in kinds:
            plan += [("shopify", bench.shopify_inventory, n, {}) for n in (args.small_items, args.items)]
        for index, (_, method, n, extra) in enumerate(plan):
            large = index % 2 == 1
            if args.profile and not large:
                continue
            await method(n, profile=bool(args.profile) and large, **extra)
        for m in bench.results:
            by_label[m.label] = m
    finally:
        await bench.close()

    print()
    calendar = by_label.get(f"calendar Square {args.appointments:,}")
    if calendar is not None:
        verdict = "MEETS" if calendar.rate >= TARGET_PER_SECOND else "MISSES"
        cpu = calendar.cpu
        busy = f"; worker CPU {100 * cpu['worker'] / calendar.job_seconds:.0f} % of the job" if cpu else ""
        print(
            f"calendar: {calendar.rate:,.0f} appointments/s per worker over the job "
            f"({calendar.fetched / calendar.e2e_seconds:,.0f}/s end to end) -> {verdict} the target of "
            f"{TARGET_PER_SECOND:,.0f}/s{busy}"
        )
    for label in ("again", "again, after ANALYZE"):
        again = by_label.get(f"calendar Square {args.appointments:,} {label}")
        if again is not None:
            print(f"calendar, {label} (updates only): {again.rate:,.0f} appointments/s")
    for what, small, large in (
        (
            "calendar memory",
            by_label.get(f"calendar Square {args.small_appointments:,}"),
            calendar,
        ),
        (
            "Square inventory memory",
            by_label.get(f"inventory Square {args.small_items:,}"),
            by_label.get(f"inventory Square {args.items:,}"),
        ),
        (
            "Shopify inventory memory",
            by_label.get(f"inventory Shopify {args.small_items:,}"),
            by_label.get(f"inventory Shopify {args.items:,}"),
        ),
    ):
        text = flatness(small, large, what)
        if text:
            print(text)
    for label, path in bench.profiles:
        print(f"\nprofile of {label} ({path}):")
        print(summarize_profile(path))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--appointments", type=int, default=10_000)
    parser.add_argument("--small-appointments", type=int, default=2_000)
    parser.add_argument("--items", type=int, default=10_000)
    # Not 1,000: that is a single Shopify page (1,250 variants), while the heap settles over the
    # first few pages; 5,000 (the size) against 10,000 measures growth with the records.
    parser.add_argument("--small-items", type=int, default=5_000)
    parser.add_argument("--customers", type=int, default=500, help="distinct customers of the bookings")
    parser.add_argument("--kinds", default="calendar,square,shopify")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        help="before each measured job, wait up to N s for an idle machine",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="instead: run the large calendar sync in this process and time its SQL statements",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy the large runs (perturbs their figures)")
    args = parser.parse_args()
    for name, cap in (
        ("appointments", 50_000),
        ("small_appointments", 50_000),
        ("items", 20_000),
        ("small_items", 20_000),
        ("customers", 10_000),
        ("wait_quiet", 300),
    ):
        setattr(args, name, max(0 if name == "wait_quiet" else 1, min(getattr(args, name), cap)))
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
