"""The unit of work: one connection and one transaction, opened on first use, committed once.

A GraphQL request, an HTTP route and a job step each get one ``SqlUnit``. Everything that runs in
it joins the same transaction: sibling resolvers and DataLoaders of a query (Strawberry runs them
concurrently, so access is serialized by a lock), the authentication lookup, and the writes of one
mutation field. The tenant scope is set once, when the transaction opens.

Side effects wait for the commit: ``after_commit`` callbacks (events, cache invalidation,
analytics, the outbox's fast relay) run only once the transaction has committed, never after a
rollback. An exception that passes through ``join`` dooms the unit: it will roll back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from domain.model import Actor

if TYPE_CHECKING:
    from persistence.db import SqlUnitOfWork

log = logging.getLogger("brandvx.unit_of_work")

AfterCommit = Callable[[], Awaitable[None]]

# One statement sets every scope variable, transaction-local (`true`): a pooled connection never
# carries one request's tenant into the next transaction.
_SCOPE_SQL = text(
    "SELECT set_config('app.tenant_id', :tenant_id, true), set_config('app.user_id', :user_id, true), "
    "set_config('app.role', :role, true), set_config('app.api_key_hash', :key_hash, true)"
)


@dataclass(frozen=True)
class Scope:
    """What row-level security sees: the tenant, the user, their role, or an API key's hash."""

    tenant_id: uuid.UUID | None = None
    user_id: str | None = None
    role: str | None = None
    api_key_hash: bytes | None = None

    @classmethod
    def of(cls, actor: Actor) -> Scope:
        return cls(
            tenant_id=actor.tenant_id, user_id=actor.user_id, role=actor.role.value if actor.role else None
        )

    def params(self) -> dict[str, str]:
        return {
            "tenant_id": str(self.tenant_id) if self.tenant_id else "",
            "user_id": self.user_id or "",
            "role": self.role or "",
            "key_hash": self.api_key_hash.hex() if self.api_key_hash else "",
        }


@dataclass
class SqlUnit:
    """One lazily opened transaction shared by everything of one request (or job step)."""

    engine: AsyncEngine
    scope: Scope
    make_view: Callable[[AsyncConnection, SqlUnit], SqlUnitOfWork]
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _owner: asyncio.Task[object] | None = field(default=None, repr=False)
    _conn: AsyncConnection | None = field(default=None, repr=False)
    _tx: AsyncTransaction | None = field(default=None, repr=False)
    _view: SqlUnitOfWork | None = field(default=None, repr=False)
    _after: list[AfterCommit] = field(default_factory=list, repr=False)
    doomed: bool = False
    transactions: int = 0  # how many transactions this unit has opened (tests and benchmarks read it)

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @asynccontextmanager
    async def join(self) -> AsyncIterator[SqlUnitOfWork]:
        """The shared transaction, opened now if it is not yet; serialized with its other users."""
        task = asyncio.current_task()
        if task is not None and self._owner is task:  # nested use in the same task: already held
            assert self._view is not None
            yield self._view
            return
        async with self._lock:
            self._owner = task
            try:
                if self._view is None:
                    await self._open()
                assert self._view is not None
                yield self._view
            except BaseException:
                self.doomed = True
                raise
            finally:
                self._owner = None

    async def _open(self) -> None:
        """A pooled connection that died with its server (PostgreSQL restarted) fails the scope
        statement, the first of the transaction: SQLAlchemy then marks every older pooled connection
        stale, and the transaction starts again once on a new connection. (Cheaper than
        ``pool_pre_ping``, a round trip on every checkout.)"""
        for attempt in (1, 2):
            conn = await self.engine.connect()
            try:
                tx = await conn.begin()
                await conn.execute(_SCOPE_SQL, self.scope.params())
            except DBAPIError as exc:
                await conn.close()
                if exc.connection_invalidated and attempt == 1:
                    continue
                raise
            except BaseException:
                await conn.close()
                raise
            break
        self._conn, self._tx = conn, tx
        self._view = self.make_view(conn, self)
        self.transactions += 1

    async def rescope(self, scope: Scope) -> None:
        """Change who the unit acts as (after authentication); applied at once if it is open."""
        if scope == self.scope:
            return
        self.scope = scope
        if self._conn is not None:
            async with self._lock:
                if self._conn is not None:
                    await self._conn.execute(_SCOPE_SQL, scope.params())

    def after_commit(self, action: AfterCommit) -> None:
        self._after.append(action)

    async def finish(self, *, commit: bool = True) -> bool:
        """Commit (unless told not to or doomed) or roll back, release the connection, and run the
        after-commit actions if it committed. The unit can be used again: it opens a new transaction."""
        async with self._lock:
            conn, tx, actions = self._conn, self._tx, self._after
            commit = commit and not self.doomed
            self._conn = self._tx = self._view = None
            self._after, self.doomed = [], False
            if conn is None or tx is None:
                return False
            try:
                if commit:
                    await tx.commit()
                else:
                    try:
                        await tx.rollback()
                    except Exception:  # a dead connection: nothing to undo; keep the first error
                        log.debug("rollback failed", exc_info=True)
            finally:
                await conn.close()
        if commit:
            for action in actions:
                try:
                    await action()
                except Exception:
                    # The data is committed; a side effect that fails is logged (the outbox's relay
                    # loop retries what must not be lost).
                    log.exception("after-commit action failed")
        return commit

    async def close(self) -> None:
        """Roll back whatever is still open (an error path that never reached finish)."""
        await self.finish(commit=False)
