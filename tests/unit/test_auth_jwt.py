"""JwtVerifier against real keys and a real JWKS HTTP server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from integrations.auth_jwt import JwtVerifier, TokenError, VerifiedToken, mint_token

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
AUDIENCE = "authenticated"


# --- keys and JWKS server -------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    rsa_private: rsa.RSAPrivateKey
    ec_private: ec.EllipticCurvePrivateKey
    rsa_kid: str = "rsa-1"
    ec_kid: str = "ec-1"

    def jwk(self, which: str, kid: str | None = None) -> dict[str, Any]:
        if which == "rsa":
            data = json.loads(RSAAlgorithm.to_jwk(self.rsa_private.public_key()))
            data.update(kid=kid or self.rsa_kid, alg="RS256", use="sig")
        else:
            data = json.loads(ECAlgorithm.to_jwk(self.ec_private.public_key()))
            data.update(kid=kid or self.ec_kid, alg="ES256", use="sig")
        assert isinstance(data, dict)
        return data

    def rsa_public_pem(self) -> bytes:
        return self.rsa_private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        rsa_private=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec_private=ec.generate_private_key(ec.SECP256R1()),
    )


@dataclass
class JwksServer:
    url: str
    document: dict[str, Any]
    status: int = 200
    body_override: bytes | None = None
    _requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def _count(self) -> None:
        with self._lock:
            self._requests += 1


@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[JwksServer]:
    state: JwksServer | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert state is not None
            state._count()
            body = state.body_override
            if body is None:
                body = json.dumps(state.document).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    state = JwksServer(
        url=f"http://127.0.0.1:{port}/auth/v1/.well-known/jwks.json",
        document={"keys": [keys.jwk("rsa"), keys.jwk("ec")]},
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/jwks.json"


MakeVerifier = Callable[..., JwtVerifier]


class ManualClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def make_verifier() -> AsyncIterator[MakeVerifier]:
    created: list[JwtVerifier] = []

    def make(**kwargs: Any) -> JwtVerifier:
        kwargs.setdefault("hs256_secret", None)
        kwargs.setdefault("jwks_url", None)
        verifier = JwtVerifier(**kwargs)
        created.append(verifier)
        return verifier

    yield make
    for verifier in created:
        await verifier.aclose()


# --- token helpers --------------------------------------------------------------------------------


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "user-123",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 3600,
        "email": "ana@example.com",
        "role": "authenticated",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made_token(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """Build a token pyjwt would refuse to sign (alg none, an HMAC keyed with a PEM)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _rs256(keys: Keys, kid: str | None = None, **overrides: Any) -> str:
    return jwt.encode(
        _claims(**overrides), keys.rsa_private, algorithm="RS256", headers={"kid": kid or keys.rsa_kid}
    )


def _es256(keys: Keys, kid: str | None = None, **overrides: Any) -> str:
    return jwt.encode(
        _claims(**overrides), keys.ec_private, algorithm="ES256", headers={"kid": kid or keys.ec_kid}
    )


