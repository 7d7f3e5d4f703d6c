"""AskVX's language models: OpenAI's Responses API through the official SDK, and an offline stand-in.

Both implement ``domain.ai.ChatModel``. Every failure leaves as a ``ModelError`` whose message is safe
to show an operator: it never holds the API key, the prompt, or free text the provider sent back
(provider messages can quote a masked key or the prompt), only status codes and error codes.

Events arrive as the SDK decodes them (``AsyncStream[object]``: it still makes the request, retries,
times out, decodes Server-Sent Events and raises its own error types), without a pydantic model per
event: a text delta is read straight from its JSON, which is most of a reply's events and was most of
the worker's CPU per delta; the few events that end a reply become the SDK's own event models.

How a streamed reply maps to the port:

* ``response.output_text.delta`` -> ``TextDelta`` (empty deltas are skipped);
* ``response.completed`` -> exactly one ``Usage`` from ``response.usage``, then the iterator ends;
* ``response.incomplete`` for ``max_output_tokens`` (or any reason other than ``content_filter``) ->
  one ``Usage`` as if completed: the text already yielded stands, but it may stop mid-sentence;
* ``response.incomplete`` for ``content_filter`` and any ``response.refusal.*`` -> ``refused``;
* ``response.failed`` and ``error`` events -> ``provider``;
* no event for ``idle_timeout_seconds``, or the SDK's own timeout -> ``timeout``;
* HTTP errors left after the SDK's retries, or no connection at all -> ``provider``;
* the stream ending, or the connection dropping, before a final event -> ``cut``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Final

import openai
from openai import AsyncOpenAI, AsyncStream
from openai import BaseModel as OpenAIModel
from openai.types.responses import (
    EasyInputMessageParam,
    Response,
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseIncompleteEvent,
    ResponseInputParam,
    ResponseRefusalDeltaEvent,
    ResponseRefusalDoneEvent,
)
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming

from domain.ai import ModelError, PromptMessage, TextDelta, Usage

__all__ = ["OfflineChatModel", "OpenAIChatModel"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
REFUSED_MESSAGE: Final = "The AI provider declined to answer this request."
CUT_MESSAGE: Final = "The AI provider's reply was cut off."
# After the final event only the end of the body is left; reading it lets the SDK hand the
# connection back to the pool instead of closing it. Bounded so a slow server cannot hold a reply.
_DRAIN_SECONDS: Final = 1.0
# Error codes are shown only when they look like identifiers, never as free text.
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
TEXT_DELTA: Final = "response.output_text.delta"
# The events that end or refuse a reply, as the SDK's models (built without validation, as the SDK
# does); every other event type (created, in_progress, output_item.*, content_part.*, *.done) is skipped.
_FINAL_EVENTS: Final[dict[str, type[OpenAIModel]]] = {
    "response.completed": ResponseCompletedEvent,
    "response.incomplete": ResponseIncompleteEvent,
    "response.failed": ResponseFailedEvent,
    "response.refusal.delta": ResponseRefusalDeltaEvent,
    "response.refusal.done": ResponseRefusalDoneEvent,
    "error": ResponseErrorEvent,
}
_READABLE_CODES: Final = {
    "server_error": "the provider had an internal error",
    "rate_limit_exceeded": "the provider's rate limit was reached",
    "insufficient_quota": "the account's quota is used up",
    "invalid_prompt": "the provider rejected the prompt",
    "context_length_exceeded": "the conversation is too long for the model",
    "vector_store_timeout": "the provider timed out",
}


def _safe_code(code: object) -> str | None:
    if isinstance(code, str) and _SAFE_CODE.fullmatch(code):
        return code
    return None


def _describe_code(code: object) -> str:
    safe = _safe_code(code)
    if safe is None:
        return "no error code given"
    readable = _READABLE_CODES.get(safe)
    return f"{readable} ({safe})" if readable else f"error code {safe}"


def _usage_of(response: Response) -> Usage:
    if response.usage is None:
        logger.warning("openai response %s ended without usage; recording zero tokens", response.id)
        return Usage(input_tokens=0, output_tokens=0)
    counts = (response.usage.input_tokens, response.usage.output_tokens)
    if not all(isinstance(n, int) and n >= 0 for n in counts):
        raise ValueError("usage counts are not token counts")
    return Usage(input_tokens=counts[0], output_tokens=counts[1])


def _failure(code: object, request_id: str | None) -> ModelError:
    logger.warning("openai reply failed: code %s (request id %s)", _safe_code(code), request_id)
    return ModelError("provider", f"The AI provider failed while answering: {_describe_code(code)}.")


def _status_error(error: openai.APIStatusError, model: str) -> ModelError:
    status = error.status_code
    code = _safe_code(error.code)
    if status == 401:
        message = f"The AI provider rejected the API key (HTTP {status}); check OPENAI_API_KEY."
    elif status == 403:
        message = f"The AI provider refused this API key access to model {model!r} (HTTP {status})."
    elif status == 404:
        message = f"The AI provider does not offer model {model!r} to this API key (HTTP {status})."
    elif status == 429:
        reason = _describe_code(code) if code else "rate limit or quota reached"
        message = f"The AI provider is refusing more requests for now: {reason} (HTTP {status})."
    elif status >= 500:
        message = f"The AI provider had an error and did not recover after retries (HTTP {status})."
    else:
        reason = _describe_code(code) if code else "no error code given"
        message = f"The AI provider rejected the request: {reason} (HTTP {status})."
    return ModelError("provider", message)


def _outcome(event: OpenAIModel, request_id: str | None) -> Usage:
    """What a final event means: the reply's usage, or a ModelError."""
    if isinstance(event, ResponseCompletedEvent):
        return _usage_of(event.response)
    if isinstance(event, ResponseRefusalDeltaEvent | ResponseRefusalDoneEvent):
        logger.info("openai refused to answer (request id %s)", request_id)
        raise ModelError("refused", REFUSED_MESSAGE)
    if isinstance(event, ResponseIncompleteEvent):
        details = event.response.incomplete_details
        reason = details.reason if details else None
        if reason == "content_filter":
            logger.info("openai reply stopped by its content filter (request id %s)", request_id)
            raise ModelError("refused", REFUSED_MESSAGE)
        logger.warning("openai reply incomplete: %s (request id %s)", reason, request_id)
        return _usage_of(event.response)
    if isinstance(event, ResponseFailedEvent):
        error = event.response.error
        raise _failure(error.code if error else None, request_id)
    if isinstance(event, ResponseErrorEvent):
        raise _failure(event.code, request_id)
    raise TypeError(f"not a final event: {type(event).__name__}")


