"""Replies of one tenant that finish at the same time each count and each reach the summary."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from brandvx.runtime import Runtime
from domain import askvx
from domain.ai import PromptMessage, Usage
from domain.model import ChatMessage, ChatMessageStatus, ChatRole
from jobs.askvx import SYSTEM_ROLE
from tests.conftest import TenantFixture


async def test_concurrent_finishes_lose_no_summary_line_and_no_tokens(
    standalone_runtime: Runtime, tenant: TenantFixture
) -> None:
    rt, tid = standalone_runtime, uuid.UUID(tenant.uuid)

    async def finish(n: int) -> None:
        reply = ChatMessage(
            id=uuid.uuid4(),
            tenant_id=tid,
            session_id=uuid.uuid4(),
            role=ChatRole.ASSISTANT,
            content="",
            status=ChatMessageStatus.STREAMING,
            error=None,
            created_at=datetime.now(UTC),
        )
        work = askvx.ReplyWork(reply, [PromptMessage("user", f"question {n}")])
        # Separate transactions, all at once, as separate worker processes would run them.
        async with rt.db.transaction(tenant_id=tid, role=SYSTEM_ROLE) as uow:
            usage = Usage(input_tokens=10, output_tokens=n)
            await askvx.finish_reply(uow, tid, work, text=f"answer {n}", usage=usage, model="m")

    await asyncio.gather(*(finish(n) for n in range(8)))

    async with rt.db.transaction(tenant_id=tid, role=SYSTEM_ROLE) as uow:
        summary = await uow.memories.summary()
        used = await uow.usage.current(tid)
    for n in range(8):
        assert f"Asked: question {n} — Answered: answer {n}" in summary
    assert used.tokens_used == sum(10 + n for n in range(8))
