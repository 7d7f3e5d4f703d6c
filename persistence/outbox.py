"""The transactional outbox: work that must not be lost, written in the same transaction as its data.

A job enqueue (later: a message send, an outbound webhook) is an ``outbox`` row inserted by the
unit of work that made the data. Nothing reaches ARQ unless that transaction commits, and nothing
committed is lost if the process dies before handing it on:

* the fast path: right after the commit, the writing process enqueues its own rows and marks them
  relayed (an AskVX reply still starts at once);
* the relay loop (``OutboxRelay.run``, in every worker): claims due rows with ``FOR UPDATE SKIP
  LOCKED``, enqueues them, retries a failure with exponential backoff, and moves a row that keeps
  failing to ``dead_letters`` with the reason. Rows the fast path is about to relay become due only
  after a grace period, so the two rarely meet.

Each row names the ARQ queue of the deployment that wrote it, and a relay claims only its own
queue's rows: deployments (or test stacks) that share a database but not a Redis namespace never
run each other's work.

Every enqueue uses the row's idempotency key as ARQ's ``_job_id``: a row relayed twice (fast path
and loop, or a relay that died after enqueueing but before marking) is queued once.

The outbox is a platform table, not a tenant table: the relay reads every tenant's rows, and the
runtime role has no way around row-level security (nor should it). Its rows hold only a function
name and ids (tenant, job, provider names), never contact details or message text, so there is
nothing one tenant could learn about another from it; the API never exposes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.jobs import JobQueue

if TYPE_CHECKING:
    from persistence.unit_of_work import SqlUnit

log = logging.getLogger("brandvx.outbox")

FAST_PATH_GRACE_SECONDS = 30.0  # the relay loop leaves a fresh row to its writer this long
MAX_ATTEMPTS = 8  # then the row is a dead letter (about 4 minutes of backoff in all)
BASE_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 300.0
RETENTION_DAYS = 7  # relayed rows are kept this long: their keys still dedupe a late repeat
BATCH = 100

_INSERT = text(
    "INSERT INTO outbox (queue, kind, payload, idempotency_key, available_at) "
    "VALUES (:queue, :kind, CAST(:payload AS jsonb), :key, now() + make_interval(secs => :grace)) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)
_CLAIM = text(
    "SELECT id, kind, payload, idempotency_key, attempts FROM outbox "
    "WHERE queue = :queue AND relayed_at IS NULL AND available_at <= now() + make_interval(secs => :ahead) "
    "ORDER BY available_at, id LIMIT :batch FOR UPDATE SKIP LOCKED"
)
_RELAYED = text(
    "UPDATE outbox SET relayed_at = now(), attempts = attempts + 1 "
    "WHERE id = ANY(:ids) AND relayed_at IS NULL"
)
_RETRY = text(
    "UPDATE outbox SET attempts = :attempts, last_error = :error, "
    "available_at = now() + make_interval(secs => :delay) WHERE id = :id"
)
_DEAD = text(
    "WITH moved AS (DELETE FROM outbox WHERE id = :id "
    "RETURNING id, kind, payload, idempotency_key, created_at) "
    "INSERT INTO dead_letters (outbox_id, kind, payload, idempotency_key, attempts, reason, created_at) "
    "SELECT id, kind, payload, idempotency_key, :attempts, :reason, created_at FROM moved"
)
_PURGE = text("DELETE FROM outbox WHERE relayed_at < now() - make_interval(days => :days)")


@dataclass(frozen=True)
class OutboxItem:
    id: int
    kind: str  # the ARQ function
    args: list[Any]  # ids only
    key: str  # idempotency key, ARQ's job id
    attempts: int = 0


class OutboxRepo:
    """Writes outbox rows in the unit's transaction; with a relay, hands them on after its commit."""

    def __init__(
        self, conn: AsyncConnection, unit: SqlUnit, relay: OutboxRelay | None, *, queue_name: str = ""
    ) -> None:
        self._conn = conn
        self._queue_name = relay.queue_name if relay is not None else queue_name
        self._unit = unit
        self._relay = relay
        self._pending: list[OutboxItem] = []

    async def enqueue_job(self, function: str, *args: Any, key: str) -> bool:
        """Queue ``function(*args)`` once this transaction commits; False when ``key`` was queued before."""
        grace = FAST_PATH_GRACE_SECONDS if self._relay is not None else 0.0
        payload = orjson.dumps({"args": list(args)}).decode()
        row_id = (
            await self._conn.execute(
                _INSERT,
                {"queue": self._queue_name, "kind": function, "payload": payload, "key": key, "grace": grace},
            )
        ).scalar_one_or_none()
        if row_id is None:
            return False
        if self._relay is not None:
            if not self._pending:
                self._unit.after_commit(self._relay_pending)
            self._pending.append(OutboxItem(row_id, function, list(args), key))
        return True

    async def _relay_pending(self) -> None:
        assert self._relay is not None
        items, self._pending = self._pending, []
        await self._relay.relay_now(items)


