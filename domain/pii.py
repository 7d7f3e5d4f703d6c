"""Normalization and masking of contact PII.

Normalization happens before encryption and before blind-indexing
(``domain.crypto.BlindIndex``), because the index only matches exact bytes:
``Jane.Doe@Example.COM`` and ``jane.doe@example.com`` must hash alike.
"""

from __future__ import annotations

import re

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from domain.errors import InvalidInput

__all__ = [
    "looks_like_email",
    "mask_email",
    "mask_phone",
    "normalize_email",
    "normalize_phone",
    "try_normalize_phone",
]

EMAIL_MESSAGE = "Enter a valid email address"
PHONE_MESSAGE = "Enter a valid phone number, e.g. +1 415 555 0100"

_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def normalize_email(raw: str, *, field: str = "email") -> str:
    """The validated address, lowercased entirely so that lookups are case-insensitive.

    RFC 5321 allows a case-sensitive local part, but mailboxes are matched
    case-insensitively in practice, and two contacts differing only by case are
    a duplicate, not two people.
    """
    candidate = raw.strip()
    if not candidate:
        raise InvalidInput(EMAIL_MESSAGE, field=[field])
    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError:
        raise InvalidInput(EMAIL_MESSAGE, field=[field]) from None
    return result.normalized.lower()


def normalize_phone(raw: str, *, default_region: str = "US", field: str = "phone") -> str:
    """The number in E.164 (``+14155550100``); numbers without ``+`` are read in ``default_region``.

    Letters are refused: libphonenumber would turn ``1-800-FLOWERS`` into digits and
    drop ``ext. 12``, and neither silent rewrite is what a salon owner typed.
    """
    candidate = raw.strip()
    if not candidate or any(ch.isalpha() for ch in candidate):
        raise InvalidInput(PHONE_MESSAGE, field=[field])
    try:
        number = phonenumbers.parse(candidate, default_region.upper())
    except phonenumbers.NumberParseException:
        raise InvalidInput(PHONE_MESSAGE, field=[field]) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput(PHONE_MESSAGE, field=[field])
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def looks_like_email(s: str) -> bool:
    """Whether a search-box query is shaped like an email (``x@y.z``); routing only, not validation."""
    return _EMAIL_SHAPE.fullmatch(s.strip()) is not None


def try_normalize_phone(s: str, *, default_region: str = "US") -> str | None:
    """E.164 for a search-box query that is a valid phone number, else None."""
    try:
        return normalize_phone(s, default_region=default_region)
    except InvalidInput:
        return None


def mask_email(email: str) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com``: first character of the local part, domain kept."""
    local, at, domain = email.strip().rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_phone(e164: str) -> str:
    """``+14155550100`` -> ``+1 ***-***-0100``: country calling code and last four digits only."""
    try:
        number = phonenumbers.parse(e164.strip(), None)
    except phonenumbers.NumberParseException:
        digits = "".join(ch for ch in e164 if ch.isdigit())
        return f"***-***-{digits[-4:]}" if len(digits) > 4 else "***"
    national = phonenumbers.national_significant_number(number)
    if len(national) <= 4:
        return f"+{number.country_code} ***"
    return f"+{number.country_code} ***-***-{national[-4:]}"
