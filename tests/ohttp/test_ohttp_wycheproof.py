"""Wycheproof through our wrappers (SECURITY.md G2): X25519 via decapsulation, AEAD, HKDF.

Cases: tests/vectors/wycheproof/ohttp_subset.json (upstream file, commit and subset in its
README). valid/acceptable succeed, invalid (and zero shared secrets, which RFC 9180 §7.1.4
requires rejecting) raise the opaque DecryptError, never another exception.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pyhpke.consts import Mode

from hushcc.errors import DecryptError
from ohttp.encapsulation import decapsulate_request
from ohttp.header import REQUEST_LABEL, build_info
from ohttp.keyconfig import GatewayKey
from ohttp.suites import (
    AeadId,
    KdfId,
    KemId,
    SymmetricSuite,
    aead_open,
    aead_seal,
    hkdf_expand,
    hkdf_extract,
    hpke_suite,
)

SUBSET = Path(__file__).resolve().parents[1] / "vectors" / "wycheproof" / "ohttp_subset.json"
FILES: dict[str, Any] = json.loads(SUBSET.read_text())["files"]
SUITE = SymmetricSuite(KdfId.HKDF_SHA256, AeadId.AES_128_GCM)
MESSAGE = b"\x00\x03GET\x05https\x00\x01/"


def _cases(name: str) -> list[Any]:
    return [pytest.param(t, id=f"tc{t['tcId']}-{t['result']}") for t in FILES[name]["tests"]]


def _request_sealed_with(key: GatewayKey, enc: bytes, dh: bytes) -> bytes:
    """An Encapsulated Request whose HPKE context comes from the given DH output."""
    cipher = hpke_suite(KemId.DHKEM_X25519_HKDF_SHA256, SUITE)
    header = key.config.header(SUITE)
    kem: Any = cipher.kem  # pyhpke's KEM has extract_and_expand; its interface type does not
    shared_secret = kem.extract_and_expand(dh, enc + key.config.public_key, 32)
    ctx = cipher._key_schedule_s(Mode.BASE, shared_secret, build_info(REQUEST_LABEL, header),
                                 b"", b"")
    return header + enc + ctx.seal(MESSAGE, b"")


@pytest.mark.parametrize("case", _cases("x25519_test.json"))
def test_x25519_through_decapsulation(case: dict[str, Any]) -> None:
    key = GatewayKey.from_private_bytes(1, (SUITE,), bytes.fromhex(case["private"]))
    enc = bytes.fromhex(case["public"])
    request = _request_sealed_with(key, enc, bytes.fromhex(case["shared"]))
    must_reject = case["result"] == "invalid" or "ZeroSharedSecret" in case["flags"]
    if must_reject:
        with pytest.raises(DecryptError) as info:
            decapsulate_request(request, key)
        assert type(info.value) is DecryptError
    else:
        assert decapsulate_request(request, key)[0] == MESSAGE
        # Negative twin: a different DH output must not open.
        wrong = bytes(a ^ b for a, b in zip(bytes.fromhex(case["shared"]), b"\x01" + bytes(31),
                                            strict=True))
        with pytest.raises(DecryptError):
            decapsulate_request(_request_sealed_with(key, enc, wrong), key)


def _tests(entry: dict[str, Any]) -> list[Any]:
    """A file's cases: its `tests`, or those of each of its `groups` (one per upstream group)."""
    if "groups" in entry:
        return [t for g in entry["groups"] for t in g["tests"]]
    return list(entry["tests"])


GCM_KEY_SIZES = {"keySize 128": AeadId.AES_128_GCM, "keySize 256": AeadId.AES_256_GCM}


def _gcm_aead(group: str) -> AeadId:
    assert "ivSize 96" in group, group
    assert "tagSize 128" in group, group
    (aead,) = (a for size, a in GCM_KEY_SIZES.items() if size in group)
    return aead


AEAD_CASES = [
    pytest.param(_gcm_aead(g["group"]), t,
                 id=f"{_gcm_aead(g['group']).name.lower()}-tc{t['tcId']}-{t['result']}")
    for g in FILES["aes_gcm_test.json"]["groups"] for t in g["tests"]
] + [
    pytest.param(AeadId.CHACHA20_POLY1305, t, id=f"chacha20-tc{t['tcId']}-{t['result']}")
    for t in FILES["chacha20_poly1305_test.json"]["tests"]
]


