"""Development secrets, generated once under the data folder so a restart can read old data.

Used only outside production and only for variables that are not set. Production refuses to start
without real secrets (see ``Settings``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from pathlib import Path

from brandvx.settings import Environment, Settings
from domain.crypto import Keyring

log = logging.getLogger("brandvx.secrets")

FILENAME = "dev-secrets.json"


def _load_or_create(data_dir: Path) -> dict[str, str]:
    path = data_dir / FILENAME
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    data_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "jwt_secret": secrets.token_urlsafe(48),
        "encryption_keys": Keyring.generate_spec("dev1"),
        "blind_index_key": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle)
    log.warning("generated development secrets in %s (never use them in production)", path)
    return values


def with_dev_secrets(settings: Settings) -> Settings:
    """Fill unset secrets from the data folder's dev-secrets file (created on first use)."""
    if settings.env is Environment.PRODUCTION:
        return settings
    missing_jwt = not settings.jwt_secret and not settings.jwks_url
    if not (missing_jwt or not settings.encryption_keys or not settings.blind_index_key):
        return settings
    dev = _load_or_create(settings.data_dir)
    return settings.model_copy(
        update={
            "jwt_secret": dev["jwt_secret"] if missing_jwt else settings.jwt_secret,
            "encryption_keys": settings.encryption_keys or dev["encryption_keys"],
            "blind_index_key": settings.blind_index_key or dev["blind_index_key"],
        }
    )
