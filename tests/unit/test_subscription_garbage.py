"""Subscription events must not leave cyclic garbage: the collector's full passes over it paused
streaming replies for 40-100 ms (bench/README.md, askvx_latency)."""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator

import strawberry

from schema import PerEventExecutionContext


@strawberry.type
class Event:
    delta: str
    done: bool


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def reply(self, events: int) -> AsyncGenerator[Event, None]:
        for n in range(events):
            yield Event(delta=str(n), done=n == events - 1)


async def cyclic_garbage(schema: strawberry.Schema, events: int) -> int:
    """Objects only the cycle collector frees, left by one subscription of ``events`` events."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        received = 0
        stream = await schema.subscribe(
            "subscription($n: Int!) { reply(events: $n) { delta done } }", variable_values={"n": events}
        )
        assert not isinstance(stream, strawberry.types.ExecutionResult)
        async for result in stream:
            assert not result.errors
            received += 1
        assert received == events
        gc.collect()
        return len(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_events_leave_no_cyclic_garbage() -> None:
    schema = strawberry.Schema(
        query=Query, subscription=Subscription, execution_context_class=PerEventExecutionContext
    )
    short, long = await cyclic_garbage(schema, 100), await cyclic_garbage(schema, 1_100)
    # Some garbage per subscription (parsing, validation, the stream), none per event: graphql-core's
    # own per-event executor left ~13 objects per event (13,000 more for the longer one).
    assert long - short < 100
