"""AskVX, usage, jobs and artifact queries. Inserts take the tenant from the transaction's scope."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, literal_column, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from domain.ai import Usage
from domain.model import (
    AiUsage,
    ChatMessage,
    ChatMessageStatus,
    ChatRole,
    ChatSession,
    Job,
    JobStatus,
    Plan,
    PlanTier,
    TrainvxMemory,
)
from domain.pagination import Cursor, Page, PageRequest
from persistence import tables as t
from persistence.paging import keyset_page

# The tenant of the current transaction (RLS's WITH CHECK holds inserts to it in any case).
SCOPED_TENANT: ColumnClause[Any] = literal_column("NULLIF(current_setting('app.tenant_id', true), '')::uuid")
THIS_MONTH: ColumnClause[Any] = literal_column("date_trunc('month', now() AT TIME ZONE 'UTC')::date")


def _session(row: Any) -> ChatSession:
    return ChatSession(id=row.id, tenant_id=row.tenant_id, title=row.title, created_at=row.created_at)


def _message(row: Any) -> ChatMessage:
    return ChatMessage(
        id=row.id,
        tenant_id=row.tenant_id,
        session_id=row.session_id,
        role=ChatRole(row.role),
        content=row.content,
        status=ChatMessageStatus(row.status),
        error=row.error,
        created_at=row.created_at,
    )


_MESSAGE_COLUMNS = (
    t.askvx_messages.c.id,
    t.askvx_messages.c.tenant_id,
    t.askvx_messages.c.session_id,
    t.askvx_messages.c.role,
    t.askvx_messages.c.content,
    t.askvx_messages.c.status,
    t.askvx_messages.c.error,
    t.askvx_messages.c.created_at,
)


class ChatRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add_session(
        self, session_id: uuid.UUID, *, tenant_id: uuid.UUID, user_id: str, title: str
    ) -> ChatSession:
        row = (
            await self._conn.execute(
                insert(t.askvx_sessions)
                .values(
                    id=session_id,
                    tenant_id=tenant_id,
                    user_id=user_id,
                    title=title,
                    created_at=func.now(),
                    updated_at=func.now(),
                )
                .returning(t.askvx_sessions)
            )
        ).one()
        return _session(row)

    async def touch_session(self, session_id: uuid.UUID) -> bool:
        """Mark the session active now; False when it does not exist (in this tenant)."""
        result = await self._conn.execute(
            update(t.askvx_sessions)
            .where(t.askvx_sessions.c.id == session_id)
            .values(updated_at=func.now())
            .returning(t.askvx_sessions.c.id)
        )
        return result.first() is not None

    async def session(self, session_id: uuid.UUID) -> ChatSession | None:
        row = (
            await self._conn.execute(select(t.askvx_sessions).where(t.askvx_sessions.c.id == session_id))
        ).first()
        return _session(row) if row else None

    async def sessions(self, page: PageRequest) -> Page[ChatSession]:
        c = t.askvx_sessions.c
        return await keyset_page(
            self._conn,
            select(t.askvx_sessions),
            page,
            sort=c.created_at,
            ident=c.id,
            descending=True,
            item=_session,
            cursor_key=lambda r: r.created_at,
        )

    async def add_message(
        self,
        message_id: uuid.UUID,
        *,
        session_id: uuid.UUID,
        role: ChatRole,
        content: str,
        status: ChatMessageStatus,
    ) -> ChatMessage:
        row = (
            await self._conn.execute(
                insert(t.askvx_messages)
                .values(
                    id=message_id,
                    tenant_id=SCOPED_TENANT,
                    session_id=session_id,
                    role=role.value,
                    content=content,
                    status=status.value,
                    # clock_timestamp: a question and its reply, written in one transaction, keep their order.
                    created_at=func.clock_timestamp(),
                )
                .returning(*_MESSAGE_COLUMNS)
            )
        ).one()
        return _message(row)

    async def message(self, message_id: uuid.UUID) -> ChatMessage | None:
        row = (
            await self._conn.execute(select(*_MESSAGE_COLUMNS).where(t.askvx_messages.c.id == message_id))
        ).first()
        return _message(row) if row else None

    async def messages_pages(
        self, session_ids: Sequence[uuid.UUID], page: PageRequest
    ) -> dict[uuid.UUID, Page[ChatMessage]]:
        """Oldest first, per session, for many sessions in one statement."""
        c = t.askvx_messages.c
        condition: ColumnElement[bool] = c.session_id.in_(session_ids)
        if page.after is not None:
            condition = and_(
                condition, tuple_(c.created_at, c.id) > tuple_(page.after.sort_key, page.after.id)
            )
        numbered = (
            select(
                *_MESSAGE_COLUMNS,
                func.row_number().over(partition_by=c.session_id, order_by=(c.created_at, c.id)).label("n"),
            )
            .where(condition)
            .subquery()
        )
        rows = (
            await self._conn.execute(
                select(numbered)
                .where(numbered.c.n <= page.first + 1)
                .order_by(numbered.c.session_id, numbered.c.n)
            )
        ).all()
        grouped: dict[uuid.UUID, list[ChatMessage]] = {sid: [] for sid in session_ids}
        for row in rows:
            grouped[row.session_id].append(_message(row))
        return {
            sid: Page(
                items=msgs[: page.first],
                cursors=[Cursor(m.created_at, m.id) for m in msgs[: page.first]],
                has_next=len(msgs) > page.first,
                has_previous=page.after is not None,
            )
            for sid, msgs in grouped.items()
        }

    async def recent_turns(self, session_id: uuid.UUID, *, before: datetime, limit: int) -> list[ChatMessage]:
        c = t.askvx_messages.c
        rows = (
            await self._conn.execute(
                select(*_MESSAGE_COLUMNS)
                .where(c.session_id == session_id, c.created_at < before)
                .order_by(c.created_at.desc(), c.id.desc())
                .limit(limit)
            )
        ).all()
        return [_message(r) for r in reversed(rows)]

    async def complete(self, message_id: uuid.UUID, *, content: str, usage: Usage, model: str) -> None:
        await self._conn.execute(
            update(t.askvx_messages)
            .where(t.askvx_messages.c.id == message_id)
            .values(
                content=content,
                status=ChatMessageStatus.COMPLETE.value,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                model=model,
                completed_at=func.now(),
            )
        )

    async def fail(self, message_id: uuid.UUID, *, content: str, error: str) -> None:
        await self._conn.execute(
            update(t.askvx_messages)
            .where(t.askvx_messages.c.id == message_id)
            .values(
                content=content, status=ChatMessageStatus.FAILED.value, error=error, completed_at=func.now()
            )
        )

    async def fail_stale(self, *, older_than: datetime, error: str) -> int:
        result = await self._conn.execute(
            update(t.askvx_messages)
            .where(
                t.askvx_messages.c.status == ChatMessageStatus.STREAMING.value,
                t.askvx_messages.c.created_at < older_than,
            )
            .values(status=ChatMessageStatus.FAILED.value, error=error, completed_at=func.now())
        )
        return result.rowcount

    async def purge_before(self, cutoff: datetime, *, batch: int = 5000) -> int:
        """At most ``batch`` rows a call: the hourly cron catches up without one long statement."""
        m = t.askvx_messages.c
        oldest = (
            select(m.id).where(m.created_at < cutoff).order_by(m.created_at).limit(batch).scalar_subquery()
        )
        result = await self._conn.execute(delete(t.askvx_messages).where(m.id.in_(oldest)))
        return result.rowcount


class MemoryRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def trainvx(self) -> list[TrainvxMemory]:
        c = t.trainvx_memories.c
        rows = await self._conn.execute(select(c.id, c.key, c.value, c.updated_at).order_by(c.key))
        return [TrainvxMemory(id=r.id, key=r.key, value=r.value, updated_at=r.updated_at) for r in rows]

    async def upsert(self, key: str, value: str) -> TrainvxMemory:
        c = t.trainvx_memories.c
        stmt = pg_insert(t.trainvx_memories).values(
            id=uuid.uuid4(),
            tenant_id=SCOPED_TENANT,
            key=key,
            value=value,
            created_at=func.now(),
            updated_at=func.now(),
        )
        row = (
            await self._conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["tenant_id", "key"], set_={"value": value, "updated_at": func.now()}
                ).returning(c.id, c.key, c.value, c.updated_at)
            )
        ).one()
        return TrainvxMemory(id=row.id, key=row.key, value=row.value, updated_at=row.updated_at)

    async def delete(self, key: str) -> bool:
        result = await self._conn.execute(
            delete(t.trainvx_memories)
            .where(t.trainvx_memories.c.key == key)
            .returning(t.trainvx_memories.c.id)
        )
        return result.first() is not None

    async def summary(self) -> str:
        value = await self._conn.scalar(select(t.ai_memories.c.summary))
        return value or ""

    async def summary_for_update(self) -> str:
        """The summary, with the tenant's row locked until commit (created empty if missing), so
        concurrent replies each add their line instead of overwriting each other's."""
        m = t.ai_memories.c
        stmt = pg_insert(t.ai_memories).values(tenant_id=SCOPED_TENANT, summary="", updated_at=func.now())
        value = await self._conn.scalar(
            stmt.on_conflict_do_update(index_elements=["tenant_id"], set_={"summary": m.summary}).returning(
                m.summary
            )
        )
        return value or ""

    async def save_summary(self, summary: str) -> None:
        stmt = pg_insert(t.ai_memories).values(
            tenant_id=SCOPED_TENANT, summary=summary, updated_at=func.now()
        )
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["tenant_id"], set_={"summary": summary, "updated_at": func.now()}
            )
        )


