"""RFC 9474 RSA blind signatures: Appendix A vectors, Wycheproof PSS, T1 fault check, T2, T3."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import ProtocolError, VerificationError
from relay import blindrsa

WYCHEPROOF = Path(__file__).resolve().parents[1] / "vectors" / "wycheproof_rsa_pss"
VARIANTS = {v.name: v for v in blindrsa.VARIANTS}


def _load(shared: Path) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(
        (shared / "rfc9474_rsabssa_vectors.json").read_text())["vectors"]
    return vectors


def _private_key(v: dict[str, Any]) -> rsa.RSAPrivateKey:
    p, q, n, e, d = (int(v[x], 16) for x in ("p", "q", "n", "e", "d"))
    public = rsa.RSAPublicNumbers(e, n)
    return rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                 rsa.rsa_crt_iqmp(p, q), public).private_key()


class ReplayRng:
    """An rng that returns recorded values in order and checks each requested length."""

    def __init__(self, *values: bytes) -> None:
        self.values = list(values)

    def __call__(self, n: int) -> bytes:
        value = self.values.pop(0)
        assert len(value) == n
        return value

    def exhausted(self) -> bool:
        return not self.values


def _run_vector(v: dict[str, Any], inv_hex: str) -> tuple[bytes, bytes, bytes, bytes]:
    """Prepare, blind, sign and finalize with the vector's randomness; return the outputs."""
    variant = VARIANTS[v["name"]]
    key = _private_key(v)
    n = key.public_key().public_numbers().n
    r = pow(int(inv_hex, 16), -1, n)
    rng = ReplayRng(*[x for x in (bytes.fromhex(v["msg_prefix"]), bytes.fromhex(v["salt"])) if x],
                    r.to_bytes(512, "big"))
    prepared = blindrsa.prepare(bytes.fromhex(v["msg"]), variant, rng)
    blinded, blinding = blindrsa.blind(key.public_key(), prepared, variant, rng)
    assert rng.exhausted()
    assert blinding.inv == int(inv_hex, 16)
    blind_sig = blindrsa.BlindSigner(key).blind_sign(blinded)
    sig = blindrsa.finalize(key.public_key(), prepared, blind_sig, blinding, variant)
    return prepared, blinded, blind_sig, sig


def test_rfc9474_appendix_a_vectors(shared_vectors: Path) -> None:
    vectors = _load(shared_vectors)
    assert sorted(v["name"] for v in vectors) == sorted(VARIANTS)
    for v in vectors:
        prepared, blinded, blind_sig, sig = _run_vector(v, v["inv"])
        assert prepared.hex() == v["prepared_msg"]
        assert blinded.hex() == v["blinded_msg"]
        assert blind_sig.hex() == v["blind_sig"]
        assert sig.hex() == v["sig"]
        key = _private_key(v)
        encoded = blindrsa.emsa_pss_encode(prepared, key.key_size - 1, bytes.fromhex(v["salt"]))
        assert encoded.hex() == v["encoded_msg"]
        blindrsa.verify(key.public_key(), prepared, sig, VARIANTS[v["name"]])


def test_rfc9474_a4_draft_text_values_give_the_same_signature(shared_vectors: Path) -> None:
    # The A.4 note: the draft text reuses the other vectors' inv; both sets are consistent and the
    # deterministic PSSZERO signature does not depend on the blind.
    (v,) = [v for v in _load(shared_vectors) if "draft_14_text_values" in v]
    draft = v["draft_14_text_values"]
    _, blinded, blind_sig, sig = _run_vector(v, draft["inv"])
    assert blinded.hex() == draft["blinded_msg"]
    assert blind_sig.hex() == draft["blind_sig"]
    assert sig.hex() == v["sig"]


def _wycheproof_cases() -> list[Any]:
    cases: list[Any] = []
    for path in sorted(WYCHEPROOF.glob("rsa_pss_*.json")):
        data = json.loads(path.read_text())
        for group in data["testGroups"]:
            assert (group["sha"], group["mgfSha"], group["sLen"]) == ("SHA-384", "SHA-384", 48)
            cases.extend(pytest.param(group["publicKeyDer"], t,
                                      id=f"{path.stem}-tc{t['tcId']}-{t['result']}")
                         for t in group["tests"])
    return cases


@pytest.mark.parametrize(("key_der", "case"), _wycheproof_cases())
def test_wycheproof_rsa_pss_sha384(key_der: str, case: dict[str, Any]) -> None:
    key = load_der_public_key(bytes.fromhex(key_der))
    assert isinstance(key, rsa.RSAPublicKey)
    msg, sig = bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"])
    if case["result"] == "valid":
        blindrsa.verify(key, msg, sig, blindrsa.SHA384_PSS_RANDOMIZED)
    else:
        assert case["result"] == "invalid"
        with pytest.raises(VerificationError):
            blindrsa.verify(key, msg, sig, blindrsa.SHA384_PSS_RANDOMIZED)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def _sign(key: rsa.RSAPrivateKey, msg: bytes, variant: blindrsa.Variant,
          signer: blindrsa.BlindSigner | None = None) -> tuple[bytes, bytes]:
    prepared = blindrsa.prepare(msg, variant)
    blinded, blinding = blindrsa.blind(key.public_key(), prepared, variant)
    blind_sig = (signer or blindrsa.BlindSigner(key)).blind_sign(blinded)
    return prepared, blindrsa.finalize(key.public_key(), prepared, blind_sig, blinding, variant)


