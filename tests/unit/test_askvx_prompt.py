"""The prompt AskVX sends: budgets, order, what goes in and what falls out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from domain import prompts
from domain.askvx import build_prompt, estimate_tokens, rolled_summary
from domain.model import (
    BrandProfile,
    ChatMessage,
    ChatMessageStatus,
    ChatRole,
    TenantSettings,
    TrainvxMemory,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TENANT = uuid.uuid4()
SESSION = uuid.uuid4()


def turn(
    i: int, role: ChatRole, content: str, status: ChatMessageStatus = ChatMessageStatus.COMPLETE
) -> ChatMessage:
    return ChatMessage(
        id=uuid.uuid4(),
        tenant_id=TENANT,
        session_id=SESSION,
        role=role,
        content=content,
        status=status,
        error=None,
        created_at=T0 + timedelta(minutes=i),
    )


def settings(**brand: object) -> TenantSettings:
    return TenantSettings(timezone="UTC", quiet_hours=None, brand_profile=BrandProfile(**brand))  # type: ignore[arg-type]


def memory(key: str, value: str, minutes: int = 0) -> TrainvxMemory:
    return TrainvxMemory(id=uuid.uuid4(), key=key, value=value, updated_at=T0 + timedelta(minutes=minutes))


def test_system_prompt_carries_brand_voice_memories_and_summary() -> None:
    messages = build_prompt(
        settings(business_name="Glow Studio", tone="playful", services=("balayage", "lashes")),
        [memory("cancellation policy", "24 hours notice")],
        "- Asked: prices — Answered: see menu",
        [
            turn(0, ChatRole.USER, "Hi"),
            turn(1, ChatRole.ASSISTANT, "Hello!"),
            turn(2, ChatRole.USER, "Ideas?"),
        ],
    )
    system = messages[0]
    assert system.role == "system"
    assert system.content.startswith(prompts.SYSTEM_PROMPT)
    assert "Glow Studio" in system.content
    assert "balayage, lashes" in system.content
    assert "- cancellation policy: 24 hours notice" in system.content
    assert "Asked: prices" in system.content
    assert [(m.role, m.content) for m in messages[1:]] == [
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Ideas?"),
    ]


def test_without_a_brand_profile_the_prompt_says_so() -> None:
    assert (
        prompts.NO_BRAND_PROFILE in build_prompt(settings(), [], "", [turn(0, ChatRole.USER, "x")])[0].content
    )


def test_oldest_turns_fall_out_first_and_the_newest_always_stays() -> None:
    long = "word " * 400  # ~500 tokens each
    turns = [turn(i, ChatRole.USER if i % 2 == 0 else ChatRole.ASSISTANT, f"{i} {long}") for i in range(20)]
    messages = build_prompt(settings(), [], "", turns, budget=2000)
    kept = [m.content.split()[0] for m in messages[1:]]
    assert kept == [str(i) for i in range(17, 20)]  # the newest three fit
    assert sum(estimate_tokens(m.content) for m in messages) <= 2000
    huge = turn(30, ChatRole.USER, "q " * 10_000)
    assert (
        build_prompt(settings(), [], "", [huge], budget=100)[-1]
        == build_prompt(settings(), [], "", [huge])[-1]
    )


def test_failed_and_empty_turns_are_left_out() -> None:
    messages = build_prompt(
        settings(),
        [],
        "",
        [
            turn(0, ChatRole.USER, "kept"),
            turn(1, ChatRole.ASSISTANT, "half an answ", ChatMessageStatus.FAILED),
            turn(2, ChatRole.ASSISTANT, "", ChatMessageStatus.STREAMING),
        ],
    )
    assert [m.content for m in messages[1:]] == ["kept"]


def test_newest_memories_win_when_the_budget_is_tight() -> None:
    memories = [memory(f"k{i}", "v" * 400, minutes=i) for i in range(10)]
    system = build_prompt(settings(), memories, "", [turn(0, ChatRole.USER, "q")], budget=900)[0].content
    assert "- k9:" in system
    assert "- k0:" not in system


def test_rolled_summary_keeps_the_latest_lines_within_its_size() -> None:
    summary = ""
    for i in range(200):
        summary = rolled_summary(summary, f"question {i}", f"answer {i}")
    assert len(summary) <= 3000
    assert summary.splitlines()[-1] == "- Asked: question 199 — Answered: answer 199"
    assert "question 0 " not in summary
