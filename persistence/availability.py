"""Telling "a server we depend on is unreachable" apart from bugs, and logging each outage once.

An outage of Redis or PostgreSQL makes every request fail the same way for a while: logging each
failure (with its traceback, and the server's address in the message) floods the log and tells
nothing new. An :class:`Outage` logs the first failure of a run of failures with an error id, counts
the rest, and logs once more when the server answers again (or has been quiet for a while).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Final, Literal

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger("brandvx.availability")

Dependency = Literal["redis", "database"]

RETRY_AFTER_SECONDS: Final = 5
# Failures further apart than this are separate outages (a quiet spell ends one without a success).
OUTAGE_GAP_SECONDS: Final = 30.0

# PostgreSQL SQLSTATEs of a server that is gone or going: connection exceptions (class 08), shutdown
# and crash recovery (57P01-57P03), and "cannot connect now" while it starts.
_PG_UNAVAILABLE_STATES: Final = ("08", "57P01", "57P02", "57P03")


def _pg_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.exceptions.InterfaceError):
        return "connection" in str(exc).lower()  # "connection is closed", "…another operation…" is not
    state = getattr(exc, "sqlstate", None)
    return (
        isinstance(exc, asyncpg.PostgresError)
        and isinstance(state, str)
        and state.startswith(_PG_UNAVAILABLE_STATES)
    )


def unavailable_dependency(exc: BaseException) -> Dependency | None:
    """Which server ``exc`` says is unreachable, or None when it is anything else (a bug, bad input)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RedisConnectionError | RedisTimeoutError):
            return "redis"
        if isinstance(current, DBAPIError) and (
            current.connection_invalidated or isinstance(current, InterfaceError | OperationalError)
        ):
            inner = current.orig
            if current.connection_invalidated or inner is None or _pg_unavailable(inner.__cause__ or inner):
                return "database"
        if _pg_unavailable(current):
            return "database"
        if isinstance(current, ConnectionError | TimeoutError) or (
            isinstance(current, OSError) and current.errno is not None
        ):
            # A socket error under a library call: the library's own error (checked above) names the
            # server; a bare one comes from opening a connection, which only the pools do.
            return _socket_owner(current)
        current = current.__cause__ or current.__context__
    return None


def _socket_owner(exc: BaseException) -> Dependency | None:
    """asyncpg and redis-py raise plain OSErrors while connecting; their frames say whose it was."""
    tb = exc.__traceback__
    owner: Dependency | None = None
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith(("asyncpg", "sqlalchemy")):
            owner = "database"
        elif module.startswith("redis"):
            owner = "redis"
        tb = tb.tb_next
    return owner


class Outage:
    """One dependency's failures, as this process sees them."""

    def __init__(self, dependency: Dependency) -> None:
        self.dependency = dependency
        self.error_id: str | None = None
        self.started = 0.0
        self.last_failure = 0.0
        self.failures = 0
        self._lock = threading.Lock()  # API processes may run an inline worker on another loop

    @property
    def active(self) -> bool:
        return self.error_id is not None and time.monotonic() - self.last_failure < OUTAGE_GAP_SECONDS

    def failed(self, exc: BaseException) -> str:
        """Record a failure; returns the outage's error id (the same for every failure of one outage)."""
        now = time.monotonic()
        with self._lock:
            if self.error_id is not None and now - self.last_failure < OUTAGE_GAP_SECONDS:
                self.failures += 1
                self.last_failure = now
                return self.error_id
            self.error_id = uuid.uuid4().hex[:16]
            self.started = self.last_failure = now
            self.failures = 1
            error_id = self.error_id
        # The exception's class only: messages carry hosts and ports.
        log.error(
            "%s unavailable (%s), error id %s; further failures are counted, not logged, until it is back",
            self.dependency,
            type(exc).__name__,
            error_id,
        )
        return error_id

    def recovered(self) -> None:
        """A call to the dependency just worked: end the outage (logged once)."""
        if self.error_id is None:
            return
        with self._lock:
            if self.error_id is None:
                return
            error_id, failures, lasted = self.error_id, self.failures, time.monotonic() - self.started
            self.error_id = None
            self.failures = 0
        log.warning(
            "%s available again after %.1f s (%d failed calls, error id %s)",
            self.dependency,
            lasted,
            failures,
            error_id,
        )


OUTAGES: Final[dict[Dependency, Outage]] = {"redis": Outage("redis"), "database": Outage("database")}


def record_failure(exc: BaseException) -> tuple[Dependency, str] | None:
    """For an unreachable server: (which, the outage's error id), logged once per outage; else None."""
    dependency = unavailable_dependency(exc)
    if dependency is None:
        return None
    return dependency, OUTAGES[dependency].failed(exc)
