from __future__ import annotations

import pytest

from domain.errors import ErrorCode, InvalidInput
from domain.pii import (
    looks_like_email,
    mask_email,
    mask_phone,
    normalize_email,
    normalize_phone,
    try_normalize_phone,
)

# --- email ---


def test_normalize_email_folds_case() -> None:
    assert normalize_email("Jane.Doe@Example.COM") == normalize_email("jane.doe@example.com")
    assert normalize_email("Jane.Doe@Example.COM") == "jane.doe@example.com"


def test_normalize_email_strips_whitespace() -> None:
    assert normalize_email("  jane@example.com\n") == "jane@example.com"


def test_normalize_email_keeps_internationalized_address() -> None:
    assert normalize_email("Zoë@Exämple.com") == "zoë@exämple.com"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "jane",
        "jane@",
        "@example.com",
        "jane@example",
        "jane doe@example.com",
        "jane..doe@example.com",
        "jane@@example.com",
        "jane@example..com",
        "jane@localhost",
    ],
)
def test_normalize_email_rejects_invalid(raw: str) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        normalize_email(raw)
    assert excinfo.value.message == "Enter a valid email address"
    assert excinfo.value.field == ["email"]
    assert excinfo.value.code is ErrorCode.INVALID


def test_normalize_email_field_override() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        normalize_email("nope", field="billingEmail")
    assert excinfo.value.field == ["billingEmail"]


def test_looks_like_email() -> None:
    assert looks_like_email("jane@example.com")
    assert looks_like_email("  Jane.Doe@Example.COM ")
    assert not looks_like_email("jane")
    assert not looks_like_email("jane@")
    assert not looks_like_email("jane@example")
    assert not looks_like_email("jane doe@example.com")
    assert not looks_like_email("+1 415 555 0100")
    assert not looks_like_email("")


# --- phone ---


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(415) 555-0100", "+14155550100"),
        ("415.555.0100", "+14155550100"),
        ("+1 415 555 0100", "+14155550100"),
        ("1-415-555-0100", "+14155550100"),
        (" +14155550100 ", "+14155550100"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_normalize_phone(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


def test_normalize_phone_default_region() -> None:
    assert normalize_phone("020 7946 0958", default_region="GB") == "+442079460958"
    assert normalize_phone("020 7946 0958", default_region="gb") == "+442079460958"
    # An explicit country code wins over the default region.
    assert normalize_phone("+1 415 555 0100", default_region="GB") == "+14155550100"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "12345",
        "555-0100",
        "+1 415 555 010",
        "abc",
        "415-555-CALL",
        "1-800-FLOWERS",
        "415 555 0100 ext 12",
        "+999 1234 5678",
    ],
)
def test_normalize_phone_rejects_invalid(raw: str) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        normalize_phone(raw)
    assert excinfo.value.message == "Enter a valid phone number, e.g. +1 415 555 0100"
    assert excinfo.value.field == ["phone"]


def test_normalize_phone_unknown_region_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        normalize_phone("415 555 0100", default_region="ZZ")


def test_normalize_phone_field_override() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        normalize_phone("12345", field="mobile")
    assert excinfo.value.field == ["mobile"]


def test_try_normalize_phone() -> None:
    assert try_normalize_phone("(415) 555-0100") == "+14155550100"
    assert try_normalize_phone("020 7946 0958", default_region="GB") == "+442079460958"
    assert try_normalize_phone("jane") is None
    assert try_normalize_phone("12345") is None
    assert try_normalize_phone("") is None
    assert try_normalize_phone("jane@example.com") is None
    assert try_normalize_phone("415 555 0100", default_region="ZZ") is None


# --- masking ---


def test_mask_email() -> None:
    assert mask_email("jane.doe@example.com") == "j***@example.com"
    assert mask_email("j@example.com") == "j***@example.com"
    assert mask_email("@example.com") == "***@example.com"
    assert mask_email("not-an-email") == "***"
    assert mask_email("") == "***"


def test_mask_phone() -> None:
    assert mask_phone("+14155550100") == "+1 ***-***-0100"
    assert mask_phone("+442079460958") == "+44 ***-***-0958"


def test_mask_phone_never_shows_more_than_last_four() -> None:
    masked = mask_phone("+14155550100")
    assert "415" not in masked
    assert "555" not in masked
    assert mask_phone("4155550100") == "***-***-0100"
    assert mask_phone("123") == "***"
    assert mask_phone("") == "***"
