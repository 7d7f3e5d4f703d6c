"""One Square API call: headers, the shared ``ProviderHttp`` (timeouts, retries, breaker), and
Square's error body turned into a ``ProviderError`` an operator can read.

Square answers errors as ``{"errors": [{"category", "code", "detail"}]}`` (older OAuth answers as
``{"type", "message"}``). Messages keep only the codes: ``detail`` can quote ids, emails or tokens.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Mapping
from typing import Any, Final

import httpx

from domain.sync import ProviderError
from integrations.http import ProviderHttp

__all__ = ["AUTH_CODES", "PROVIDER_NAME", "SquareApi", "error_codes", "explain"]

PROVIDER_NAME: Final = "Square"
# Codes that mean the token (or the app) is refused for good, whatever the HTTP status.
AUTH_CODES: Final = frozenset(
    {"UNAUTHORIZED", "ACCESS_TOKEN_EXPIRED", "ACCESS_TOKEN_REVOKED", "CLIENT_DISABLED"}
)
_SAFE_CODE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_MAX_CODES: Final = 3


def error_codes(response: httpx.Response) -> tuple[str, ...]:
    try:
        body = response.json()
    except ValueError:
        return ()
    if not isinstance(body, dict):
        return ()
    found: list[str] = []
    errors = body.get("errors")
    for error in errors if isinstance(errors, list) else []:
        code = error.get("code") if isinstance(error, dict) else None
        if isinstance(code, str) and _SAFE_CODE.fullmatch(code) and code not in found:
            found.append(code)
    legacy = body.get("type")
    if not found and isinstance(legacy, str) and _SAFE_CODE.fullmatch(legacy):
        found.append(legacy)
    return tuple(found[:_MAX_CODES])


class _SquareAuth(httpx.Auth):
    """Sets the Authorization header and keeps the error codes of the last response seen.

    An ``httpx.Auth`` sees every response of the calls ``ProviderHttp`` retries, which is the only
    place the body of a refused call is available before it becomes a ``ProviderError``.
    """

    requires_response_body = True

    def __init__(self, authorization: str | None) -> None:
        self._authorization = authorization
        self.codes: tuple[str, ...] = ()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._authorization is not None:
            request.headers["Authorization"] = self._authorization
        response = yield request
        self.codes = error_codes(response) if response.status_code >= 400 else ()


def explain(
    error: ProviderError, codes: tuple[str, ...], what: str, *, credential: str = "the access token"
) -> ProviderError:
    shown = ", ".join(codes)
    kind = error.kind
    if kind == "permanent" and AUTH_CODES.intersection(codes):
        kind = "auth"
    if kind == "auth":
        message = f"Square refused {credential} while {what}" + (f" ({shown})" if shown else "")
    elif kind == "permanent":
        status = f"HTTP {error.status}" if error.status is not None else "no status"
        message = f"Square rejected the request while {what} ({status}" + (f": {shown})" if shown else ")")
    else:
        message = f"{error.message} while {what}" + (f" ({shown})" if shown else "")
    return ProviderError(kind, message, status=error.status, retry_after=error.retry_after)


class SquareApi:
    def __init__(self, http: ProviderHttp, *, square_version: str) -> None:
        self._http = http
        self.square_version = square_version

    async def call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        authorization: str | None,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        credential: str = "the access token",
    ) -> dict[str, Any]:
        """Send one request; return the decoded JSON object or raise ``ProviderError``."""
        auth = _SquareAuth(authorization)
        headers = {"Square-Version": self.square_version, "Accept": "application/json"}
        try:
            response = await self._http.request(
                method, path, headers=headers, params=params, json=json, auth=auth
            )
        except ProviderError as error:
            raise explain(error, auth.codes, what, credential=credential) from error
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ProviderError(
                "transient", f"Square sent an unreadable answer while {what}", status=response.status_code
            )
        return body