@pytest.mark.parametrize(("aead", "case"), AEAD_CASES)
def test_aead_through_seam(aead: AeadId, case: dict[str, Any]) -> None:
    key = bytes.fromhex(case["key"])
    assert len(key) == {AeadId.AES_128_GCM: 16, AeadId.AES_256_GCM: 32,
                        AeadId.CHACHA20_POLY1305: 32}[aead]
    iv, aad, msg = (bytes.fromhex(case[k]) for k in ("iv", "aad", "msg"))
    sealed = bytes.fromhex(case["ct"] + case["tag"])
    if case["result"] == "valid":
        assert aead_seal(aead, key, iv, aad, msg) == sealed
        assert aead_open(aead, key, iv, aad, sealed) == msg
        # Derived invalid twins, beyond the upstream invalid cases vendored.
        for i in (0, len(sealed) - 1):
            flipped = bytearray(sealed)
            flipped[i] ^= 1
            with pytest.raises(DecryptError):
                aead_open(aead, key, iv, aad, bytes(flipped))
        with pytest.raises(DecryptError):
            aead_open(aead, key, iv, aad, sealed[:-1])
    else:
        with pytest.raises(DecryptError) as info:
            aead_open(aead, key, iv, aad, sealed)
        assert type(info.value) is DecryptError
        assert "ModifiedTag" in case["flags"]  # the only invalid kind vendored
        # Positive twin: the same inputs seal to the same ciphertext with the genuine tag,
        # which opens; so the modified tag is the only reason for the rejection.
        genuine = aead_seal(aead, key, iv, aad, msg)
        assert genuine[:-16] == bytes.fromhex(case["ct"])
        assert genuine[-16:] != bytes.fromhex(case["tag"])
        assert aead_open(aead, key, iv, aad, genuine) == msg


@pytest.mark.parametrize("aead", list(AeadId))
def test_aead_other_nonce_sizes_are_opaque(aead: AeadId) -> None:
    """Upstream's other-IV-size groups are not vendored; our seam only takes 12-byte nonces."""
    case = FILES["chacha20_poly1305_test.json"]["tests"][0]
    key = bytes.fromhex(case["key"])[: 16 if aead is AeadId.AES_128_GCM else 32]
    sealed = aead_seal(aead, key, bytes(12), b"", b"msg")
    assert aead_open(aead, key, bytes(12), b"", sealed) == b"msg"
    for size in (0, 8, 11, 13, 16):
        with pytest.raises(DecryptError) as info:
            aead_open(aead, key, bytes(size), b"", sealed)
        assert type(info.value) is DecryptError


@pytest.mark.parametrize("case", _cases("hkdf_sha256_test.json"))
def test_hkdf_through_seam(case: dict[str, Any]) -> None:
    prk = hkdf_extract(KdfId.HKDF_SHA256, bytes.fromhex(case["salt"]), bytes.fromhex(case["ikm"]))
    info_bytes = bytes.fromhex(case["info"])
    if case["result"] == "valid":
        okm = hkdf_expand(KdfId.HKDF_SHA256, prk, info_bytes, case["size"])
        assert okm.hex() == case["okm"]
    else:
        # SizeTooLarge (size 255 * HashLen + 1): hkdf_expand documents DecryptError for it.
        assert case["flags"] == ["SizeTooLarge"]
        assert case["size"] > 255 * 32
        with pytest.raises(DecryptError) as info:
            hkdf_expand(KdfId.HKDF_SHA256, prk, info_bytes, case["size"])
        assert type(info.value) is DecryptError
        # Positive twin: the same inputs at the maximal size 255 * HashLen derive a key.
        assert len(hkdf_expand(KdfId.HKDF_SHA256, prk, info_bytes, 255 * 32)) == 255 * 32


def test_hkdf_size_too_large_is_opaque() -> None:
    prk = hkdf_extract(KdfId.HKDF_SHA256, b"", b"ikm")
    assert len(hkdf_expand(KdfId.HKDF_SHA256, prk, b"", 255 * 32)) == 255 * 32
    for size in (255 * 32 + 1, 0):
        with pytest.raises(DecryptError):
            hkdf_expand(KdfId.HKDF_SHA256, prk, b"", size)


def test_subset_has_every_kind() -> None:
    results = {t["result"] for f in FILES.values() for t in _tests(f)}
    assert results == {"valid", "acceptable", "invalid"}
    flags = {fl for t in FILES["x25519_test.json"]["tests"] for fl in t["flags"]}
    assert {"ZeroSharedSecret", "Twist", "LowOrderPublic"} <= flags
    # Upstream invalid cases for every AEAD group and for HKDF, not only derived ones.
    for g in FILES["aes_gcm_test.json"]["groups"]:
        assert {t["result"] for t in g["tests"]} == {"valid", "invalid"}, g["group"]
    assert {_gcm_aead(g["group"]) for g in FILES["aes_gcm_test.json"]["groups"]} == set(
        GCM_KEY_SIZES.values())
    for name in ("chacha20_poly1305_test.json", "hkdf_sha256_test.json"):
        assert {t["result"] for t in FILES[name]["tests"]} == {"valid", "invalid"}, name
