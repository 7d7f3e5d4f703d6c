"""Strawberry's ASGI view, with our auth, JSON errors for HTTP failures, and the offline explorer."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import orjson
import strawberry
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.execution import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from brandvx.auth import AuthFailure
from brandvx.explorer import render_explorer_html
from brandvx.runtime import Runtime
from brandvx.ws_sessions import ConnectionRefused, LimitedWebSocketAdapter, OpenSockets, TransportWSHandler
from domain.model import Actor
from persistence.availability import RETRY_AFTER_SECONDS
from persistence.unit_of_work import SqlUnit
from resolvers.context import Context
from schema.errors import RATE_LIMITED, code_for, mask_uncaught, unavailable_error

UNIT_STATE_KEY = "brandvx_unit"


def error_response(
    status: int, code: str, message: str, *, retry_after_seconds: float | None = None
) -> JSONResponse:
    extensions: dict[str, Any] = {"code": code}
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="brandvx"'
    if retry_after_seconds is not None:
        extensions["retryAfterSeconds"] = retry_after_seconds
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_seconds)))
    body = {"data": None, "errors": [{"message": message, "extensions": extensions}]}
    return JSONResponse(body, status_code=status, headers=headers or None)


def unavailable_response(message: str, extensions: Mapping[str, Any]) -> JSONResponse:
    body = {"data": None, "errors": [{"message": message, "extensions": dict(extensions)}]}
    retry_after = str(extensions.get("retryAfterSeconds", RETRY_AFTER_SECONDS))
    return JSONResponse(body, status_code=503, headers={"Retry-After": retry_after})


def _orjson_default(value: Any) -> Any:
    return str(value)


async def _limit_anonymous(runtime: Runtime, request: Request) -> None:
    """A request without valid credentials costs its client address 1 point: guessing tokens and
    hammering the endpoint unauthenticated are bounded per address, like tenants are by cost."""
    budget = runtime.anonymous_budget
    if budget is None:
        return
    address = request.client.host if request.client else "unknown"
    throttle = await budget.spend(f"anonymous:{address}", 1)
    if not throttle.allowed:
        raise AuthFailure(
            429,
            RATE_LIMITED,
            "Too many requests without valid credentials from this address; "
            f"retry in {throttle.retry_after_seconds:g} s",
            retry_after_seconds=throttle.retry_after_seconds,
        )


SUBSCRIPTIONS_OVER_HTTP = (
    "Subscriptions are served over WebSocket: connect to ws(s)://<this host>/graphql with the "
    "graphql-transport-ws protocol (e.g. the graphql-ws client) and subscribe there"
)


class GraphQLView(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = LimitedWebSocketAdapter

    def __init__(
        self,
        schema: strawberry.Schema,
        *,
        max_body_bytes: int,
        allowed_origins: list[str],
        body_timeout_seconds: float = 30.0,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql",
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),  # the legacy protocol is not served
            connection_init_wait_timeout=timedelta(seconds=10),
            max_subscriptions_per_connection=20,
            allowed_origins=allowed_origins,
        )
        self._max_body_bytes = max_body_bytes
        self.max_message_bytes = max_body_bytes  # WebSocket messages: the same limit as HTTP bodies
        self._body_timeout_seconds = body_timeout_seconds
        self.sockets = OpenSockets()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        response, body = await self._checked_body(scope, receive)
        if response is None:

            async def replay() -> Message:
                return {"type": "http.request", "body": body, "more_body": False}

            try:
                response = await self.run(Request(scope, replay))
            except AuthFailure as failure:
                response = error_response(
                    failure.status,
                    failure.code,
                    failure.message,
                    retry_after_seconds=failure.retry_after_seconds,
                )
            except HTTPException as exc:
                response = error_response(exc.status_code, "BAD_USER_INPUT", exc.reason)
            except Exception as exc:
                # Authentication reads PostgreSQL before any GraphQL error handling: an outage there
                # is a 503 the client can retry, not a plain-text 500 (anything else still is a bug).
                unavailable = unavailable_error(exc)
                if unavailable is None:
                    raise
                response = unavailable_response(unavailable.message, unavailable.extensions or {})
            finally:
                # Normally committed by the schema's UnitOfWorkPerOperation; this rolls back what an
                # early failure (authentication, a malformed request) left open.
                unit: SqlUnit | None = scope.get("state", {}).get(UNIT_STATE_KEY)
                if unit is not None:
                    await unit.close()
        await response(scope, receive, send)

    async def _checked_body(self, scope: Scope, receive: Receive) -> tuple[Response | None, bytes]:
        """Read the body within the size limit and refuse what is not a GraphQL request object."""
        request = Request(scope, receive)
        too_large = error_response(
            413, "BAD_USER_INPUT", f"Request body is larger than {self._max_body_bytes} bytes"
        )
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self._max_body_bytes):
            return too_large, b""
        chunks = bytearray()
        try:
            # A client trickling its body would hold a connection (and this task) forever.
            async with asyncio.timeout(self._body_timeout_seconds):
                async for chunk in request.stream():
                    chunks += chunk
                    if len(chunks) > self._max_body_bytes:
                        return too_large, b""
        except TimeoutError:
            message = f"The request body did not arrive within {self._body_timeout_seconds:g} s"
            return error_response(408, "BAD_USER_INPUT", message), b""
        body = bytes(chunks)
        if request.method == "POST" and "json" in request.headers.get("content-type", ""):
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return error_response(400, "BAD_USER_INPUT", "Unable to parse request body as JSON"), b""
            if not isinstance(parsed, dict):
                return error_response(400, "BAD_USER_INPUT", "The request body must be a JSON object"), b""
        return None, body

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        runtime: Runtime = request.app.state.runtime
        context = Context(services=runtime.app_services, request=request, response=response)
        if isinstance(request, WebSocket):
            return context  # authenticated by on_ws_connect, from connection_init
        if request.method == "GET" and "query" not in request.query_params:
            return context  # the explorer page, or a 400 for a GET without a query
        # One unit of work for the whole request: the membership lookup and the operation share its
        # transaction.
        unit = runtime.db.unit()
        request.state.brandvx_unit = unit
        context.unit = unit
        try:
            context.actor = await runtime.authenticator.authenticate(request.headers, unit)
        except AuthFailure:
            await _limit_anonymous(runtime, request)
            raise
        return context

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        context.actor = await self._ws_actor(context, context.connection_params or {})
        unset: UnsetType = UNSET  # no payload: the ack goes out as {"type": "connection_ack"}
        return unset

    async def refresh_ws_credentials(self, context: Context, payload: Mapping[str, Any]) -> None:
        """A `ping` whose payload has `Authorization` swaps the socket's token for a fresh one of the
        same user and tenant; the socket then lives until the new token expires."""
        previous = context.actor
        refreshed = await self._ws_actor(context, {**(context.connection_params or {}), **payload})
        if previous is not None and (refreshed.user_id, refreshed.tenant_id) != (
            previous.user_id,
            previous.tenant_id,
        ):
            raise ConnectionRefused("invalid token")
        context.actor = refreshed

    async def _ws_actor(self, context: Context, params: Mapping[str, Any]) -> Actor:
        # Browsers cannot set WebSocket headers: credentials come in connection_init's payload
        # (GraphiQL copies its Headers tab there); a handshake header works for other clients.
        handshake = context.request.headers
        headers = {
            "authorization": str(params.get("Authorization") or params.get("authorization") or "")
            or handshake.get("authorization", ""),
            "x-tenant-id": str(params.get("X-Tenant-Id") or params.get("x-tenant-id") or "")
            or handshake.get("x-tenant-id", ""),
        }
        try:
            runtime: Runtime = context.request.app.state.runtime
            return await runtime.authenticator.authenticate(headers)
        except AuthFailure as failure:
            raise ConnectionRefused(failure.reason) from None
        except Exception as exc:
            unavailable = unavailable_error(exc)
            if unavailable is None:
                raise
            # Still 4403 (the protocol's refusal), with a reason: clients retry later.
            raise ConnectionRefused("service unavailable") from None

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Strawberry's, without subscriptions over HTTP: they would start as a query and fail inside
        (INTERNAL); the client is told where they are served instead."""
        allowed = OperationType.from_http(request_adapter.method) - {OperationType.SUBSCRIPTION}
        if request_adapter.method == "GET" and not self.allow_queries_via_get:
            allowed -= {OperationType.QUERY}
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from exc
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise HTTPException(400, SUBSCRIPTIONS_OVER_HTTP) from exc
            raise HTTPException(400, exc.as_http_error_reason(request_adapter.method)) from exc
        except MissingQueryError as exc:
            raise HTTPException(400, "No GraphQL query found in the request") from exc

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        # Parse errors and the token limiter fail before any extension sees the result: code them here,
        # and mask what an extension raised unexpectedly (it never reached MaskErrors).
        if result.errors:
            result.errors = [mask_uncaught(error) for error in result.errors]
        for error in result.errors or ():
            if not (error.extensions or {}).get("code"):
                error.extensions = {**(error.extensions or {}), "code": code_for(error)}
        return await super().process_result(request, result)

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(render_explorer_html())

    def encode_json(self, data: object) -> str:
        # Text, not bytes: over WebSockets Strawberry sends bytes as binary frames, and browser
        # graphql-ws clients only parse text frames.
        return orjson.dumps(data, default=_orjson_default).decode()
