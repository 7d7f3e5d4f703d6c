"""What a provider adapter offers the use cases: the ports each provider implements as it can.

One adapter per provider lives in ``integrations/<provider>/adapter.py`` and is listed once in
``integrations/registry.py``; nothing else asks which provider it is talking to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Literal, Protocol

from domain.model import Provider
from domain.sync import CalendarSource, InventorySource, OAuthClient, TokenSet

ConnectMode = Literal["oauth", "form"]
FieldKind = Literal["text", "email", "password"]
SyncKind = Literal["calendar", "inventory"]


class Capability(Enum):
    CALENDAR = "calendar"
    INVENTORY = "inventory"


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    kind: FieldKind = "text"


@dataclass(frozen=True)
class ConnectForm:
    """A form this API hosts for a provider that takes typed credentials (or a shop name first)."""

    title: str
    fields: tuple[FormField, ...]
    # True: submitting spends the signed link (credentials are checked and stored at once), so a
    # failed attempt needs a new link. False: the form only leads on to the provider's consent page.
    spends_link: bool = True


@dataclass(frozen=True)
class Credentials:
    """Checked credentials from a form, ready to store."""

    tokens: TokenSet
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContinueAt:
    """The form's answer is a redirect to the provider's consent page (the link is not spent)."""

    url: str


FormResult = Credentials | ContinueAt


class ProviderAdapter(Protocol):
    """One provider, as the ports it supports; the defaults say "not supported"."""

    @property
    def provider(self) -> Provider: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    def connect_mode(self) -> ConnectMode | None:
        """How an operator connects on this server: OAuth redirect, our form, or None (not configured)."""
        ...

    def connect_form(self) -> ConnectForm | None: ...

    async def submit_form(self, values: Mapping[str, str], *, state: str, callback_url: str) -> FormResult:
        """Check what the operator typed (raises InvalidInput or ProviderError)."""
        ...

    def oauth(self, config: Mapping[str, str] | None = None) -> OAuthClient | None:
        """The OAuth client for a connection (``config`` as stored), None where there is none."""
        ...

    def verify_callback(self, params: Mapping[str, str]) -> bool:
        """Whether an OAuth callback's own signature (where the provider signs it) is valid."""
        ...

    def callback_config(self, params: Mapping[str, str]) -> dict[str, str]:
        """What an OAuth callback's parameters say about the connection, to store with it."""
        ...

    def grant_problem(self, tokens: TokenSet) -> str | None:
        """Why a granted token cannot be used (e.g. a scope the operator unticked), or None."""
        ...

    def calendar(self, tokens: TokenSet, config: Mapping[str, str]) -> CalendarSource | None: ...

    def inventory(self, tokens: TokenSet, config: Mapping[str, str]) -> InventorySource | None: ...

    @property
    def webhooks(self) -> WebhookVerifier | None: ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------- inbound webhooks


@dataclass(frozen=True)
class InboundWebhook:
    """A webhook request as received: the raw body, lower-cased headers, the query string."""

    body: bytes
    headers: Mapping[str, str]
    query: Mapping[str, str]


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook, read."""

    # The provider's event id, or a digest of what the event is about for providers that send none.
    event_id: str
    # Which sync the event calls for; None: nothing to do (the event is acknowledged and ignored).
    sync: SyncKind | None
    ignore_reason: str = ""
    # Signed creation time, where the provider sends one: older events are refused as replays.
    occurred_at: datetime | None = None
    # Where the provider's event ids repeat, how long an id is remembered; None: for good.
    dedupe_seconds: int | None = None
    # The connected account, where the event names it inside the signed body.
    account_id: str | None = None


class WebhookMalformed(ValueError):
    """A correctly signed body that is not an event of this provider (the message says why)."""


class WebhookVerifier(Protocol):
    """How a provider signs its webhooks.

    ``scheme`` "app": one key for the whole app (the event names its account);
    "account": each connected account's own key (the URL names the account).
    """

    @property
    def scheme(self) -> Literal["app", "account"]: ...

    def configured(self) -> bool:
        """For the "app" scheme: whether this server has the key."""
        ...

    def account_of(self, hook: InboundWebhook) -> str | None:
        """For the "account" scheme: the account the URL names."""
        ...

    def signing_keys(self, tokens: TokenSet, config: Mapping[str, str]) -> tuple[str, ...]:
        """For the "account" scheme: every key a connection's webhooks may be signed with."""
        ...

    def verify(self, hook: InboundWebhook, key: str | None = None) -> bool: ...

    def parse(self, hook: InboundWebhook, account_id: str | None = None) -> WebhookEvent:
        """The event in a verified body; raises WebhookMalformed."""
        ...


class ProviderCatalog(Protocol):
    """The registry as the use cases see it."""

    def adapter(self, provider: Provider) -> ProviderAdapter | None: ...

    def supporting(self, capability: Capability) -> tuple[Provider, ...]: ...
