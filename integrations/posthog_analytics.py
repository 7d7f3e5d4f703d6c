"""PostHog product analytics behind the domain's Analytics port."""

from __future__ import annotations

import logging

from posthog import Posthog

log = logging.getLogger("brandvx.analytics")


class PostHogAnalytics:
    def __init__(self, *, api_key: str, host: str) -> None:
        # The client queues events and sends them from its own thread; it never blocks a request.
        self._client = Posthog(api_key, host=host, disable_geoip=True)

    def capture(self, distinct_id: str, event: str, properties: dict[str, str | int | float | bool]) -> None:
        try:
            self._client.capture(event, distinct_id=distinct_id, properties=properties)
        except Exception:
            log.warning("analytics event %s dropped", event, exc_info=True)

    def shutdown(self) -> None:
        self._client.shutdown()


class NoAnalytics:
    def capture(self, distinct_id: str, event: str, properties: dict[str, str | int | float | bool]) -> None:
        return None

    def shutdown(self) -> None:
        return None
