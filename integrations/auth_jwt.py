"""Bearer-token verification for tokens issued by Supabase Auth.

Two kinds of key are supported, matching what a Supabase project can issue:

* the legacy shared secret (HS256), and
* asymmetric signing keys (RS256 / ES256) published as a JWKS document.

The algorithm a token may use is decided by how the verifier is configured, never by the token
alone: every call into pyjwt gets an explicit one-element ``algorithms`` list, so a token cannot
switch an RSA public key into an HMAC secret (algorithm confusion) or claim ``alg: none``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

import httpx
import jwt
import jwt.exceptions

from domain.text import is_storable_text

__all__ = ["JwtVerifier", "TokenError", "TokenErrorReason", "VerifiedToken", "mint_token"]

logger = logging.getLogger(__name__)

TokenErrorReason = Literal[
    "missing token",
    "malformed token",
    "bad signature",
    "expired",
    "not yet valid",
    "wrong audience",
    "wrong issuer",
    "missing subject",
    "malformed subject",
    "unknown key",
    "unsupported algorithm",
    "authentication unavailable",
]

_HS_ALGORITHM: Final = "HS256"
_JWKS_ALGORITHMS: Final = frozenset({"RS256", "ES256"})
_MIN_SECRET_BYTES: Final = 32
_MAX_LEEWAY_SECONDS: Final = 60
# A token naming a kid we do not know may mean the keys were rotated, so we refetch -- but at most this
# often, otherwise anyone can make us hammer the JWKS endpoint by sending tokens with random kids.
_UNKNOWN_KID_REFETCH_SECONDS: Final = 30.0
# After a failed fetch, wait before trying again so an outage of the JWKS endpoint does not turn every
# request into a slow outbound call.
_FETCH_FAILURE_BACKOFF_SECONDS: Final = 5.0
_FETCH_TIMEOUT_SECONDS: Final = 5.0
_MAX_JWKS_BYTES: Final = 256 * 1024
# Real access tokens are a few hundred bytes; refuse to base64-decode megabytes of attacker input.
_MAX_TOKEN_CHARS: Final = 16 * 1024


@dataclass(frozen=True)
class VerifiedToken:
    user_id: str
    email: str | None
    # Excluded from repr so logging a VerifiedToken does not dump every claim (email, metadata).
    claims: Mapping[str, Any] = field(repr=False, hash=False)


class TokenError(Exception):
    """A token was refused. ``reason`` is short and safe to return to the client or to log."""

    def __init__(self, reason: TokenErrorReason) -> None:
        super().__init__(reason)
        self.reason: TokenErrorReason = reason


class _JwksUnavailable(Exception):
    pass


class JwtVerifier:
    def __init__(
        self,
        *,
        hs256_secret: str | None,
        jwks_url: str | None,
        audience: str = "authenticated",
        leeway_seconds: int = 60,
        http_client: httpx.AsyncClient | None = None,
        jwks_cache_seconds: int = 600,
        allow_weak_secret: bool = False,
        issuer: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Settings often surface an unset variable as "", which must not count as a configured key.
        hs256_secret = hs256_secret or None
        jwks_url = jwks_url or None
        if hs256_secret is None and jwks_url is None:
            raise ValueError("JwtVerifier needs hs256_secret, jwks_url, or both")
        if hs256_secret is not None:
            secret_bytes = len(hs256_secret.encode("utf-8"))
            if secret_bytes < _MIN_SECRET_BYTES and not allow_weak_secret:
                raise ValueError(
                    f"BRANDVX_JWT_SECRET must be at least {_MIN_SECRET_BYTES} bytes (got {secret_bytes}); "
                    "use the project's JWT secret, or allow_weak_secret for local development only"
                )
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        if jwks_cache_seconds <= 0:
            raise ValueError("jwks_cache_seconds must be positive")

        self._secret = hs256_secret
        self._allow_weak_secret = allow_weak_secret
        self._jwks_url = jwks_url
        self._audience = audience
        self._issuer = issuer
        self._leeway = min(leeway_seconds, _MAX_LEEWAY_SECONDS)
        self._jwks_cache_seconds = float(jwks_cache_seconds)
        self._clock = clock  # monotonic seconds; tests pass a clock they move by hand

        self._client = http_client
        self._owns_client = http_client is None
        self._lock = asyncio.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_expire_at = -math.inf
        self._last_fetch_failed = False
        self._no_fetch_before = -math.inf
        self._last_unknown_kid_refetch = -math.inf
        self._fetch_attempts = 0

    async def aclose(self) -> None:
        """Close the HTTP client if this verifier created it; an injected client belongs to the caller."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def verify(self, token: str) -> VerifiedToken:
        if not token or not token.strip():
            raise TokenError("missing token")
        if len(token) > _MAX_TOKEN_CHARS:
            raise TokenError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None

        alg = header.get("alg")
        key: str | jwt.PyJWK
        if alg == _HS_ALGORITHM and self._secret is not None:
            key = self._secret
            enforce_key_length = not self._allow_weak_secret
        elif isinstance(alg, str) and alg in _JWKS_ALGORITHMS and self._jwks_url is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise TokenError("unknown key")
            key = await self._jwks_key(kid)
            if key.algorithm_name != alg:
                # e.g. an RS256 header naming an EC key's kid.
                raise TokenError("unsupported algorithm")
            enforce_key_length = True
        else:
            raise TokenError("unsupported algorithm")

        claims = self._decode(token, key, alg, enforce_key_length=enforce_key_length)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise TokenError("missing subject")
        if not is_storable_text(sub):
            raise TokenError("malformed subject")  # a NUL cannot be stored or compared in PostgreSQL
        email = claims.get("email")
        return VerifiedToken(
            user_id=sub,
            email=email if isinstance(email, str) and email and is_storable_text(email) else None,
            claims=MappingProxyType(claims),
        )

    def _decode(
        self, token: str, key: str | jwt.PyJWK, alg: str, *, enforce_key_length: bool
    ) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp"], "enforce_minimum_key_length": enforce_key_length},
            )
        except jwt.PyJWTError as exc:
            # `from None`: pyjwt messages are not all vetted as free of token material.
            raise TokenError(_reason_for(exc)) from None

    async def _jwks_key(self, kid: str) -> jwt.PyJWK:
        key = self._fresh_key(kid)
        if key is not None:
            return key
        attempts_seen = self._fetch_attempts
        async with self._lock:
            key = self._fresh_key(kid)
            if key is not None:
                return key
            # If a fetch ran while we queued on the lock, its outcome is ours too: do not fetch again,
            # or a slow or failing endpoint would be called once per waiting request.
            if self._fetch_attempts == attempts_seen and self._may_fetch_now():
                await self._refresh()
            key = self._keys.get(kid)
            if key is not None:
                # May be past its cache lifetime if the refresh failed; a stale published key beats
                # refusing every user during a JWKS outage.
                return key
            if self._last_fetch_failed:
                raise TokenError("authentication unavailable")
            raise TokenError("unknown key")

    def _fresh_key(self, kid: str) -> jwt.PyJWK | None:
        if self._clock() >= self._keys_expire_at:
            return None
        return self._keys.get(kid)

    def _may_fetch_now(self) -> bool:
        now = self._clock()
        if now < self._no_fetch_before:
            return False
        if now >= self._keys_expire_at:
            return True
        # The cached set is fresh but lacks the kid: a rotation is possible, so refetch, rate-limited.
        return now - self._last_unknown_kid_refetch >= _UNKNOWN_KID_REFETCH_SECONDS

    async def _refresh(self) -> None:
        now = self._clock()
        if now < self._keys_expire_at:
            self._last_unknown_kid_refetch = now
        self._fetch_attempts += 1
        try:
            keys = await self._fetch_keys()
        except _JwksUnavailable:
            self._last_fetch_failed = True
            self._no_fetch_before = self._clock() + _FETCH_FAILURE_BACKOFF_SECONDS
            return
        self._keys = keys
        self._keys_expire_at = self._clock() + self._jwks_cache_seconds
        self._last_fetch_failed = False

    async def _fetch_keys(self) -> dict[str, jwt.PyJWK]:
        assert self._jwks_url is not None
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=_FETCH_TIMEOUT_SECONDS)
        try:
            response = await self._client.get(self._jwks_url, headers={"Accept": "application/json"})
            response.raise_for_status()
            if len(response.content) > _MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
            document = response.json()
            if not isinstance(document, dict):
                raise ValueError("JWKS document is not a JSON object")
            jwk_set = jwt.PyJWKSet.from_dict(document)
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            logger.warning("JWKS fetch from %s failed: %s", self._jwks_url, type(exc).__name__)
            raise _JwksUnavailable from exc

        keys = {
            jwk.key_id: jwk
            for jwk in jwk_set.keys
            if jwk.key_id and jwk.algorithm_name in _JWKS_ALGORITHMS and jwk.public_key_use in (None, "sig")
        }
        if not keys:
            logger.warning("JWKS from %s has no usable RS256/ES256 signing key with a kid", self._jwks_url)
            raise _JwksUnavailable
        return keys