def _plan(row: Any) -> Plan:
    return Plan(
        tier=PlanTier(row.tier),
        name=row.name,
        price_cents=row.price_cents,
        ai_tokens_monthly=row.ai_tokens_monthly,
        messages_monthly=row.messages_monthly,
    )


class UsageRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def _plan_of(self, tenant_id: uuid.UUID) -> Plan:
        row = (
            await self._conn.execute(
                select(t.plans)
                .join(t.tenants, t.tenants.c.plan_tier == t.plans.c.tier)
                .where(t.tenants.c.id == tenant_id)
            )
        ).one()
        return _plan(row)

    async def current(self, tenant_id: uuid.UUID) -> AiUsage:
        u = t.usage_limits.c
        row = (
            await self._conn.execute(
                select(u.ai_tokens_used, u.ai_messages_used).where(
                    u.tenant_id == tenant_id, u.period == THIS_MONTH
                )
            )
        ).first()
        plan = await self._plan_of(tenant_id)
        return AiUsage(
            plan=plan,
            tokens_used=row.ai_tokens_used if row else 0,
            messages_used=row.ai_messages_used if row else 0,
        )

    async def count_message(self, tenant_id: uuid.UUID) -> AiUsage:
        """Add one message to this month's count (row-locked, so concurrent sends count right)."""
        u = t.usage_limits.c
        stmt = pg_insert(t.usage_limits).values(
            tenant_id=tenant_id,
            period=THIS_MONTH,
            ai_tokens_used=0,
            ai_messages_used=1,
            updated_at=func.now(),
        )
        row = (
            await self._conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["tenant_id", "period"],
                    set_={"ai_messages_used": u.ai_messages_used + 1, "updated_at": func.now()},
                ).returning(u.ai_tokens_used, u.ai_messages_used)
            )
        ).one()
        return AiUsage(
            plan=await self._plan_of(tenant_id),
            tokens_used=row.ai_tokens_used,
            messages_used=row.ai_messages_used,
        )

    async def add_tokens(self, tenant_id: uuid.UUID, tokens: int) -> None:
        u = t.usage_limits.c
        stmt = pg_insert(t.usage_limits).values(
            tenant_id=tenant_id,
            period=THIS_MONTH,
            ai_tokens_used=tokens,
            ai_messages_used=0,
            updated_at=func.now(),
        )
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["tenant_id", "period"],
                set_={"ai_tokens_used": u.ai_tokens_used + tokens, "updated_at": func.now()},
            )
        )

    async def plans(self) -> list[Plan]:
        rows = await self._conn.execute(select(t.plans).order_by(t.plans.c.price_cents))
        return [_plan(r) for r in rows]


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        tenant_id=row.tenant_id,
        kind=row.kind,
        status=JobStatus(row.status),
        progress=row.progress,
        message=row.message,
        result=row.result,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        cancel_requested=row.cancel_requested,
        attempts=row.attempts,
    )


class JobRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        job_id: uuid.UUID,
        *,
        tenant_id: uuid.UUID,
        kind: str,
        dedupe_key: str | None,
        args: dict[str, Any] | None = None,
    ) -> Job:
        """A new PENDING job; with a dedupe key, the active job of that key if one exists (even one a
        concurrent transaction is creating: the insert waits for it and then yields to it)."""
        row = (
            await self._conn.execute(
                pg_insert(t.jobs)
                .values(
                    id=job_id,
                    tenant_id=tenant_id,
                    kind=kind,
                    status=JobStatus.PENDING.value,
                    progress=0,
                    dedupe_key=dedupe_key,
                    cancel_requested=False,
                    attempts=0,
                    args=args or {},
                    created_at=func.now(),
                    updated_at=func.now(),
                )
                .on_conflict_do_nothing(
                    index_elements=["tenant_id", "dedupe_key"],
                    # Literally the partial index's predicate, so PostgreSQL can infer the index.
                    index_where=text("dedupe_key IS NOT NULL AND status IN ('PENDING','RUNNING')"),
                )
                .returning(t.jobs)
            )
        ).first()
        if row is None and dedupe_key is not None:
            existing = await self.active_with_key(dedupe_key)
            if existing is not None:
                return existing
        if row is None:
            raise RuntimeError("job insert returned nothing")
        return _job(row)

    async def get(self, job_id: uuid.UUID) -> Job | None:
        row = (await self._conn.execute(select(t.jobs).where(t.jobs.c.id == job_id))).first()
        return _job(row) if row else None

    async def args_of(self, job_id: uuid.UUID) -> dict[str, Any]:
        """What the job was created with besides its tenant and id (``create_job``'s ``args``)."""
        value = await self._conn.scalar(select(t.jobs.c.args).where(t.jobs.c.id == job_id))
        return dict(value) if isinstance(value, dict) else {}

    async def active_with_key(self, dedupe_key: str) -> Job | None:
        row = (
            await self._conn.execute(
                select(t.jobs).where(
                    t.jobs.c.dedupe_key == dedupe_key,
                    t.jobs.c.status.in_([JobStatus.PENDING.value, JobStatus.RUNNING.value]),
                )
            )
        ).first()
        return _job(row) if row else None

    async def update(
        self,
        job_id: uuid.UUID,
        *,
        status: JobStatus | None = None,
        progress: float | None = None,
        message: str | None = None,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> Job | None:
        values: dict[str, Any] = {"updated_at": func.now()}
        if status is not None:
            values["status"] = status.value
            if status is JobStatus.RUNNING:
                values["started_at"] = func.coalesce(t.jobs.c.started_at, func.now())
                values["attempts"] = t.jobs.c.attempts + 1
                values["heartbeat_at"] = func.now()
            if status.finished:
                values["finished_at"] = func.now()
        for name, value in (
            ("progress", progress),
            ("message", message),
            ("result", result),
            ("error", error),
        ):
            if value is not None:
                values[name] = value
        row = (
            await self._conn.execute(
                update(t.jobs).where(t.jobs.c.id == job_id).values(**values).returning(t.jobs)
            )
        ).first()
        return _job(row) if row else None

    async def request_cancel(self, job_id: uuid.UUID) -> Job | None:
        """PENDING becomes CANCELLED now; RUNNING is flagged and stops at its next checkpoint."""
        j = t.jobs.c
        row = (
            await self._conn.execute(
                update(t.jobs)
                .where(j.id == job_id, j.status.in_([JobStatus.PENDING.value, JobStatus.RUNNING.value]))
                .values(
                    cancel_requested=True,
                    status=case(
                        (j.status == JobStatus.PENDING.value, JobStatus.CANCELLED.value), else_=j.status
                    ),
                    finished_at=case((j.status == JobStatus.PENDING.value, func.now()), else_=j.finished_at),
                    message=case((j.status == JobStatus.PENDING.value, "Cancelled"), else_="Cancelling"),
                    updated_at=func.now(),
                )
                .returning(t.jobs)
            )
        ).first()
        return _job(row) if row else None

    async def fail_stuck(self, kind_limits: dict[str, timedelta], default: timedelta) -> int:
        """RUNNING longer than its kind allows without an update: FAILED, with the reason."""
        j = t.jobs.c
        total = 0
        for kind, limit in [*kind_limits.items(), ("*", default)]:
            condition = j.kind.notin_(list(kind_limits)) if kind == "*" else j.kind == kind
            result = await self._conn.execute(
                update(t.jobs)
                .where(
                    condition,
                    j.status == JobStatus.RUNNING.value,
                    j.updated_at < func.now() - limit,
                )
                .values(
                    status=JobStatus.FAILED.value,
                    error=f"Stopped: no progress for {int(limit.total_seconds() // 60)} minutes",
                    message="Failed",
                    finished_at=func.now(),
                    updated_at=func.now(),
                )
            )
            total += result.rowcount
        return total

    async def page(self, page: PageRequest) -> Page[Job]:
        j = t.jobs.c
        return await keyset_page(
            self._conn,
            select(t.jobs),
            page,
            sort=j.created_at,
            ident=j.id,
            descending=True,
            item=_job,
            cursor_key=lambda r: r.created_at,
        )


class ArtifactRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self, *, tenant_id: uuid.UUID, kind: str, content: str, job_id: uuid.UUID | None
    ) -> uuid.UUID:
        artifact_id = uuid.uuid4()
        await self._conn.execute(
            insert(t.onboarding_artifacts).values(
                id=artifact_id,
                tenant_id=tenant_id,
                kind=kind,
                content=content,
                job_id=job_id,
                created_at=func.now(),
            )
        )
        return artifact_id


async def tenant_ids(conn: AsyncConnection) -> list[uuid.UUID]:
    """Every tenant's id, for cron jobs that then visit each tenant in its own scope."""
    return list((await conn.scalars(select(t.tenant_directory.c.id).order_by(t.tenant_directory.c.id))).all())