class OpenAIChatModel:
    """A ``ChatModel`` backed by ``POST /v1/responses`` with ``stream=true``.

    ``timeout_seconds`` is the SDK's HTTP timeout (connect, write, and each read); the SDK retries
    connection errors, 408, 409, 429 and 5xx ``max_retries`` times before the reply starts, never
    after. ``idle_timeout_seconds`` is the longest silence allowed between two stream events once
    the reply has started. System messages travel in ``input`` with role ``system``, in order.
    """

    def __init__(
        self,
        *,
        api_key: str,
        model: str = "gpt-5",
        base_url: str | None = None,
        timeout_seconds: float = 60.0,
        idle_timeout_seconds: float = 20.0,
        max_retries: int = 2,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is empty; use OfflineChatModel when no key is configured")
        if timeout_seconds <= 0 or idle_timeout_seconds <= 0:
            raise ValueError("timeouts must be positive")
        if max_retries < 0:
            raise ValueError("max_retries cannot be negative")
        self._api_key = api_key
        self._model = model
        # Pinned rather than None so the SDK does not quietly read OPENAI_BASE_URL from the environment.
        self._base_url = base_url or DEFAULT_BASE_URL
        self._timeout = timeout_seconds
        self._idle_timeout = idle_timeout_seconds
        self._max_retries = max_retries
        self._client: AsyncOpenAI | None = None

    def __repr__(self) -> str:
        return f"OpenAIChatModel(model={self._model!r}, base_url={self._base_url!r})"

    @property
    def name(self) -> str:
        return f"openai:{self._model}"

    @property
    def offline(self) -> bool:
        return False

    def _client_for_loop(self) -> AsyncOpenAI:
        # Built on first use, inside the running event loop, so construction does no I/O.
        if self._client is None:
            self._client = AsyncOpenAI(
                api_key=self._api_key,
                base_url=self._base_url,
                timeout=self._timeout,
                max_retries=self._max_retries,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def stream(
        self, messages: Sequence[PromptMessage], *, max_output_tokens: int | None = None
    ) -> AsyncIterator[TextDelta | Usage]:
        events = await self._open(messages, max_output_tokens)
        try:
            async for item in self._translate(events):
                yield item
        finally:
            await events.close()

    async def _open(
        self, messages: Sequence[PromptMessage], max_output_tokens: int | None
    ) -> AsyncStream[object]:
        items: ResponseInputParam = [EasyInputMessageParam(role=m.role, content=m.content) for m in messages]
        body: ResponseCreateParamsStreaming = {"model": self._model, "input": items, "stream": True}
        if max_output_tokens is not None:
            body["max_output_tokens"] = max_output_tokens
        client = self._client_for_loop()
        # `from None` throughout: the SDK's exception text can quote the provider's body, which for a
        # bad key includes a masked copy of it; chaining would carry it into tracebacks and logs.
        try:
            # What client.responses.create(stream=True) sends, with events left as decoded JSON.
            return await client.post(
                "/responses", cast_to=object, body=body, stream=True, stream_cls=AsyncStream[object]
            )
        except openai.APITimeoutError:
            logger.warning("openai request timed out after retries (model %s)", self._model)
            raise ModelError("timeout", "The AI provider did not answer in time.") from None
        except openai.APIStatusError as error:
            logger.warning(
                "openai request failed: HTTP %s, code %s, request id %s (model %s)",
                error.status_code,
                _safe_code(error.code),
                error.request_id,
                self._model,
            )
            raise _status_error(error, self._model) from None
        except openai.APIConnectionError:
            logger.warning("openai unreachable after retries (model %s)", self._model)
            raise ModelError("provider", "Could not connect to the AI provider.") from None
        except openai.OpenAIError as error:
            logger.warning("openai request failed: %s (model %s)", type(error).__name__, self._model)
            raise ModelError("provider", "The AI provider request failed before the reply started.") from None

    async def _next_event(self, events: AsyncStream[object], request_id: str | None) -> object | None:
        """The next event, or None at the end of the stream."""
        deadline = asyncio.timeout(self._idle_timeout)
        try:
            async with deadline:
                return await anext(events)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            if not deadline.expired():
                raise
            logger.warning("openai stream stalled for %ss (request id %s)", self._idle_timeout, request_id)
            message = f"The AI provider stopped sending for {self._idle_timeout:g} seconds."
            raise ModelError("timeout", message) from None
        except openai.APITimeoutError:
            logger.warning("openai stream read timed out (request id %s)", request_id)
            raise ModelError("timeout", "The AI provider did not answer in time.") from None
        except openai.APIConnectionError:
            logger.warning("openai stream connection dropped (request id %s)", request_id)
            raise ModelError("cut", CUT_MESSAGE) from None
        except openai.APIError as error:
            # The SDK raises this itself for a frame whose data carries an "error" object.
            raise _failure(error.code, request_id) from None
        except ValueError:
            logger.warning("openai stream sent an unreadable frame (request id %s)", request_id)
            raise ModelError("provider", "The AI provider sent a reply that could not be read.") from None

    async def _translate(self, events: AsyncStream[object]) -> AsyncIterator[TextDelta | Usage]:
        request_id = events.response.headers.get("x-request-id")
        while (data := await self._next_event(events, request_id)) is not None:
            if not isinstance(data, dict):
                logger.warning("openai stream sent a non-object event (request id %s)", request_id)
                raise ModelError("provider", "The AI provider sent a reply that could not be read.")
            kind = data.get("type")
            if kind == TEXT_DELTA:
                delta = data.get("delta")
                if isinstance(delta, str) and delta:
                    yield TextDelta(delta)
                continue
            model = _FINAL_EVENTS.get(kind) if isinstance(kind, str) else None
            if model is None:
                continue
            try:
                usage = _outcome(model.construct(**data), request_id)
            except (AttributeError, TypeError, ValueError):
                # e.g. "response": null, or usage counts that are not numbers
                logger.warning("openai stream sent an unreadable final event (request id %s)", request_id)
                raise ModelError("provider", "The AI provider sent a reply that could not be read.") from None
            yield usage
            await self._drain(events)
            return
        logger.warning("openai stream ended without a final event (request id %s)", request_id)
        raise ModelError("cut", CUT_MESSAGE)

    async def _drain(self, events: AsyncStream[object]) -> None:
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                async for _ in events:
                    pass
        except (TimeoutError, openai.OpenAIError, ValueError):
            pass  # the reply is already complete; the stream is closed by the caller either way


_OFFLINE_REPLY: Final = (
    "AI replies are not configured on this server, ",
    "so AskVX cannot answer yet. ",
    "An administrator can turn them on by setting OPENAI_API_KEY ",
    "and restarting BrandVX.",
)


class OfflineChatModel:
    """The stand-in used when no provider key is configured: it says so, in a few deltas, for free."""

    @property
    def name(self) -> str:
        return "offline"

    @property
    def offline(self) -> bool:
        return True

    async def stream(
        self, messages: Sequence[PromptMessage], *, max_output_tokens: int | None = None
    ) -> AsyncIterator[TextDelta | Usage]:
        for part in _OFFLINE_REPLY:
            yield TextDelta(part)
            await asyncio.sleep(0)  # let a consumer flush each delta, as it would for a real reply
        yield Usage(input_tokens=0, output_tokens=0)

    async def aclose(self) -> None:
        return None
