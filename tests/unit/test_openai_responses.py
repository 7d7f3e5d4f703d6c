"""OpenAIChatModel through the real OpenAI SDK against FakeOpenAI on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from domain.ai import ChatModel, ModelError, PromptMessage, TextDelta, Usage
from integrations.openai_responses import OfflineChatModel, OpenAIChatModel
from tests.fakes.openai_server import FakeOpenAI, Script

API_KEY = "sk-test-0123456789abcdef"
PROMPT = [
    PromptMessage("system", "You are AskVX, a salon assistant."),
    PromptMessage("user", "Which clients are due for a rebook? Secret-ish detail 4471."),
    PromptMessage("assistant", "Let me look."),
    PromptMessage("user", "Thanks."),
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=API_KEY) as server:
        yield server


@pytest.fixture
async def model(fake: FakeOpenAI) -> AsyncIterator[OpenAIChatModel]:
    fake.reset()
    chat = OpenAIChatModel(api_key=API_KEY, base_url=fake.base_url, max_retries=1, idle_timeout_seconds=2.0)
    yield chat
    await chat.aclose()


async def collect(model: ChatModel, **kwargs: int) -> tuple[list[TextDelta | Usage], ModelError | None]:
    items: list[TextDelta | Usage] = []
    try:
        async for item in model.stream(PROMPT, **kwargs):
            items.append(item)
    except ModelError as error:
        return items, error
    return items, None


def text_of(items: list[TextDelta | Usage]) -> str:
    return "".join(item.text for item in items if isinstance(item, TextDelta))


def assert_safe(error: ModelError) -> None:
    for secret in (API_KEY, API_KEY[-4:], "4471", "salon assistant"):
        assert secret not in error.message
        assert secret not in str(error)


async def test_full_reply_then_exactly_one_usage(model: OpenAIChatModel, fake: FakeOpenAI) -> None:
    fake.enqueue(Script(deltas=["Three ", "clients ", "are due."], usage=(41, 5)))
    items, error = await collect(model)
    assert error is None
    assert items == [TextDelta("Three "), TextDelta("clients "), TextDelta("are due."), Usage(41, 5)]
    assert model.name == "openai:gpt-5"
    assert not model.offline


async def test_request_shape(model: OpenAIChatModel, fake: FakeOpenAI) -> None:
    await collect(model, max_output_tokens=300)
    (request,) = fake.requests
    assert request.authorized
    assert request.model == "gpt-5"
    assert request.stream is True
    assert request.body["max_output_tokens"] == 300
    assert request.input == [{"role": m.role, "content": m.content} for m in PROMPT]
    await collect(model)
    assert "max_output_tokens" not in fake.requests[1].body


async def test_connection_is_reused_after_a_completed_reply(model: OpenAIChatModel, fake: FakeOpenAI) -> None:
    await collect(model)
    await collect(model)
    first, second = fake.requests
    assert first.client_port == second.client_port


async def test_wrong_key_says_the_key_was_rejected(fake: FakeOpenAI) -> None:
    fake.reset()
    chat = OpenAIChatModel(api_key="sk-wrong-key-987654321", base_url=fake.base_url, max_retries=1)
    try:
        items, error = await collect(chat)
    finally:
        await chat.aclose()
    assert items == []
    assert error is not None
    assert error.kind == "provider"
    assert "API key" in error.message
    assert "rejected" in error.message
    assert "401" in error.message
    assert "sk-wrong" not in error.message
    assert "4321" not in error.message
    # The SDK's exception text quotes the masked key; it must not ride along in tracebacks.
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert len(fake.requests) == 1  # 401 is not retried


async def test_server_error_is_retried_then_reported(model: OpenAIChatModel, fake: FakeOpenAI) -> None:
    fake.enqueue(Script(fail_with_status=500), Script(fail_with_status=500))
    items, error = await collect(model)
    assert items == []
    assert error is not None
    assert error.kind == "provider"
    assert "500" in error.message
    assert len(fake.requests) == 2  # the first try and max_retries=1
    assert_safe(error)


async def test_a_retry_can_recover(model: OpenAIChatModel, fake: FakeOpenAI) -> None:
    fake.enqueue(Script(fail_with_status=429), Script(deltas=["ok"]))
    items, error = await collect(model)
    assert error is None
    assert text_of(items) == "ok"
    assert len(fake.requests) == 2


async def test_failed_mid_stream_keeps_what_came(model: OpenAIChatModel, fake: FakeOpenAI) -> None:
    fake.enqueue(Script(deltas=["one ", "two ", "three"], fail_after=2))
    items, error = await collect(model)
    assert items == [TextDelta("one "), TextDelta("two ")]
    assert error is not None
    assert error.kind == "provider"
    assert "server_error" in error.message
    assert_safe(error)


async def test_stream_ending_without_completion_is_cut(model: OpenAIChatModel, fake: FakeOpenAI) -> None:
    fake.enqueue(Script(deltas=["one ", "two ", "three"], cut_after=1))
    items, error = await collect(model)
    assert items == [TextDelta("one ")]
    assert error is not None
    assert (error.kind, error.message) == ("cut", "The AI provider's reply was cut off.")


async def test_stall_times_out(fake: FakeOpenAI) -> None:
    fake.reset()
    fake.enqueue(Script(deltas=["one ", "two"], stall_after=1, stall_seconds=3.0))
    chat = OpenAIChatModel(api_key=API_KEY, base_url=fake.base_url, idle_timeout_seconds=0.5, max_retries=0)
    started = time.monotonic()
    try:
        items, error = await collect(chat)
    finally:
        await chat.aclose()
    assert time.monotonic() - started < 5
    assert items == [TextDelta("one ")]
    assert error is not None
    assert error.kind == "timeout"


async def test_refusal_is_refused(model: OpenAIChatModel, fake: FakeOpenAI) -> None:
    fake.enqueue(Script(refuse=True))
    items, error = await collect(model)
    assert items == []
    assert error is not None
    assert (error.kind, error.message) == ("refused", "The AI provider declined to answer this request.")


async def test_an_unreadable_final_event_is_a_provider_error(
    model: OpenAIChatModel, fake: FakeOpenAI
) -> None:
    fake.enqueue(Script(deltas=["Hi"], malformed_final=True))
    items, error = await collect(model)
    assert items == [TextDelta("Hi")]
    assert error is not None
    assert (error.kind, error.message) == ("provider", "The AI provider sent a reply that could not be read.")


async def test_content_filter_is_refused(model: OpenAIChatModel, fake: FakeOpenAI) -> None:
    fake.enqueue(Script(deltas=["Sure, "], incomplete="content_filter"))
    items, error = await collect(model)
    assert items == [TextDelta("Sure, ")]
    assert error is not None
    assert error.kind == "refused"


async def test_max_output_tokens_ends_like_a_completed_reply(
    model: OpenAIChatModel, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake.enqueue(Script(deltas=["A long ", "answer that"], incomplete="max_output_tokens", usage=(30, 16)))
    with caplog.at_level(logging.WARNING, logger="integrations.openai_responses"):
        items, error = await collect(model, max_output_tokens=16)
    assert error is None
    assert items == [TextDelta("A long "), TextDelta("answer that"), Usage(30, 16)]
    assert "max_output_tokens" in caplog.text


async def test_logs_hold_no_key_or_prompt(
    model: OpenAIChatModel, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake.enqueue(Script(fail_with_status=500), Script(fail_with_status=500), Script(fail_after=0))
    with caplog.at_level(logging.DEBUG):
        await collect(model)
        await collect(model)
    assert "openai" in caplog.text
    for secret in (API_KEY, "4471", "salon assistant"):
        assert secret not in caplog.text
    assert API_KEY not in repr(model)


async def test_offline_model_says_ai_is_not_configured() -> None:
    offline: ChatModel = OfflineChatModel()
    items, error = await collect(offline)
    assert error is None
    assert offline.offline
    assert offline.name == "offline"
    assert len(items) > 2
    assert items[-1] == Usage(0, 0)
    assert sum(isinstance(item, Usage) for item in items) == 1
    reply = text_of(items)
    assert "not configured" in reply
    assert "OPENAI_API_KEY" in reply
    assert "rebook" not in reply
    assert "4471" not in reply


def test_an_empty_key_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="api_key"):
        OpenAIChatModel(api_key="")
