"""The one HTTP layer every provider call goes through: timeouts, retries with backoff, Retry-After,
a circuit breaker, and errors classified for the job runner (``domain.sync.ProviderError``)."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from domain.sync import ProviderError

log = logging.getLogger("brandvx.integrations.http")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for the attempt that just failed (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive transient failures; one trial call passes after ``cooldown``."""

    threshold: int = 5
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _failures: int = 0
    _opened_at: float | None = field(default=None, repr=False)

    def allow(self) -> bool:
        return self.remaining() == 0.0

    def remaining(self) -> float:
        """Seconds until a trial call may pass (0 when closed)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (self.clock() - self._opened_at))

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def failure(self) -> None:
        self._failures += 1
        if self._failures >= self.threshold:
            self._opened_at = self.clock()


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)  # "120", and Shopify's "2.0"
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _release_stream(response: httpx.Response) -> None:
    """Let a read response be freed by reference counting as soon as its last user drops it.

    httpx binds a response and its stream to each other (``BoundAsyncStream``): a reference cycle,
    so the response and its body wait for the cyclic garbage collector, and one held while more
    work runs is promoted to the oldest generation, which is collected only now and then. Shopify's
    product pages (~400 KB each) piled up that way in the worker, +0.35 MB a page until a full
    collection. The body is already read; a plain stream over it serves every later read the same.
    """
    response.stream = httpx.ByteStream(response.content)


def classify(response: httpx.Response, provider: str) -> ProviderError | None:
    status = response.status_code
    if status < 400:
        return None
    if status == 429:
        return ProviderError(
            "rate_limited",
            f"{provider} is rate limiting requests",
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if status >= 500 or status == 408:
        return ProviderError(
            "transient",
            f"{provider} had a temporary error (HTTP {status})",
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if status == 401:
        return ProviderError(
            "auth", f"{provider} refused the connection's credentials (HTTP 401)", status=status
        )
    return ProviderError("permanent", f"{provider} rejected the request (HTTP {status})", status=status)


class ProviderHttp:
    def __init__(
        self,
        provider: str,
        *,
        base_url: str,
        timeout: float = 20.0,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.provider = provider
        self._retry = retry or RetryPolicy()
        self._breaker = breaker or CircuitBreaker()
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        if client is not None and base_url:
            self._client.base_url = httpx.URL(base_url)
        self._sleep = sleep

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> httpx.Response:
        """Send with retries; return a < 400 response or raise ProviderError."""
        last: ProviderError | None = None
        for attempt in range(1, self._retry.attempts + 1):
            if not self._breaker.allow():
                # retry_after tells the job runner to come back when calls may pass again.
                raise ProviderError(
                    "transient",
                    f"{self.provider} is failing; calls are paused for a while (circuit open)",
                    retry_after=self._breaker.remaining(),
                )
            try:
                response = await self._client.request(
                    method, url, headers=headers, params=params, json=json, data=data, auth=auth
                )
            except httpx.TimeoutException:
                last = ProviderError("transient", f"{self.provider} did not answer in time")
            except httpx.TransportError:
                last = ProviderError("transient", f"{self.provider} could not be reached")
            else:
                _release_stream(response)
                error = classify(response, self.provider)
                if error is None:
                    self._breaker.success()
                    return response
                last = error
                if error.kind in ("auth", "permanent"):
                    # The provider answered: it is up, the request is the problem.
                    self._breaker.success()
                    log.info(
                        "%s %s %s -> %s",
                        self.provider,
                        method,
                        response.request.url.path,
                        response.status_code,
                    )
                    raise error
            self._breaker.failure()
            if attempt == self._retry.attempts:
                break
            delay = last.retry_after if last.retry_after is not None else self._retry.backoff(attempt)
            delay = min(delay, self._retry.max_delay)
            log.info(
                "%s %s %s failed (%s); retry %d in %.1fs",
                self.provider,
                method,
                url,
                last.kind,
                attempt,
                delay,
            )
            await self._sleep(delay)
        assert last is not None
        raise last
