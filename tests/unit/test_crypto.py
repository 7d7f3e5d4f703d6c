from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid

import pytest

from domain.crypto import BlindIndex, DecryptionError, Keyring, aad_for

TENANT_A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
TENANT_B = uuid.UUID("00000000-0000-4000-8000-00000000000b")


def _key_text(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def _keyring(*pairs: tuple[str, bytes]) -> Keyring:
    return Keyring.from_spec(",".join(f"{kid}:{_key_text(key)}" for kid, key in pairs))


# --- Keyring: round trip and blob format ---


def test_round_trip() -> None:
    keyring = Keyring.from_spec(Keyring.generate_spec())
    aad = aad_for(TENANT_A, "contacts.email")
    blob = keyring.encrypt("jane.doe@example.com", aad=aad)
    assert keyring.decrypt(blob, aad=aad) == "jane.doe@example.com"


def test_round_trip_unicode_and_empty() -> None:
    keyring = Keyring.from_spec(Keyring.generate_spec())
    aad = aad_for(TENANT_A, "contacts.name")
    for text in ["", "Zoë Ångström 💇"]:
        assert keyring.decrypt(keyring.encrypt(text, aad=aad), aad=aad) == text


def test_blob_layout() -> None:
    keyring = _keyring(("k-2024_a", os.urandom(32)))
    blob = keyring.encrypt("x", aad=b"")
    assert blob[0] == 1
    assert blob[1] == len("k-2024_a")
    assert blob[2:10] == b"k-2024_a"
    # nonce 12 + ciphertext 1 + tag 16
    assert len(blob) == 2 + 8 + 12 + 1 + 16
    assert Keyring.key_id_of(blob) == "k-2024_a"


def test_ciphertext_does_not_contain_plaintext() -> None:
    keyring = Keyring.from_spec(Keyring.generate_spec())
    blob = keyring.encrypt("jane.doe@example.com", aad=b"")
    assert b"jane" not in blob


def test_two_encryptions_differ() -> None:
    keyring = Keyring.from_spec(Keyring.generate_spec())
    aad = aad_for(TENANT_A, "contacts.email")
    first = keyring.encrypt("same", aad=aad)
    second = keyring.encrypt("same", aad=aad)
    assert first != second
    nonce_at = 2 + len(keyring.primary)
    assert first[nonce_at : nonce_at + 12] != second[nonce_at : nonce_at + 12]


def test_nonces_unique_over_many_encryptions() -> None:
    keyring = Keyring.from_spec(Keyring.generate_spec("k1"))
    nonces = {keyring.encrypt("v", aad=b"")[4:16] for _ in range(1000)}
    assert len(nonces) == 1000


# --- Keyring: rotation ---


def test_rotation_old_key_still_decrypts() -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    aad = aad_for(TENANT_A, "contacts.phone")
    blob = _keyring(("old", old_key)).encrypt("+14155550100", aad=aad)

    rotated = _keyring(("new", new_key), ("old", old_key))
    assert rotated.primary == "new"
    assert rotated.key_ids == frozenset({"new", "old"})
    assert rotated.decrypt(blob, aad=aad) == "+14155550100"
    assert rotated.needs_rotation(blob) is True

    re_encrypted = rotated.encrypt(rotated.decrypt(blob, aad=aad), aad=aad)
    assert Keyring.key_id_of(re_encrypted) == "new"
    assert rotated.needs_rotation(re_encrypted) is False
    assert rotated.decrypt(re_encrypted, aad=aad) == "+14155550100"


def test_rotation_without_old_key_fails() -> None:
    aad = aad_for(TENANT_A, "contacts.phone")
    blob = _keyring(("old", os.urandom(32))).encrypt("+14155550100", aad=aad)
    only_new = _keyring(("new", os.urandom(32)))
    with pytest.raises(DecryptionError, match="'old'") as excinfo:
        only_new.decrypt(blob, aad=aad)
    assert "+1415" not in str(excinfo.value)


def test_same_kid_different_key_fails() -> None:
    aad = b"a"
    blob = _keyring(("k1", os.urandom(32))).encrypt("secret", aad=aad)
    with pytest.raises(DecryptionError, match="'k1'"):
        _keyring(("k1", os.urandom(32))).decrypt(blob, aad=aad)


def test_relabelled_kid_fails_even_with_same_key_material() -> None:
    key = os.urandom(32)
    keyring = _keyring(("ka", key), ("kb", key))
    blob = bytearray(keyring.encrypt("secret", aad=b""))
    blob[3] = ord("b")
    assert Keyring.key_id_of(bytes(blob)) == "kb"
    with pytest.raises(DecryptionError):
        keyring.decrypt(bytes(blob), aad=b"")


# --- Keyring: tampering and binding ---


def test_tamper_any_byte_fails() -> None:
    keyring = _keyring(("k1", os.urandom(32)))
    aad = aad_for(TENANT_A, "contacts.email")
    blob = keyring.encrypt("jane.doe@example.com", aad=aad)
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(DecryptionError) as excinfo:
            keyring.decrypt(bytes(tampered), aad=aad)
        assert "jane" not in str(excinfo.value)


def test_truncated_and_garbage_blobs_fail() -> None:
    keyring = _keyring(("k1", os.urandom(32)))
    blob = keyring.encrypt("x", aad=b"")
    for bad in [b"", b"\x01", blob[:-1], blob[:20], b"\x02" + blob[1:], b"\x01\x02\xff\xfe" + bytes(40)]:
        with pytest.raises(DecryptionError):
            keyring.decrypt(bad, aad=b"")


def test_other_tenant_aad_fails() -> None:
    keyring = Keyring.from_spec(Keyring.generate_spec())
    blob = keyring.encrypt("jane.doe@example.com", aad=aad_for(TENANT_A, "contacts.email"))
    with pytest.raises(DecryptionError):
        keyring.decrypt(blob, aad=aad_for(TENANT_B, "contacts.email"))


def test_other_field_aad_fails() -> None:
    keyring = Keyring.from_spec(Keyring.generate_spec())
    blob = keyring.encrypt("jane.doe@example.com", aad=aad_for(TENANT_A, "contacts.email"))
    with pytest.raises(DecryptionError):
        keyring.decrypt(blob, aad=aad_for(TENANT_A, "contacts.phone"))


def test_aad_for_is_distinct_per_tenant_and_field() -> None:
    values = {
        aad_for(TENANT_A, "contacts.email"),
        aad_for(TENANT_B, "contacts.email"),
        aad_for(TENANT_A, "contacts.phone"),
    }
    assert len(values) == 3
    assert aad_for(TENANT_A, "contacts.email") == aad_for(TENANT_A, "contacts.email")
    with pytest.raises(ValueError, match="field"):
        aad_for(TENANT_A, "")


# --- Keyring: construction and spec parsing ---


def test_from_spec_first_entry_is_primary() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    keyring = Keyring.from_spec(f" k2:{_key_text(k2)} , k1:{_key_text(k1)} ")
    assert keyring.primary == "k2"
    assert Keyring.key_id_of(keyring.encrypt("x", aad=b"")) == "k2"


def test_from_spec_accepts_urlsafe_and_unpadded_base64() -> None:
    key = bytes(range(200, 232))  # encodes with '-' and '_' in urlsafe base64
    urlsafe = base64.urlsafe_b64encode(key).decode("ascii")
    assert "-" in urlsafe or "_" in urlsafe
    standard = _keyring(("k1", key))
    for text in [urlsafe, urlsafe.rstrip("=")]:
        other = Keyring.from_spec(f"k1:{text}")
        assert other.decrypt(standard.encrypt("v", aad=b""), aad=b"") == "v"


def test_generate_spec_makes_distinct_keys() -> None:
    first, second = Keyring.generate_spec(), Keyring.generate_spec("rot_2")
    assert first.startswith("k1:")
    assert second.startswith("rot_2:")
    assert first.split(":")[1] != second.split(":")[1]
    blob = Keyring.from_spec(first).encrypt("v", aad=b"")
    with pytest.raises(DecryptionError):
        Keyring.from_spec(first.replace("k1:", "k9:")).decrypt(blob, aad=b"")
    with pytest.raises(ValueError, match="key id"):
        Keyring.generate_spec("bad kid")


@pytest.mark.parametrize("spec", ["", "   ", ","])
def test_from_spec_empty(spec: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        Keyring.from_spec(spec)


def test_from_spec_bad_base64_does_not_echo_key() -> None:
    key_text = "not*base64!!secretish"
    with pytest.raises(ValueError, match="base64") as excinfo:
        Keyring.from_spec(f"k1:{key_text}")
    assert key_text not in str(excinfo.value)
    assert "secretish" not in str(excinfo.value)
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__suppress_context__ is True


def test_from_spec_short_key_does_not_echo_key() -> None:
    key_text = _key_text(os.urandom(16))
    with pytest.raises(ValueError, match="16 bytes") as excinfo:
        Keyring.from_spec(f"k1:{key_text}")
    assert key_text not in str(excinfo.value)
    assert key_text.rstrip("=") not in str(excinfo.value)


def test_from_spec_duplicate_kid_does_not_echo_key() -> None:
    first, second = _key_text(os.urandom(32)), _key_text(os.urandom(32))
    with pytest.raises(ValueError, match="duplicate key id 'k1'") as excinfo:
        Keyring.from_spec(f"k1:{first},k1:{second}")
    assert first not in str(excinfo.value)
    assert second not in str(excinfo.value)


def test_from_spec_missing_colon_does_not_echo_key() -> None:
    key_text = _key_text(os.urandom(32))
    with pytest.raises(ValueError, match="':'") as excinfo:
        Keyring.from_spec(key_text)
    assert key_text not in str(excinfo.value)


def test_from_spec_reversed_entry_does_not_echo_key() -> None:
    key_text = _key_text(os.urandom(32))
    with pytest.raises(ValueError, match="key id") as excinfo:
        Keyring.from_spec(f"{key_text}:k1")
    assert key_text not in str(excinfo.value)


@pytest.mark.parametrize("kid", ["", "has space", "x" * 17, "kïd", "a:b"])
def test_constructor_rejects_bad_kid(kid: str) -> None:
    with pytest.raises(ValueError, match="key id"):
        Keyring({kid: os.urandom(32)}, primary=kid)


def test_constructor_rejects_wrong_key_size_and_missing_primary() -> None:
    with pytest.raises(ValueError, match="needs 32"):
        Keyring({"k1": os.urandom(16)}, primary="k1")
    with pytest.raises(ValueError, match="needs 32"):
        Keyring({"k1": os.urandom(33)}, primary="k1")
    with pytest.raises(ValueError, match="primary"):
        Keyring({"k1": os.urandom(32)}, primary="k2")
    with pytest.raises(ValueError, match="at least one"):
        Keyring({}, primary="k1")


def test_repr_hides_keys() -> None:
    key = os.urandom(32)
    keyring = Keyring({"k1": key}, primary="k1")
    assert _key_text(key) not in repr(keyring)
    assert key.hex() not in repr(keyring)
    assert "k1" in repr(keyring)


# --- BlindIndex ---


def _blind_index() -> BlindIndex:
    return BlindIndex(os.urandom(32))


def test_blind_index_deterministic() -> None:
    index = _blind_index()
    first = index.digest("jane.doe@example.com", tenant_id=TENANT_A, field="email")
    second = index.digest("jane.doe@example.com", tenant_id=TENANT_A, field="email")
    assert first == second
    assert len(first) == 32


def test_blind_index_matches_documented_construction() -> None:
    key = os.urandom(32)
    expected = hmac.new(
        key, b"email\x00" + TENANT_A.bytes + b"\x00" + "zoë@example.com".encode(), hashlib.sha256
    ).digest()
    assert BlindIndex(key).digest("zoë@example.com", tenant_id=TENANT_A, field="email") == expected


def test_blind_index_tenant_scoped() -> None:
    index = _blind_index()
    in_a = index.digest("jane.doe@example.com", tenant_id=TENANT_A, field="email")
    in_b = index.digest("jane.doe@example.com", tenant_id=TENANT_B, field="email")
    assert in_a != in_b


def test_blind_index_field_scoped() -> None:
    index = _blind_index()
    as_email = index.digest("+14155550100", tenant_id=TENANT_A, field="email")
    as_phone = index.digest("+14155550100", tenant_id=TENANT_A, field="phone")
    assert as_email != as_phone


def test_blind_index_key_scoped_and_value_sensitive() -> None:
    value = "jane.doe@example.com"
    assert _blind_index().digest(value, tenant_id=TENANT_A, field="email") != _blind_index().digest(
        value, tenant_id=TENANT_A, field="email"
    )
    index = _blind_index()
    assert index.digest(value, tenant_id=TENANT_A, field="email") != index.digest(
        "Jane.Doe@example.com", tenant_id=TENANT_A, field="email"
    )


def test_blind_index_rejects_bad_field() -> None:
    index = _blind_index()
    for field in ["", "em\x00ail"]:
        with pytest.raises(ValueError, match="field"):
            index.digest("v", tenant_id=TENANT_A, field=field)


def test_blind_index_key_validation() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        BlindIndex(os.urandom(31))
    assert len(BlindIndex(os.urandom(64)).digest("v", tenant_id=TENANT_A, field="f")) == 32


def test_blind_index_from_spec() -> None:
    key = os.urandom(32)
    from_standard = BlindIndex.from_spec(_key_text(key))
    from_urlsafe = BlindIndex.from_spec(base64.urlsafe_b64encode(key).decode("ascii"))
    digests = {
        index.digest("v", tenant_id=TENANT_A, field="email")
        for index in [from_standard, from_urlsafe, BlindIndex(key)]
    }
    assert len(digests) == 1


def test_blind_index_from_spec_errors_do_not_echo_key() -> None:
    short = _key_text(os.urandom(16))
    with pytest.raises(ValueError, match="16 bytes") as excinfo:
        BlindIndex.from_spec(short)
    assert short not in str(excinfo.value)
    with pytest.raises(ValueError, match="base64") as excinfo:
        BlindIndex.from_spec("not*base64!!secretish")
    assert "secretish" not in str(excinfo.value)
    with pytest.raises(ValueError, match="empty"):
        BlindIndex.from_spec("")


def test_blind_index_repr_hides_key() -> None:
    key = os.urandom(32)
    assert key.hex() not in repr(BlindIndex(key))
    assert _key_text(key) not in repr(BlindIndex(key))
