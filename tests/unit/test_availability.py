"""Telling an unreachable Redis or PostgreSQL apart from bugs, and logging each outage once."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, InterfaceError
from sqlalchemy.ext.asyncio import create_async_engine

from persistence.availability import Outage, unavailable_dependency
from persistence.ratelimit import MemoryCostBudget
from tests.conftest import free_port


async def test_a_closed_redis_port_is_redis_unavailable() -> None:
    client = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    try:
        with pytest.raises(RedisConnectionError) as raised:
            await client.ping()
    finally:
        await client.aclose()
    assert unavailable_dependency(raised.value) == "redis"


async def test_a_closed_postgres_port_is_database_unavailable() -> None:
    engine = create_async_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(ConnectionRefusedError) as raised:  # asyncpg connecting: a bare socket error
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert unavailable_dependency(raised.value) == "database"


def test_a_pooled_connection_that_died_with_its_server_is_database_unavailable() -> None:
    closed = asyncpg.exceptions.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    )
    error = InterfaceError("SELECT 1", {}, closed, connection_invalidated=True)
    assert unavailable_dependency(error) == "database"
    starting = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    assert unavailable_dependency(starting) == "database"


def test_bugs_and_bad_data_are_not_outages() -> None:
    assert unavailable_dependency(ValueError("no")) is None
    assert unavailable_dependency(ResponseError("WRONGTYPE Operation against a key")) is None
    duplicate = asyncpg.exceptions.UniqueViolationError("duplicate key value")
    assert unavailable_dependency(IntegrityError("INSERT", {}, duplicate)) is None


def test_an_outage_is_logged_once_under_one_id(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("redis")
    failure = RedisConnectionError("Error 111 connecting to 10.1.2.3:6379. Connection refused.")
    with caplog.at_level(logging.INFO, logger="brandvx.availability"):
        ids = {outage.failed(failure) for _ in range(100)}
        assert len(ids) == 1
        assert outage.active
        outage.recovered()
        assert not outage.active
        second = outage.failed(failure)
    assert second not in ids
    records = [r for r in caplog.records if r.name == "brandvx.availability"]
    assert [r.levelname for r in records] == ["ERROR", "WARNING", "ERROR"]
    [first_id] = ids
    assert first_id in records[0].getMessage()
    assert "100 failed calls" in records[1].getMessage()
    # The address in the exception's message never reaches the log.
    assert not any("10.1.2.3" in r.getMessage() for r in records)


async def test_the_memory_budget_leaks_like_the_redis_one_and_stays_bounded() -> None:
    now = [100.0]
    budget = MemoryCostBudget(maximum=100, restore_rate=10, max_keys=3, clock=lambda: now[0])
    assert (await budget.spend("a", 60)).allowed
    refused = await budget.spend("a", 60)
    assert not refused.allowed
    assert refused.available == 40
    assert refused.retry_after_seconds == 2.0
    now[0] += 2
    assert (await budget.spend("a", 60)).allowed
    for key in ("b", "c", "d", "e"):
        await budget.spend(key, 1)
    assert len(budget) == 3  # the least recently used buckets went first
