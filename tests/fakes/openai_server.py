"""A local fake of OpenAI's Responses API that the real SDK talks to over HTTP.

It runs uvicorn in a background thread on 127.0.0.1 and a free port, and answers
``POST /v1/responses`` with ``stream=true`` the way the real service does: ``text/event-stream``
frames ``event: <type>\\ndata: <json>\\n\\n`` in the real order, each with ``type`` and an
increasing ``sequence_number``. What each request gets is scripted through a queue of ``Script``
objects; with the queue empty it answers "Hello from the fake model.".

No pytest here: a benchmark can use it as well::

    with FakeOpenAI(api_key="sk-test") as fake:
        fake.enqueue(Script(deltas=["a", "b"], delay_between=0.01))
        ...  # point AsyncOpenAI(base_url=fake.base_url) at it
        fake.deltas_sent  # when each delta frame was written, in time.perf_counter() seconds
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fakes.serving import ServedFake

__all__ = ["DeltaSent", "FakeOpenAI", "RecordedRequest", "Script"]

DEFAULT_DELTAS = ("Hello", " from", " the", " fake", " model.")
REFUSAL_DELTAS = ("I'm sorry, but", " I can't help", " with that.")


@dataclass
class Script:
    """How the fake answers one request. Counts are numbers of text deltas sent first."""

    deltas: list[str] = field(default_factory=lambda: list(DEFAULT_DELTAS))
    delay_between: float = 0.0
    fail_with_status: int | None = None  # HTTP error with OpenAI's error JSON, before any streaming
    fail_after: int | None = None  # `response.failed` (server_error) after N deltas
    cut_after: int | None = None  # end the body after N deltas, with no final event
    stall_after: int | None = None  # after N deltas, send nothing for stall_seconds, then go on
    stall_seconds: float = 0.0
    refuse: bool = False  # a refusal content part (refusal deltas) instead of output text
    incomplete: str | None = None  # `response.incomplete` with this reason instead of completed
    usage: tuple[int, int] = (12, 6)  # input_tokens, output_tokens
    malformed_final: bool = False  # `response.completed` whose `response` is null
    retry_after_ms: int | None = 10  # sent with 429/5xx so the SDK's retries stay fast


@dataclass(frozen=True)
class RecordedRequest:
    model: Any
    input: Any
    stream: bool
    body: dict[str, Any]
    authorized: bool
    received_at: float
    client_port: int | None  # the same port on two requests means the SDK reused the connection


@dataclass(frozen=True)
class DeltaSent:
    request_index: int
    index: int
    text: str
    at: float  # time.perf_counter() just before the frame was handed to the server


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _error_body(status: int, message: str | None = None, param: str | None = None) -> dict[str, Any]:
    kind, code = _ERROR_TYPES.get(status, ("server_error", None))
    if message is None:
        message = (
            "The server had an error while processing your request. Sorry about that!"
            if status >= 500
            else f"Request failed with status {status}."
        )
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _masked(key: str) -> str:
    return key[:3] + "*" * 8 + key[-4:] if len(key) > 8 else "*" * len(key)


def _frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


class _Reply:
    """The events of one streamed reply, numbered in order."""

    def __init__(self, body: dict[str, Any], script: Script) -> None:
        self.body = body
        self.script = script
        self.response_id = "resp_" + secrets.token_hex(24)
        self.item_id = "msg_" + secrets.token_hex(24)
        self.created_at = int(time.time())
        self.sequence = 0
        self.text = ""

    def event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return _frame(event)

    def part(self) -> dict[str, Any]:
        if self.script.refuse:
            return {"type": "refusal", "refusal": self.text}
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": self.text}

    def item(self, status: str, *, with_part: bool) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [self.part()] if with_part else [],
        }

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        *,
        usage: bool = False,
        error: dict[str, Any] | None = None,
        incomplete: str | None = None,
    ) -> dict[str, Any]:
        input_tokens, output_tokens = self.script.usage
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": self.body.get("instructions"),
            "max_output_tokens": self.body.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.body.get("model"),
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "prompt_cache_key": None,
            "reasoning": {"effort": "medium", "summary": None},
            "safety_identifier": None,
            "service_tier": "default",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_logprobs": 0,
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            }
            if usage
            else None,
            "user": None,
            "metadata": {},
        }

    def delta(self, text: str) -> bytes:
        self.text += text
        kind = "response.refusal.delta" if self.script.refuse else "response.output_text.delta"
        extra: dict[str, Any] = {} if self.script.refuse else {"logprobs": []}
        return self.event(kind, item_id=self.item_id, output_index=0, content_index=0, delta=text, **extra)

    def opening(self) -> list[bytes]:
        return [
            self.event("response.created", response=self.response("in_progress", [])),
            self.event("response.in_progress", response=self.response("in_progress", [])),
            self.event(
                "response.output_item.added", output_index=0, item=self.item("in_progress", with_part=False)
            ),
            self.event(
                "response.content_part.added",
                item_id=self.item_id,
                output_index=0,
                content_index=0,
                part={**self.part(), "text": ""}
                if not self.script.refuse
                else {**self.part(), "refusal": ""},
            ),
        ]

    def closing(self) -> list[bytes]:
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        if self.script.refuse:
            done = self.event("response.refusal.done", **where, refusal=self.text)
        else:
            done = self.event("response.output_text.done", **where, text=self.text, logprobs=[])
        item_status = "incomplete" if self.script.incomplete else "completed"
        item = self.item(item_status, with_part=True)
        frames = [
            done,
            self.event("response.content_part.done", **where, part=self.part()),
            self.event("response.output_item.done", output_index=0, item=item),
        ]
        if self.script.malformed_final:
            frames.append(self.event("response.completed", response=None))
        elif self.script.incomplete:
            response = self.response("incomplete", [item], usage=True, incomplete=self.script.incomplete)
            frames.append(self.event("response.incomplete", response=response))
        else:
            frames.append(
                self.event("response.completed", response=self.response("completed", [item], usage=True))
            )
        return frames

    def failure(self) -> bytes:
        error = {"code": "server_error", "message": "The server had an error processing your request."}
        output = [self.item("incomplete", with_part=True)]
        return self.event("response.failed", response=self.response("failed", output, error=error))


class _EventStream(Response):
    """Writes the SSE body itself so it can pause, stop early, and notice a client that left.

    The frame source yields bytes to send, or a float: seconds to pause, cut short by a disconnect.
    """

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncGenerator[bytes | float, None], headers: dict[str, str]) -> None:
        # Not Response.__init__: it would render an empty body and announce Content-Length: 0.
        self.status_code = 200
        self.background = None
        self.frames = frames
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        disconnected = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            async for frame in self.frames:
                if isinstance(frame, float):
                    await asyncio.wait({disconnected}, timeout=frame)
                if disconnected.done():
                    return
                if isinstance(frame, bytes):
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            return  # the client went away mid-reply
        finally:
            disconnected.cancel()
            await self.frames.aclose()


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class FakeOpenAI(ServedFake):
    thread_name = "fake-openai"

    def __init__(self, *, api_key: str = "sk-test-fake-openai-key", host: str = "127.0.0.1") -> None:
        self.api_key = api_key
        super().__init__(host=host)
        self.on_delta: Callable[[DeltaSent], None] | None = None
        self._lock = threading.Lock()
        self._scripts: deque[Script] = deque()
        self._requests: list[RecordedRequest] = []
        self._deltas: list[DeltaSent] = []
        self.app = Starlette(
            routes=[Route("/v1/responses", self._responses, methods=["POST"])],
        )

    # --- scripting and inspection (safe to call from any thread) ---

    def enqueue(self, *scripts: Script) -> None:
        with self._lock:
            self._scripts.extend(scripts)

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._requests.clear()
            self._deltas.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def deltas_sent(self) -> list[DeltaSent]:
        with self._lock:
            return list(self._deltas)

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeOpenAI is not started")
        return f"http://{self.host}:{self._port}/v1"

    # --- the endpoint ---

    async def _responses(self, request: Request) -> Response:
        request_id = "req_" + secrets.token_hex(16)
        headers = {"x-request-id": request_id, "openai-processing-ms": "1"}
        authorized = request.headers.get("authorization") == f"Bearer {self.api_key}"
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    model=body.get("model"),
                    input=body.get("input"),
                    stream=body.get("stream") is True,
                    body=body,
                    authorized=authorized,
                    received_at=time.perf_counter(),
                    client_port=request.client.port if request.client else None,
                )
            )
            request_index = len(self._requests) - 1
        if not authorized:
            presented = request.headers.get("authorization", "").removeprefix("Bearer ")
            message = (
                f"Incorrect API key provided: {_masked(presented)}. "
                "You can find your API key at https://platform.openai.com/account/api-keys."
            )
            return JSONResponse(_error_body(401, message), status_code=401, headers=headers)
        if not body:
            return JSONResponse(
                _error_body(400, "We could not parse the JSON body of your request."), 400, headers
            )
        if body.get("stream") is not True:
            message = "This fake only answers stream=true requests."
            return JSONResponse(_error_body(400, message, "stream"), status_code=400, headers=headers)
        with self._lock:
            script = self._scripts.popleft() if self._scripts else Script()
        if script.fail_with_status is not None:
            status = script.fail_with_status
            if script.retry_after_ms is not None and (status == 429 or status >= 500):
                headers["retry-after-ms"] = str(script.retry_after_ms)
            return JSONResponse(_error_body(status), status_code=status, headers=headers)
        headers["cache-control"] = "no-cache"
        return _EventStream(self._frames(_Reply(body, script), request_index), headers)

    async def _frames(self, reply: _Reply, request_index: int) -> AsyncGenerator[bytes | float, None]:
        script = reply.script
        for frame in reply.opening():
            yield frame
        deltas = script.deltas
        if script.refuse and deltas == list(DEFAULT_DELTAS):
            deltas = list(REFUSAL_DELTAS)
        for index, text in enumerate(deltas):
            if index == script.fail_after:
                yield reply.failure()
                return
            if index == script.cut_after:
                return
            if index == script.stall_after:
                yield float(script.stall_seconds)
            elif index and script.delay_between:
                yield float(script.delay_between)
            frame = reply.delta(text)
            sent = DeltaSent(request_index=request_index, index=index, text=text, at=time.perf_counter())
            with self._lock:
                self._deltas.append(sent)
            if self.on_delta is not None:
                self.on_delta(sent)
            yield frame
        count = len(deltas)
        if script.fail_after is not None and script.fail_after >= count:
            yield reply.failure()
            return
        if script.cut_after is not None and script.cut_after >= count:
            return
        if script.stall_after is not None and script.stall_after >= count:
            yield float(script.stall_seconds)
        for frame in reply.closing():
            yield frame
