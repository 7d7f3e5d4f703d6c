"""Google API plumbing shared by the OAuth client and the calendar source: error bodies observed
through ``httpx.Auth``, their classification, and request/response helpers."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from domain.sync import ProviderError

_RATE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"}
)


class _Observer(httpx.Auth):
    """Adds the bearer token (when there is one) and keeps the body of the last error response."""

    requires_response_body = True

    def __init__(self, bearer: str | None = None) -> None:
        self._bearer = bearer
        self.error_body: dict[str, Any] | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._bearer is not None:
            request.headers["Authorization"] = f"Bearer {self._bearer}"
        response = yield request
        self.error_body = None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                return
            if isinstance(body, dict):
                self.error_body = body

    @property
    def oauth_error(self) -> str | None:
        """The token endpoint's ``error`` code (RFC 6749 section 5.2)."""
        code = (self.error_body or {}).get("error")
        return code if isinstance(code, str) else None

    @property
    def reasons(self) -> set[str]:
        """The ``error.errors[].reason`` values of a Google API error."""
        error = (self.error_body or {}).get("error")
        details = error.get("errors") if isinstance(error, dict) else None
        if not isinstance(details, list):
            return set()
        return {d["reason"] for d in details if isinstance(d, dict) and isinstance(d.get("reason"), str)}


class _SyncTokenExpired(Exception):
    pass


def _events_url(api_base: str, calendar_id: str) -> str:
    return f"{api_base}/calendar/v3/calendars/{quote(calendar_id, safe='')}/events"


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _time_param(value: datetime, *, up: bool) -> str:
    """RFC 3339 in UTC to the second, rounded outward so the range never shrinks."""
    seconds = value.timestamp()
    whole = math.ceil(seconds) if up else math.floor(seconds)
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderError("transient", f"{what} sent a response that is not a JSON object")
    return body


def _id_token_claims(id_token: object, *, audience: str) -> dict[str, Any]:
    """The claims of Google's ID token, read WITHOUT checking its signature.

    Sound only for a token in the response to our own TLS call to Google's token endpoint,
    authenticated with the client secret: OpenID Connect Core 3.1.3.7 lets TLS server validation
    stand in for the signature there. Never call this on a token that came from a browser.
    """
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return {}
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return {}
    if not isinstance(claims, dict) or claims.get("aud") != audience:
        return {}
    return claims


def _token_failure(error: ProviderError, oauth_error: str | None, grant_type: str) -> ProviderError:
    status = error.status
    if oauth_error == "invalid_grant":
        if grant_type == "refresh_token":
            message = "Google no longer accepts this connection (access was revoked or expired); reconnect"
        else:
            message = "Google did not accept the authorization code (expired or already used); try again"
        return ProviderError("auth", message, status=status)
    if oauth_error in ("invalid_client", "unauthorized_client"):
        return ProviderError("permanent", "Google rejected BrandVX's OAuth client credentials", status=status)
    if oauth_error == "redirect_uri_mismatch":
        return ProviderError(
            "permanent",
            "Google rejected the OAuth redirect URI (not registered for the client)",
            status=status,
        )
    if oauth_error and error.kind == "permanent":
        return ProviderError(
            "permanent", f"Google's token endpoint refused the request ({oauth_error})", status=status
        )
    return error


def _api_failure(error: ProviderError, observer: _Observer) -> ProviderError:
    reasons = observer.reasons
    if error.status == 403 and reasons & _RATE_LIMIT_REASONS:
        return ProviderError(
            "rate_limited",
            "Google Calendar usage limits were exceeded",
            status=403,
            retry_after=error.retry_after,
        )
    if error.status == 403 and reasons & {"insufficientPermissions", "forbidden"}:
        return ProviderError(
            "permanent", "The Google account has not granted BrandVX access to this calendar", status=403
        )
    if error.status == 404:
        return ProviderError("permanent", "Google Calendar could not find the calendar or event", status=404)
    return error
