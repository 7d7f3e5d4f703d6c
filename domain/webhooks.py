"""Inbound provider webhooks: verified with the provider's scheme, refused when replayed, handed to a sync.

The adapter's ``WebhookVerifier`` knows the signature and the body; this module decides what happens:
which tenants an event is for, whether it was seen before, and which sync it starts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from domain.model import Provider
from domain.providers import (
    InboundWebhook,
    SyncKind,
    WebhookEvent,
    WebhookMalformed,
    WebhookVerifier,
)
from domain.sync import TokenSet
from domain.text import is_storable_text

WEBHOOK_MAX_AGE = timedelta(minutes=5)

Verdict = Literal[
    "accepted", "duplicate", "ignored", "unauthorized", "malformed", "unconfigured", "unverified"
]
# An account-signed webhook none of the connection's keys verifies (an OAuth connection never sees
# the account API key Acuity signs with) is still a nudge: it only starts a sync that re-reads the
# provider through the authenticated API, applying nothing from the body, at most once this often
# per connection.
UNVERIFIED_NUDGE_SECONDS = 60


@dataclass(frozen=True)
class WebhookAnswer:
    verdict: Verdict
    message: str = ""
    event_id: str | None = None
    job_ids: list[str] = field(default_factory=list)


class WebhookInbox(Protocol):
    """What handling a webhook needs from storage and the job queue."""

    async def tenants_for_account(self, provider: Provider, account_id: str) -> list[uuid.UUID]: ...

    async def credentials(
        self, tenant_id: uuid.UUID, provider: Provider
    ) -> tuple[TokenSet, Mapping[str, str]] | None: ...

    async def first_seen(self, provider: Provider, event_id: str, *, window_seconds: int | None) -> bool:
        """Record the event id; False when it was already recorded (within the window, if any)."""
        ...

    async def forget(self, provider: Provider, event_id: str, *, window_seconds: int | None) -> None: ...

    async def allow_unverified(self, tenant_id: uuid.UUID, provider: Provider, *, every_seconds: int) -> bool:
        """Take the connection's slot for an unverified nudge; False while the last one is recent."""
        ...

    async def request_sync(self, tenant_id: uuid.UUID, provider: Provider, kind: SyncKind) -> str:
        """The id of the job that covers it (a running one of the same kind, or a new one)."""
        ...


async def receive(
    provider: Provider,
    verifier: WebhookVerifier,
    hook: InboundWebhook,
    inbox: WebhookInbox,
    *,
    now: datetime | None = None,
) -> WebhookAnswer:
    if verifier.scheme == "app":
        if not verifier.configured():
            return WebhookAnswer("unconfigured", f"{provider.value.title()} webhooks are not configured")
        if not verifier.verify(hook):
            return WebhookAnswer("unauthorized", "invalid signature")
        try:
            event = verifier.parse(hook)
        except WebhookMalformed as exc:
            return WebhookAnswer("malformed", str(exc))
        if refused := _unstorable(event):
            return refused
        moment = now or datetime.now(UTC)
        if event.occurred_at is not None and abs(moment - event.occurred_at) > WEBHOOK_MAX_AGE:
            return WebhookAnswer("malformed", "stale event (replayed?)")
        tenants = await inbox.tenants_for_account(provider, event.account_id) if event.account_id else []
        if not await inbox.first_seen(provider, event.event_id, window_seconds=event.dedupe_seconds):
            return WebhookAnswer("duplicate", event_id=event.event_id)
        if not tenants:
            return WebhookAnswer("ignored", "unknown merchant")
    else:
        account = verifier.account_of(hook)
        if account and not is_storable_text(account):
            return WebhookAnswer("malformed", "the account id must be plain text")
        tenants = await _signed_by(provider, verifier, hook, inbox, account) if account else []
        if not tenants:
            # The same answer for an unknown account as for an unverifiable nudge: no enumeration.
            await _nudge_unverified(provider, verifier, hook, inbox, account)
            return WebhookAnswer("unverified")
        try:
            event = verifier.parse(hook, account)
        except WebhookMalformed as exc:
            return WebhookAnswer("malformed", str(exc))
        if refused := _unstorable(event):
            return refused
        if not await inbox.first_seen(provider, event.event_id, window_seconds=event.dedupe_seconds):
            return WebhookAnswer("duplicate")
    return await _hand_on(provider, event, tenants, inbox)


async def _nudge_unverified(
    provider: Provider,
    verifier: WebhookVerifier,
    hook: InboundWebhook,
    inbox: WebhookInbox,
    account: str | None,
) -> None:
    if not account or not is_storable_text(account):
        return
    try:
        event = verifier.parse(hook, account)
    except WebhookMalformed:
        return
    if event.sync is None:
        return
    for tenant_id in await inbox.tenants_for_account(provider, account):
        if await inbox.allow_unverified(tenant_id, provider, every_seconds=UNVERIFIED_NUDGE_SECONDS):
            await inbox.request_sync(tenant_id, provider, event.sync)


def _unstorable(event: WebhookEvent) -> WebhookAnswer | None:
    ids = [event.event_id, *([event.account_id] if event.account_id else [])]
    if all(is_storable_text(value) for value in ids):
        return None
    return WebhookAnswer("malformed", "event and account ids must be plain text")


async def _signed_by(
    provider: Provider, verifier: WebhookVerifier, hook: InboundWebhook, inbox: WebhookInbox, account: str
) -> list[uuid.UUID]:
    """The tenants connected to the account whose key signed this body."""
    verified: list[uuid.UUID] = []
    for tenant_id in await inbox.tenants_for_account(provider, account):
        found = await inbox.credentials(tenant_id, provider)
        if found is None:
            continue
        if any(verifier.verify(hook, key) for key in verifier.signing_keys(*found)):
            verified.append(tenant_id)
    return verified


async def _hand_on(
    provider: Provider, event: WebhookEvent, tenants: list[uuid.UUID], inbox: WebhookInbox
) -> WebhookAnswer:
    if event.sync is None:
        return WebhookAnswer("ignored", event.ignore_reason)
    try:
        job_ids = [await inbox.request_sync(tenant, provider, event.sync) for tenant in tenants]
    except Exception:
        # Not handed on: forget the event so the provider's retry is processed, not refused as a duplicate.
        await inbox.forget(provider, event.event_id, window_seconds=event.dedupe_seconds)
        raise
    return WebhookAnswer("accepted", job_ids=job_ids)