async def _reason(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(TokenError) as info:
        await verifier.verify(token)
    return info.value.reason


# --- HS256 ----------------------------------------------------------------------------------------


async def test_hs256_token_verifies(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(hs256_secret=SECRET)
    token = mint_token(SECRET, user_id="user-123", email="ana@example.com")

    verified = await verifier.verify(token)

    assert verified.user_id == "user-123"
    assert verified.email == "ana@example.com"
    assert verified.claims["role"] == "authenticated"
    assert verified.claims["aud"] == AUDIENCE


async def test_claims_are_read_only_and_kept_out_of_repr(make_verifier: MakeVerifier) -> None:
    verified = await make_verifier(hs256_secret=SECRET).verify(
        mint_token(SECRET, user_id="u1", email="ana@example.com")
    )

    with pytest.raises(TypeError):
        verified.claims["sub"] = "someone-else"  # type: ignore[index]
    assert "role" not in repr(verified)
    assert isinstance(verified, VerifiedToken)


async def test_wrong_secret_is_bad_signature(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(hs256_secret=SECRET)
    token = mint_token("another-secret-of-at-least-32-bytes-xxxxxxxx", user_id="user-123")

    assert await _reason(verifier, token) == "bad signature"


async def test_expired_beyond_leeway_is_refused(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(hs256_secret=SECRET)
    token = mint_token(SECRET, user_id="user-123", ttl_seconds=-120)

    assert await _reason(verifier, token) == "expired"


async def test_expired_within_leeway_is_accepted_for_clock_skew(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(hs256_secret=SECRET)
    token = mint_token(SECRET, user_id="user-123", ttl_seconds=-30)

    assert (await verifier.verify(token)).user_id == "user-123"


async def test_leeway_argument_is_capped_at_60_seconds(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(hs256_secret=SECRET, leeway_seconds=3600)
    token = mint_token(SECRET, user_id="user-123", ttl_seconds=-120)

    assert await _reason(verifier, token) == "expired"


async def test_not_yet_valid(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(hs256_secret=SECRET)
    token = mint_token(SECRET, user_id="user-123", extra={"nbf": int(time.time()) + 600})

    assert await _reason(verifier, token) == "not yet valid"


@pytest.mark.parametrize("aud", ["anon", "service_role"])
async def test_wrong_audience(make_verifier: MakeVerifier, aud: str) -> None:
    verifier = make_verifier(hs256_secret=SECRET)
    token = mint_token(SECRET, user_id="user-123", audience=aud)

    assert await _reason(verifier, token) == "wrong audience"


async def test_missing_audience_is_wrong_audience(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(hs256_secret=SECRET)
    token = jwt.encode(_claims(aud=None), SECRET, algorithm="HS256")

    assert await _reason(verifier, token) == "wrong audience"


@pytest.mark.parametrize("sub", [None, ""])
async def test_missing_subject(make_verifier: MakeVerifier, sub: str | None) -> None:
    verifier = make_verifier(hs256_secret=SECRET)
    token = jwt.encode(_claims(sub=sub), SECRET, algorithm="HS256")

    assert await _reason(verifier, token) == "missing subject"


async def test_missing_exp_is_refused(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(hs256_secret=SECRET)
    claims = _claims()
    del claims["exp"]
    token = jwt.encode(claims, SECRET, algorithm="HS256")

    assert await _reason(verifier, token) == "malformed token"


async def test_issuer_is_enforced_when_configured(make_verifier: MakeVerifier) -> None:
    issuer = "https://abc.supabase.co/auth/v1"
    verifier = make_verifier(hs256_secret=SECRET, issuer=issuer)

    ok = mint_token(SECRET, user_id="user-123", extra={"iss": issuer})
    wrong = mint_token(SECRET, user_id="user-123", extra={"iss": "https://evil.example/auth/v1"})
    missing = mint_token(SECRET, user_id="user-123")

    assert (await verifier.verify(ok)).user_id == "user-123"
    assert await _reason(verifier, wrong) == "wrong issuer"
    assert await _reason(verifier, missing) == "wrong issuer"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "missing token"),
        ("   ", "missing token"),
        ("not-a-jwt", "malformed token"),
        ("a.b.c", "malformed token"),
        ("x" * 20_000, "malformed token"),
    ],
)
async def test_garbage_tokens(make_verifier: MakeVerifier, token: str, reason: str) -> None:
    verifier = make_verifier(hs256_secret=SECRET)

    assert await _reason(verifier, token) == reason


# --- algorithm allow-list -------------------------------------------------------------------------


async def test_alg_none_is_rejected(make_verifier: MakeVerifier, jwks_server: JwksServer) -> None:
    verifier = make_verifier(hs256_secret=SECRET, jwks_url=jwks_server.url)
    token = _hand_made_token({"alg": "none", "typ": "JWT"}, _claims(), key=None)

    assert await _reason(verifier, token) == "unsupported algorithm"
    assert jwks_server.requests == 0


async def test_hs512_is_rejected(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(hs256_secret=SECRET)
    token = jwt.encode(_claims(), SECRET + SECRET, algorithm="HS512")

    assert await _reason(verifier, token) == "unsupported algorithm"


async def test_rs256_without_jwks_is_rejected(make_verifier: MakeVerifier, keys: Keys) -> None:
    verifier = make_verifier(hs256_secret=SECRET)

    assert await _reason(verifier, _rs256(keys)) == "unsupported algorithm"


async def test_hs256_is_rejected_when_only_jwks_is_configured(
    make_verifier: MakeVerifier, jwks_server: JwksServer
) -> None:
    verifier = make_verifier(jwks_url=jwks_server.url)
    token = mint_token(SECRET, user_id="user-123")

    assert await _reason(verifier, token) == "unsupported algorithm"


async def test_alg_confusion_hs256_signed_with_rsa_public_key_is_rejected(
    make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys
) -> None:
    verifier = make_verifier(jwks_url=jwks_server.url)
    # The classic attack: the public key is public, so sign HS256 with its PEM and hope the verifier
    # feeds that same PEM to HMAC.
    header = {"alg": "HS256", "typ": "JWT", "kid": keys.rsa_kid}
    token = _hand_made_token(header, _claims(), key=keys.rsa_public_pem())

    assert await _reason(verifier, token) == "unsupported algorithm"


async def test_header_alg_must_match_the_jwk(
    make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys
) -> None:
    verifier = make_verifier(jwks_url=jwks_server.url)
    # RS256 header naming the EC key's kid.
    token = _rs256(keys, kid=keys.ec_kid)

    assert await _reason(verifier, token) == "unsupported algorithm"


# --- JWKS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [_rs256, _es256], ids=["RS256", "ES256"])
async def test_jwks_token_verifies(
    make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys, sign: Callable[..., str]
) -> None:
    verifier = make_verifier(jwks_url=jwks_server.url)

    verified = await verifier.verify(sign(keys))

    assert verified.user_id == "user-123"
    assert verified.email == "ana@example.com"
    assert jwks_server.requests == 1


async def test_both_modes_configured_accept_both(
    make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys
) -> None:
    verifier = make_verifier(hs256_secret=SECRET, jwks_url=jwks_server.url)

    assert (await verifier.verify(mint_token(SECRET, user_id="legacy"))).user_id == "legacy"
    assert (await verifier.verify(_es256(keys, sub="modern"))).user_id == "modern"


async def test_jwks_token_signed_by_another_key_is_bad_signature(
    make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys
) -> None:
    verifier = make_verifier(jwks_url=jwks_server.url)
    impostor = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(_claims(), impostor, algorithm="ES256", headers={"kid": keys.ec_kid})

    assert await _reason(verifier, token) == "bad signature"


async def test_keys_are_cached(make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys) -> None:
    verifier = make_verifier(jwks_url=jwks_server.url)
    rs, es = _rs256(keys), _es256(keys)

    for _ in range(50):
        await verifier.verify(rs)
        await verifier.verify(es)

    assert jwks_server.requests == 1


async def test_concurrent_verifications_share_one_fetch(
    make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys
) -> None:
    verifier = make_verifier(jwks_url=jwks_server.url)
    token = _rs256(keys)

    results = await asyncio.gather(*(verifier.verify(token) for _ in range(25)))

    assert {r.user_id for r in results} == {"user-123"}
    assert jwks_server.requests == 1


async def test_unknown_kid_refetches_at_most_once_per_30_seconds(
    make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys
) -> None:
    verifier = make_verifier(jwks_url=jwks_server.url)
    await verifier.verify(_rs256(keys))
    assert jwks_server.requests == 1

    assert await _reason(verifier, _rs256(keys, kid="unknown-1")) == "unknown key"
    assert jwks_server.requests == 2

    assert await _reason(verifier, _rs256(keys, kid="unknown-2")) == "unknown key"
    assert await _reason(verifier, _rs256(keys, kid="unknown-3")) == "unknown key"
    assert jwks_server.requests == 2

    # Known keys keep working from the cache meanwhile.
    await verifier.verify(_es256(keys))
    assert jwks_server.requests == 2


async def test_unknown_kid_picks_up_a_rotated_key(
    make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys
) -> None:
    verifier = make_verifier(jwks_url=jwks_server.url)
    await verifier.verify(_rs256(keys))

    jwks_server.document = {"keys": [keys.jwk("rsa"), keys.jwk("rsa", kid="rsa-2")]}
    verified = await verifier.verify(_rs256(keys, kid="rsa-2"))

    assert verified.user_id == "user-123"
    assert jwks_server.requests == 2


async def test_jwks_down_at_start_is_authentication_unavailable(
    make_verifier: MakeVerifier, keys: Keys
) -> None:
    verifier = make_verifier(jwks_url=_closed_port_url())

    assert await _reason(verifier, _rs256(keys)) == "authentication unavailable"


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, None), (200, b"<html>not json</html>"), (200, b"[]"), (200, b'{"keys": []}')],
    ids=["http-500", "not-json", "not-an-object", "no-keys"],
)
async def test_bad_jwks_response_is_authentication_unavailable(
    make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys, status: int, body: bytes | None
) -> None:
    jwks_server.status = status
    jwks_server.body_override = body
    verifier = make_verifier(jwks_url=jwks_server.url)

    assert await _reason(verifier, _rs256(keys)) == "authentication unavailable"
    # A failing endpoint is not retried on every request.
    assert await _reason(verifier, _rs256(keys)) == "authentication unavailable"
    assert jwks_server.requests == 1


async def test_cached_key_outlives_a_failed_refresh(
    make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys
) -> None:
    clock = ManualClock()
    verifier = make_verifier(jwks_url=jwks_server.url, jwks_cache_seconds=1, clock=clock)
    await verifier.verify(_rs256(keys))
    clock.advance(1.1)
    jwks_server.status = 503

    assert (await verifier.verify(_rs256(keys))).user_id == "user-123"
    assert jwks_server.requests == 2
    # A kid we never saw cannot be vouched for while the endpoint is down.
    assert await _reason(verifier, _rs256(keys, kid="new-kid")) == "authentication unavailable"


async def test_injected_client_is_used_and_left_open(jwks_server: JwksServer, keys: Keys) -> None:
    async with httpx.AsyncClient() as client:
        verifier = JwtVerifier(hs256_secret=None, jwks_url=jwks_server.url, http_client=client)
        await verifier.verify(_rs256(keys))
        await verifier.aclose()

        assert not client.is_closed
        assert jwks_server.requests == 1


# --- configuration --------------------------------------------------------------------------------


def test_needs_a_secret_or_a_jwks_url() -> None:
    with pytest.raises(ValueError, match="hs256_secret"):
        JwtVerifier(hs256_secret=None, jwks_url=None)
    with pytest.raises(ValueError, match="hs256_secret"):
        JwtVerifier(hs256_secret="", jwks_url="")


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="BRANDVX_JWT_SECRET must be at least 32 bytes") as info:
        JwtVerifier(hs256_secret="short-secret", jwks_url=None)
    assert "short-secret" not in str(info.value)


async def test_short_secret_is_allowed_when_opted_in(make_verifier: MakeVerifier) -> None:
    weak = "dev-secret"
    verifier = make_verifier(hs256_secret=weak, allow_weak_secret=True)
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        token = mint_token(weak, user_id="dev-user")

    with pytest.warns(jwt.InsecureKeyLengthWarning):
        verified = await verifier.verify(token)

    assert verified.user_id == "dev-user"


# --- error hygiene --------------------------------------------------------------------------------


async def test_errors_never_contain_the_token_or_secret(
    make_verifier: MakeVerifier, jwks_server: JwksServer, keys: Keys
) -> None:
    verifier = make_verifier(hs256_secret=SECRET, jwks_url=jwks_server.url)
    bad_tokens = [
        mint_token("another-secret-of-at-least-32-bytes-xxxxxxxx", user_id="user-123"),
        mint_token(SECRET, user_id="user-123", ttl_seconds=-600),
        mint_token(SECRET, user_id="user-123", audience="anon"),
        jwt.encode(_claims(sub=None), SECRET, algorithm="HS256"),
        _hand_made_token({"alg": "none"}, _claims(), key=None),
        _rs256(keys, kid="unknown"),
        "eyJhbGciOiJIUzI1NiJ9.not-base64!.sig",
    ]

    for token in bad_tokens:
        with pytest.raises(TokenError) as info:
            await verifier.verify(token)
        rendered = f"{info.value} {info.value!r} {info.value.args} {info.value.reason}"
        for secret_part in (token, *token.split("."), SECRET):
            if len(secret_part) >= 8:
                assert secret_part not in rendered


def test_mint_token_shape() -> None:
    token = mint_token(SECRET, user_id="u-1", email="a@b.co", ttl_seconds=120, extra={"app": "brandvx"})

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE)

    assert header["alg"] == "HS256"
    assert claims["sub"] == "u-1"
    assert claims["email"] == "a@b.co"
    assert claims["role"] == "authenticated"
    assert claims["app"] == "brandvx"
    assert claims["exp"] - claims["iat"] == 120
