"""What AskVX needs from a language model. ``integrations`` implements it (OpenAI, offline)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

ChatRoleName = Literal["system", "user", "assistant"]
ModelErrorKind = Literal["timeout", "provider", "refused", "cut"]


@dataclass(frozen=True)
class PromptMessage:
    role: ChatRoleName
    content: str


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Usage:
    """Token counts as the provider reports them at the end of a reply."""

    input_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


class ModelError(Exception):
    """A reply that could not be produced. ``message`` is readable and safe to show the operator."""

    def __init__(self, kind: ModelErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ModelErrorKind = kind
        self.message = message


class ChatModel(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def offline(self) -> bool:
        """True for the stand-in used when no provider is configured."""
        ...

    def stream(
        self, messages: Sequence[PromptMessage], *, max_output_tokens: int | None = None
    ) -> AsyncIterator[TextDelta | Usage]:
        """Yield text deltas as they arrive, then exactly one Usage; raise ModelError on failure."""
        ...


@dataclass(frozen=True)
class ReplyEvent:
    """One step of a streamed reply; ``text`` is everything so far."""

    delta: str
    text: str
    done: bool
    error: str | None = None


class ReplyFeed(Protocol):
    def follow(self, message_id: str, *, idle_seconds: float) -> AsyncIterator[ReplyEvent | None]:
        """Everything produced so far, then live deltas until done; None after idle_seconds of silence."""
        ...


class Analytics(Protocol):
    """Product analytics. Callers pass ids and counts only: never message text or contact details."""

    def capture(
        self, distinct_id: str, event: str, properties: dict[str, str | int | float | bool]
    ) -> None: ...
