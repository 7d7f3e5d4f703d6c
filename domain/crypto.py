"""Field-level encryption for PII columns and blind indexes to look them up.

Ciphertext blob layout (``Keyring.encrypt``)::

    0x01 | len(kid) | kid (ascii) | nonce (12 bytes) | AES-256-GCM ciphertext + 16-byte tag

The version byte and key id travel in the clear so that a reader can pick the
right key and a background job can find rows still under a retired key. They
are also fed to GCM as associated data, in front of the caller's ``aad``, so
a blob relabelled with another key id fails to authenticate even when two ids
share key material.

Error messages here may name a key id but never echo key material,
plaintext or ciphertext: they end up in logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import uuid
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["BlindIndex", "DecryptionError", "Keyring", "aad_for"]

FORMAT_VERSION = 1
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
BLIND_INDEX_MIN_KEY_SIZE = 32

_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")
_KID_RULE = "key id must be 1-16 characters of A-Z, a-z, 0-9, '_' or '-'"


class DecryptionError(Exception):
    """A blob could not be decrypted: unknown key id, wrong tenant/field, or tampering."""


def _is_valid_kid(kid: object) -> bool:
    return isinstance(kid, str) and _KID_RE.fullmatch(kid) is not None


def _decode_key_text(text: str, *, what: str) -> bytes:
    """Decode standard or urlsafe base64, padding optional.

    Raises ValueError naming ``what`` only; ``from None`` keeps the decoder's
    own exception (and anything it quoted) out of tracebacks.
    """
    cleaned = text.strip()
    if not cleaned:
        raise ValueError(f"{what}: key is empty")
    cleaned = cleaned.replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}: key is not valid base64") from None


def aad_for(tenant_id: uuid.UUID, field: str) -> bytes:
    """Associated data binding a ciphertext to one tenant and one column.

    A blob copied into another tenant's row, or into another column of the same
    row, then fails to decrypt instead of leaking.
    """
    if not field:
        raise ValueError("field must not be empty")
    # tenant_id.bytes is always 16 bytes, so the encoding is unambiguous.
    return tenant_id.bytes + b"\x00" + field.encode("utf-8")


class Keyring:
    """AES-256-GCM with several keys: one primary that encrypts, the rest decrypt only."""

    __slots__ = ("_ciphers", "_primary")

    def __init__(self, keys: Mapping[str, bytes], primary: str) -> None:
        if not keys:
            raise ValueError("keyring needs at least one key")
        ciphers: dict[str, AESGCM] = {}
        for kid, key in keys.items():
            if not _is_valid_kid(kid):
                raise ValueError(_KID_RULE)
            if not isinstance(key, bytes) or len(key) != KEY_SIZE:
                size = len(key) if isinstance(key, bytes) else "non-bytes"
                raise ValueError(f"key {kid!r} is {size} bytes; AES-256-GCM needs {KEY_SIZE}")
            ciphers[kid] = AESGCM(key)
        if primary not in ciphers:
            raise ValueError("primary key id is not in the keyring")
        self._ciphers = ciphers
        self._primary = primary

    @classmethod
    def from_spec(cls, spec: str) -> Keyring:
        """Build from ``kid1:BASE64KEY,kid2:BASE64KEY``; the first entry is the primary."""
        if not spec or not spec.strip():
            raise ValueError("key spec is empty; expected 'kid:BASE64KEY[,kid:BASE64KEY...]'")
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(spec.split(","), start=1):
            entry = entry.strip()
            where = f"key spec entry {position}"
            if not entry:
                raise ValueError(f"{where} is empty")
            kid, sep, key_text = entry.partition(":")
            kid = kid.strip()
            if not sep:
                raise ValueError(f"{where} has no ':'; expected 'kid:BASE64KEY'")
            # Not echoing an invalid kid: a spec written backwards puts the key there.
            if not _is_valid_kid(kid):
                raise ValueError(f"{where}: {_KID_RULE}")
            if kid in keys:
                raise ValueError(f"{where}: duplicate key id {kid!r}")
            key = _decode_key_text(key_text, what=f"{where} ({kid!r})")
            if len(key) != KEY_SIZE:
                raise ValueError(f"{where} ({kid!r}): key decodes to {len(key)} bytes; need {KEY_SIZE}")
            keys[kid] = key
        # dicts keep insertion order, so the first key is the spec's first entry.
        return cls(keys, primary=next(iter(keys)))

    @staticmethod
    def generate_spec(kid: str = "k1") -> str:
        """A fresh single-key spec with a random key, for development and demos."""
        if not _is_valid_kid(kid):
            raise ValueError(_KID_RULE)
        key = AESGCM.generate_key(bit_length=KEY_SIZE * 8)
        return f"{kid}:{base64.urlsafe_b64encode(key).decode('ascii')}"

    @property
    def primary(self) -> str:
        return self._primary

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._ciphers)

    def __repr__(self) -> str:
        return f"Keyring(primary={self._primary!r}, key_ids={sorted(self._ciphers)!r})"

    @staticmethod
    def _header(kid: str) -> bytes:
        kid_bytes = kid.encode("ascii")
        return bytes((FORMAT_VERSION, len(kid_bytes))) + kid_bytes

    def encrypt(self, plaintext: str, *, aad: bytes) -> bytes:
        header = self._header(self._primary)
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._ciphers[self._primary].encrypt(nonce, plaintext.encode("utf-8"), header + aad)
        return header + nonce + sealed

    def decrypt(self, blob: bytes, *, aad: bytes) -> str:
        kid = self.key_id_of(blob)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(f"no key with id {kid!r} in the keyring")
        header_len = 2 + len(kid)
        nonce = blob[header_len : header_len + NONCE_SIZE]
        sealed = blob[header_len + NONCE_SIZE :]
        try:
            plaintext = cipher.decrypt(nonce, sealed, blob[:header_len] + aad)
        except InvalidTag:
            raise DecryptionError(
                f"ciphertext under key {kid!r} failed authentication (tampered, or wrong tenant/field)"
            ) from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError(f"ciphertext under key {kid!r} is not UTF-8 text") from None

    @staticmethod
    def key_id_of(blob: bytes) -> str:
        """The key id a blob was encrypted under; DecryptionError if the blob is malformed."""
        if len(blob) < 2:
            raise DecryptionError("ciphertext is too short")
        if blob[0] != FORMAT_VERSION:
            raise DecryptionError(f"unsupported ciphertext format version {blob[0]}")
        kid_len = blob[1]
        if len(blob) < 2 + kid_len + NONCE_SIZE + TAG_SIZE:
            raise DecryptionError("ciphertext is too short")
        try:
            kid = blob[2 : 2 + kid_len].decode("ascii")
        except UnicodeDecodeError:
            raise DecryptionError("ciphertext has a malformed key id") from None
        if not _is_valid_kid(kid):
            raise DecryptionError("ciphertext has a malformed key id")
        return kid

    def needs_rotation(self, blob: bytes) -> bool:
        return self.key_id_of(blob) != self._primary


class BlindIndex:
    """Keyed HMAC-SHA256 for exact-match lookups of encrypted values.

    Values must be normalized by the caller (``domain.pii``) before hashing: the
    index matches bytes, not meaning.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < BLIND_INDEX_MIN_KEY_SIZE:
            raise ValueError(f"blind index key must be at least {BLIND_INDEX_MIN_KEY_SIZE} bytes")
        self._key = key

    @classmethod
    def from_spec(cls, spec: str) -> BlindIndex:
        """Build from the base64 (standard or urlsafe) of the key."""
        key = _decode_key_text(spec, what="blind index key spec")
        if len(key) < BLIND_INDEX_MIN_KEY_SIZE:
            raise ValueError(
                f"blind index key spec: key decodes to {len(key)} bytes; need at least "
                f"{BLIND_INDEX_MIN_KEY_SIZE}"
            )
        return cls(key)

    def __repr__(self) -> str:
        return "BlindIndex(<redacted>)"

    def digest(self, value: str, *, tenant_id: uuid.UUID, field: str) -> bytes:
        """32-byte HMAC of ``field 0x00 tenant_id 0x00 value``: scoped per tenant and per field."""
        if not field or "\x00" in field:
            # A NUL in the field name would make the message encoding ambiguous.
            raise ValueError("field must be non-empty and contain no NUL")
        message = field.encode("utf-8") + b"\x00" + tenant_id.bytes + b"\x00" + value.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()
