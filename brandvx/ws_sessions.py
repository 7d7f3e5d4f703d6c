"""graphql-transport-ws connections that end with their credentials.

Strawberry authenticates a socket once, at ``connection_init``. Here each open socket is tracked
per process so that it can be ended later with a reason the client can act on:

* its JWT expires → 4403 ``token expired`` (the client reconnects with a fresh token, or sends one
  before then as a ``ping`` payload ``{"Authorization": "Bearer …"}``: same user and tenant only);
* its API key is revoked (in any process: revocations come through Redis) → 4403 ``key revoked``;
* the server shuts down → 1001 ``server shutting down``;
* a message larger than the HTTP body limit → 1009 ``message too big``.

A refused ``connection_init`` keeps the protocol's 4403 and says why (``invalid token``, ``token
expired``, ``key revoked``, ``unknown tenant``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator
from contextlib import suppress
from datetime import UTC, datetime
from json import JSONDecodeError
from typing import TYPE_CHECKING, Any, Final

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage, PingMessage

from resolvers.context import Context

if TYPE_CHECKING:
    from strawberry.http.async_base_view import AsyncBaseHTTPView

log = logging.getLogger("brandvx.ws")

FORBIDDEN: Final = 4403  # graphql-transport-ws: connection_init refused
GOING_AWAY: Final = 1001
MESSAGE_TOO_BIG: Final = 1009
SHUTDOWN_CLOSE_SECONDS: Final = 2.0


class ConnectionRefused(Exception):
    """Raised by ``on_ws_connect``: the socket closes with 4403 and this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OpenSockets:
    """The graphql-transport-ws connections this process serves (one registry per app)."""

    def __init__(self) -> None:
        self._handlers: set[TransportWSHandler] = set()

    def __len__(self) -> int:
        return len(self._handlers)

    def add(self, handler: TransportWSHandler) -> None:
        self._handlers.add(handler)

    def discard(self, handler: TransportWSHandler) -> None:
        self._handlers.discard(handler)

    async def close_api_key(self, key_id: uuid.UUID) -> int:
        """Close every connection authenticated with this key; how many there were."""
        matching = [h for h in self._handlers if h.api_key_id == key_id]
        await asyncio.gather(*(h.close(FORBIDDEN, "key revoked") for h in matching))
        if matching:
            log.info("closed %d WebSocket(s) of a revoked API key", len(matching))
        return len(matching)

    async def close_all(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        handlers = list(self._handlers)
        if not handlers:
            return
        log.info("closing %d WebSocket(s): %s", len(handlers), reason)
        with suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_CLOSE_SECONDS):
                await asyncio.gather(*(h.close(code, reason) for h in handlers))


class LimitedWebSocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's adapter, with the HTTP body limit applied to each incoming message."""

    def __init__(
        self,
        view: AsyncBaseHTTPView[Any, Any, Any, Any, Any, Any, Any],
        request: WebSocket,
        response: WebSocket,
    ) -> None:
        super().__init__(view, request, response)
        self._max_bytes: int = getattr(view, "max_message_bytes", 1_048_576)

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object, None]:
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                # A character is at most 4 UTF-8 bytes: encode only texts that may be too big.
                if len(text) * 4 > self._max_bytes and len(text.encode()) > self._max_bytes:
                    await self.close(MESSAGE_TOO_BIG, "message too big")
                    return
                try:
                    yield self.view.decode_json(text)
                except JSONDecodeError as e:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from e
        except KeyError as e:
            raise NonTextMessageReceived from e
        except WebSocketDisconnect:
            pass


def _has_authorization(payload: dict[str, Any]) -> bool:
    return any(isinstance(k, str) and k.lower() == "authorization" for k in payload)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler, registered in the view's ``OpenSockets``."""

    _expiry: asyncio.Task[None] | None = None

    @property
    def api_key_id(self) -> uuid.UUID | None:
        actor = self.context.actor
        return actor.api_key_id if actor is not None else None

    async def handle(self) -> None:
        sockets: OpenSockets = getattr(self.view, "sockets")  # noqa: B009 - the view is typed generically
        sockets.add(self)
        try:
            await super().handle()
        finally:
            sockets.discard(self)
            if self._expiry is not None:
                self._expiry.cancel()

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except ConnectionRefused as refused:
            await self.close(FORBIDDEN, refused.reason)
            return
        if self.connection_acknowledged:
            self._arm_expiry()

    async def handle_ping(self, message: PingMessage) -> None:
        payload = message.get("payload")
        if self.connection_acknowledged and isinstance(payload, dict) and _has_authorization(payload):
            refresh = getattr(self.view, "refresh_ws_credentials")  # noqa: B009 - typed generically
            try:
                await refresh(self.context, payload)
            except ConnectionRefused as refused:
                await self.close(FORBIDDEN, refused.reason)
                return
            self._arm_expiry()
        await super().handle_ping(message)

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        actor = self.context.actor
        if actor is not None and actor.expires_at is not None:
            self._expiry = asyncio.create_task(self._close_at(actor.expires_at), name="ws-token-expiry")

    async def _close_at(self, expires_at: datetime) -> None:
        await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()))
        await self.close(FORBIDDEN, "token expired")

    async def close(self, code: int, reason: str) -> None:
        # The socket may already be closing (the client left, or another reason came first).
        with suppress(RuntimeError, WebSocketDisconnect, OSError):
            await self.websocket.close(code=code, reason=reason)