def _reason_for(exc: jwt.PyJWTError) -> TokenErrorReason:
    # Subclasses before their bases: ExpiredSignatureError etc. all derive from InvalidTokenError.
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "not yet valid"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(exc, jwt.exceptions.InvalidSubjectError):
        return "missing subject"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        if exc.claim == "aud":
            return "wrong audience"
        if exc.claim == "iss":
            return "wrong issuer"
        return "malformed token"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "unsupported algorithm"
    if isinstance(exc, jwt.InvalidKeyError):
        return "unknown key"
    return "malformed token"


def mint_token(
    secret: str,
    *,
    user_id: str,
    email: str | None = None,
    ttl_seconds: int = 3600,
    audience: str = "authenticated",
    extra: Mapping[str, Any] | None = None,
) -> str:
    """An HS256 token shaped like a Supabase access token, for development and tests.

    ``extra`` is applied last, so it can override any standard claim (e.g. ``iss`` or ``role``).
    A negative ``ttl_seconds`` yields an already-expired token.
    """
    if not user_id:
        raise ValueError("user_id must not be empty")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_seconds,
        "role": "authenticated",
    }
    if email is not None:
        claims["email"] = email
    if extra:
        claims.update(extra)
    return jwt.encode(claims, secret, algorithm=_HS_ALGORITHM)