def backoff(attempts: int) -> float:
    return float(min(MAX_DELAY_SECONDS, BASE_DELAY_SECONDS * 2 ** max(0, attempts - 1)))


class OutboxRelay:
    def __init__(
        self, engine: AsyncEngine, queue: JobQueue, *, queue_name: str, max_attempts: int = MAX_ATTEMPTS
    ) -> None:
        self.queue_name = queue_name  # rows of this ARQ queue only
        self._engine = engine
        self._queue = queue
        self._max_attempts = max_attempts

    async def relay_now(self, items: Sequence[OutboxItem]) -> None:
        """The fast path: enqueue freshly committed rows and mark them; a failure is left to the loop."""
        done: list[int] = []
        for item in items:
            try:
                await self._queue.enqueue(item.kind, *item.args, job_id=item.key)
            except Exception as exc:
                log.warning(
                    "outbox %s not relayed yet (%s); the relay loop retries", item.id, type(exc).__name__
                )
                continue
            done.append(item.id)
        if done:
            async with self._engine.begin() as conn:
                await conn.execute(_RELAYED, {"ids": done})

    async def relay_once(self, *, ahead_seconds: float = 0.0, batch: int = BATCH) -> int:
        """Claim due rows (plus those due within ``ahead_seconds``) and relay them; returns how many
        were claimed. Concurrent relays claim disjoint rows."""
        async with self._engine.connect() as conn, conn.begin():
            rows = (
                await conn.execute(_CLAIM, {"queue": self.queue_name, "ahead": ahead_seconds, "batch": batch})
            ).all()
            relayed: list[int] = []
            for row in rows:
                item = OutboxItem(
                    row.id, row.kind, list(row.payload.get("args", [])), row.idempotency_key, row.attempts
                )
                try:
                    await self._queue.enqueue(item.kind, *item.args, job_id=item.key)
                except Exception as exc:
                    await self._failed(conn, item, f"enqueue failed: {type(exc).__name__}")
                    continue
                relayed.append(item.id)
            if relayed:
                await conn.execute(_RELAYED, {"ids": relayed})
        return len(rows)

    async def _failed(self, conn: AsyncConnection, item: OutboxItem, reason: str) -> None:
        attempts = item.attempts + 1
        if attempts >= self._max_attempts:
            log.error("outbox %s (%s) moved to dead_letters after %d attempts", item.id, item.kind, attempts)
            await conn.execute(_DEAD, {"id": item.id, "attempts": attempts, "reason": reason})
            return
        await conn.execute(
            _RETRY, {"id": item.id, "attempts": attempts, "error": reason, "delay": backoff(attempts)}
        )

    async def purge(self, *, days: int = RETENTION_DAYS) -> int:
        async with self._engine.begin() as conn:
            return int((await conn.execute(_PURGE, {"days": days})).rowcount)

    async def run(self, *, interval_seconds: float = 1.0) -> None:
        """The safety net: relay whatever is due, forever (cancel to stop)."""
        rounds = 0
        while True:
            try:
                claimed = await self.relay_once()
                if rounds % 3600 == 0:
                    await self.purge()
                rounds += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay round failed (%s)", type(exc).__name__)
                claimed = 0
            if claimed < BATCH:
                await asyncio.sleep(interval_seconds)


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    oldest_age_seconds: float
    dead_letters: int


async def outbox_stats(engine: AsyncEngine) -> OutboxStats:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM outbox WHERE relayed_at IS NULL) AS depth, "
                    "(SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox "
                    " WHERE relayed_at IS NULL) AS oldest, (SELECT count(*) FROM dead_letters) AS dead"
                )
            )
        ).one()
        await conn.rollback()
    return OutboxStats(int(row.depth), float(row.oldest), int(row.dead))


@dataclass(frozen=True)
class DeadLetter:
    id: int
    kind: str
    idempotency_key: str
    attempts: int
    reason: str
    created_at: datetime
    failed_at: datetime
    payload: dict[str, Any]


async def dead_letters(conn: AsyncConnection, *, limit: int = 100) -> list[DeadLetter]:
    rows = await conn.execute(
        text(
            "SELECT id, kind, idempotency_key, attempts, reason, created_at, failed_at, payload "
            "FROM dead_letters ORDER BY failed_at DESC, id DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [DeadLetter(*row) for row in rows]