def test_blind_sign_fault_check_releases_nothing_t1(key: rsa.RSAPrivateKey) -> None:
    # A Bellcore fault: one CRT half computed with a wrong exponent. The unchecked result would
    # reveal a factor of n (gcd(s^e - m, n)); BlindSign must detect it and return nothing.
    signer = blindrsa.BlindSigner(key)
    blinded, _ = blindrsa.blind(key.public_key(), b"m" * 32, blindrsa.SHA384_PSS_DETERMINISTIC)
    faulty = dataclasses.replace(signer._crt, dp=signer._crt.dp ^ 2)
    object.__setattr__(signer, "_crt", faulty)
    with pytest.raises(VerificationError, match="signing failure"):
        signer.blind_sign(blinded)
    # Positive twin: the same key without the fault signs, and the result finalizes.
    _, sig = _sign(key, b"m" * 32, blindrsa.SHA384_PSS_DETERMINISTIC)
    assert len(sig) == 256


def test_blind_sign_rejects_out_of_range_and_wrong_size(key: rsa.RSAPrivateKey) -> None:
    signer = blindrsa.BlindSigner(key)
    n = key.public_key().public_numbers().n
    with pytest.raises(ProtocolError, match="out of range"):
        signer.blind_sign(n.to_bytes(256, "big"))
    with pytest.raises(ProtocolError, match="size"):
        signer.blind_sign(bytes(255))
    assert len(signer.blind_sign((n - 1).to_bytes(256, "big"))) == 256
    assert "redacted" in repr(signer)
    assert str(n)[:20] not in repr(signer)


@pytest.mark.parametrize("variant", blindrsa.VARIANTS, ids=lambda v: v.name)
def test_signature_verifies_only_under_its_own_variant_t2(key: rsa.RSAPrivateKey,
                                                         variant: blindrsa.Variant) -> None:
    prepared, sig = _sign(key, b"hello", variant)
    blindrsa.verify(key.public_key(), prepared, sig, variant)
    for other in blindrsa.VARIANTS:
        if other.salt_length != variant.salt_length:
            with pytest.raises(VerificationError):
                blindrsa.verify(key.public_key(), prepared, sig, other)
    other_key = rsa.generate_private_key(65537, 2048)
    with pytest.raises(VerificationError):
        blindrsa.verify(other_key.public_key(), prepared, sig, variant)


def test_randomness_is_never_caller_supplied_and_is_fresh_t3(key: rsa.RSAPrivateKey) -> None:
    for fn in (blindrsa.prepare, blindrsa.blind, blindrsa.BlindSigner.blind_sign):
        params = set(inspect.signature(fn).parameters)
        assert not params & {"salt", "r", "prefix", "msg_prefix", "nonce", "inv"}, fn
    # Randomized: two signatures of one message differ in prefix, salt and blind; both verify.
    variant = blindrsa.SHA384_PSS_RANDOMIZED
    (p1, s1), (p2, s2) = _sign(key, b"same", variant), _sign(key, b"same", variant)
    assert p1[:32] != p2[:32]
    assert p1[32:] == p2[32:] == b"same"
    assert s1 != s2
    blinded1, _ = blindrsa.blind(key.public_key(), p1, variant)
    blinded2, _ = blindrsa.blind(key.public_key(), p1, variant)
    assert blinded1 != blinded2
    blindrsa.verify(key.public_key(), p1, s1, variant)
    blindrsa.verify(key.public_key(), p2, s2, variant)


def test_finalize_rejects_a_bad_blind_signature(key: rsa.RSAPrivateKey) -> None:
    variant = blindrsa.SHA384_PSS_RANDOMIZED
    prepared = blindrsa.prepare(b"x", variant)
    blinded, blinding = blindrsa.blind(key.public_key(), prepared, variant)
    blind_sig = blindrsa.BlindSigner(key).blind_sign(blinded)
    bad = bytes([blind_sig[0] ^ 1]) + blind_sig[1:]
    with pytest.raises(VerificationError):
        blindrsa.finalize(key.public_key(), prepared, bad, blinding, variant)
    with pytest.raises(ProtocolError):
        blindrsa.finalize(key.public_key(), prepared, blind_sig[1:], blinding, variant)
    assert blindrsa.finalize(key.public_key(), prepared, blind_sig, blinding, variant)
    assert "inv" not in repr(blinding).replace("Blinding()", "")


@settings(max_examples=10)
@given(msg=st.binary(max_size=200), variant=st.sampled_from(blindrsa.VARIANTS))
def test_blind_sign_finalize_round_trip(key: rsa.RSAPrivateKey, msg: bytes,
                                        variant: blindrsa.Variant) -> None:
    prepared, sig = _sign(key, msg, variant)
    blindrsa.verify(key.public_key(), prepared, sig, variant)
