"""RFC 9578 token type 0x0002: Appendix A vectors, wire round trips, token verification (T2, T4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hypothesis import given
from hypothesis import strategies as st

from hushcc.errors import ProtocolError, VerificationError
from relay import authscheme, blindrsa
from relay.privacypass import (
    IssuerPublicKey,
    Token,
    TokenChallenge,
    TokenRequest,
    TokenResponse,
    begin_issuance,
    finalize_token,
    issue,
    verify_token,
)
from tests.relay.test_blindrsa import ReplayRng


def _vectors(shared: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(
        (shared / "rfc9578_privacypass_type2_vectors.json").read_text())["vectors"]
    return data


def test_rfc9578_appendix_a_type2_vectors(shared_vectors: Path) -> None:
    vectors = _vectors(shared_vectors)
    assert len(vectors) == 5
    for v in vectors:
        private = load_pem_private_key(bytes.fromhex(v["skS"]), password=None)
        assert isinstance(private, rsa.RSAPrivateKey)
        key = IssuerPublicKey.from_spki(bytes.fromhex(v["pkS"]))
        assert IssuerPublicKey.from_rsa(private.public_key()).spki.hex() == v["pkS"]
        challenge = TokenChallenge.from_bytes(bytes.fromhex(v["token_challenge"]))
        assert challenge.to_bytes().hex() == v["token_challenge"]
        n = private.public_key().public_numbers().n
        rng = ReplayRng(bytes.fromhex(v["nonce"]), bytes.fromhex(v["salt"]),
                        int(v["blind"], 16).to_bytes(256, "big"))
        request, state = begin_issuance(key, challenge, rng)
        assert rng.exhausted()
        assert request.to_bytes().hex() == v["token_request"]
        assert state.blinding.inv == pow(int(v["blind"], 16), -1, n)
        signer = blindrsa.BlindSigner(private)
        response = issue(signer, key, TokenRequest.from_bytes(request.to_bytes()))
        assert response.to_bytes().hex() == v["token_response"]
        token = finalize_token(key, state, TokenResponse.from_bytes(response.to_bytes()))
        assert token.to_bytes().hex() == v["token"]
        verify_token(key, Token.from_bytes(bytes.fromhex(v["token"])), challenge)


@pytest.fixture(scope="module")
def issuer() -> tuple[blindrsa.BlindSigner, IssuerPublicKey]:
    private = rsa.generate_private_key(65537, 2048)
    return blindrsa.BlindSigner(private), IssuerPublicKey.from_rsa(private.public_key())


CHALLENGE = TokenChallenge(2, "issuer.test", b"", "relay.test")


def _token(issuer: tuple[blindrsa.BlindSigner, IssuerPublicKey],
           challenge: TokenChallenge = CHALLENGE) -> Token:
    signer, key = issuer
    request, state = begin_issuance(key, challenge)
    return finalize_token(key, state, issue(signer, key, request))


def test_verify_token_binds_challenge_key_and_authenticator(issuer) -> None:
    _, key = issuer
    token = _token(issuer)
    verify_token(key, token, CHALLENGE)  # positive twin of every case below
    other_challenge = TokenChallenge(2, "issuer.test", b"", "other.test")
    other_key = IssuerPublicKey.from_rsa(rsa.generate_private_key(65537, 2048).public_key())
    flipped = Token(token.nonce, token.challenge_digest, token.token_key_id,
                    bytes([token.authenticator[0] ^ 1]) + token.authenticator[1:])
    other_nonce = Token(bytes(32), token.challenge_digest, token.token_key_id,
                        token.authenticator)
    for bad_key, bad_token, bad_challenge in ((key, token, other_challenge),
                                              (other_key, token, CHALLENGE),
                                              (key, flipped, CHALLENGE),
                                              (key, other_nonce, CHALLENGE)):
        with pytest.raises(VerificationError, match=r"^invalid token$"):
            verify_token(bad_key, bad_token, bad_challenge)


def test_issuer_refuses_requests_for_other_keys_or_types(issuer) -> None:
    signer, key = issuer
    request, _ = begin_issuance(key, CHALLENGE)
    wrong_id = TokenRequest((request.truncated_token_key_id + 1) % 256, request.blinded_msg)
    with pytest.raises(ProtocolError, match="unknown token key"):
        issue(signer, key, wrong_id)
    with pytest.raises(ProtocolError):
        TokenRequest.from_bytes(b"\x00\x01" + request.to_bytes()[2:])
    with pytest.raises(ProtocolError):
        TokenRequest.from_bytes(request.to_bytes()[:-1])
    with pytest.raises(ProtocolError):
        begin_issuance(key, TokenChallenge(1, "issuer.test"))
    assert len(issue(signer, key, request).blind_sig) == 256


def test_token_key_must_be_the_pss_sha384_spki_t2(issuer) -> None:
    _, key = issuer
    assert IssuerPublicKey.from_spki(key.spki) == key
    plain = key.rsa_key.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ProtocolError):
        IssuerPublicKey.from_spki(plain)  # rsaEncryption: an RSA key for any purpose
    sha256_params = key.spki.replace(bytes.fromhex("0609608648016503040202"),
                                     bytes.fromhex("0609608648016503040201"))
    with pytest.raises(ProtocolError):
        IssuerPublicKey.from_spki(sha256_params)
    salt32 = key.spki.replace(bytes.fromhex("a203020130"), bytes.fromhex("a203020120"))
    with pytest.raises(ProtocolError):
        IssuerPublicKey.from_spki(salt32)
    with pytest.raises(ProtocolError):
        IssuerPublicKey.from_rsa(rsa.generate_private_key(65537, 1024).public_key())
    with pytest.raises(ProtocolError):
        IssuerPublicKey.from_spki(key.spki + b"\x00")


def test_tokens_for_one_challenge_are_unlinkable_values_t3(issuer) -> None:
    t1, t2 = _token(issuer), _token(issuer)
    assert t1.nonce != t2.nonce
    assert t1.authenticator != t2.authenticator


def test_authorization_header_round_trip_and_rejects(issuer) -> None:
    token = _token(issuer)
    header = authscheme.format_authorization(token)
    assert header.startswith('PrivateToken token="')
    assert header.endswith('"')
    assert authscheme.parse_authorization(header) == token
    encoded = authscheme.b64url_encode(token.to_bytes()).rstrip("=")
    unpadded = "privatetoken  realm=x, TOKEN=" + encoded
    assert authscheme.parse_authorization(unpadded) == token
    for bad in ("Bearer abc", "PrivateToken", "PrivateToken realm=x", "PrivateToken token=a+b/",
                "PrivateToken token=" + "A" * 10, 'PrivateToken token="abc', "x" * 5000):
        with pytest.raises(ProtocolError):
            authscheme.parse_authorization(bad)


def test_challenge_header_carries_padded_challenge_and_key(issuer) -> None:
    _, key = issuer
    value = authscheme.format_challenge(CHALLENGE, key, max_age=60)
    scheme, _, params = value.partition(" ")
    assert scheme == "PrivateToken"
    parsed = authscheme.parse_auth_params(params)
    assert TokenChallenge.from_bytes(authscheme.b64url_decode(parsed["challenge"])) == CHALLENGE
    assert parsed["challenge"].endswith("==")  # 28 bytes: padding present, as RFC 9577 says
    assert IssuerPublicKey.from_spki(authscheme.b64url_decode(parsed["token-key"])) == key
    assert parsed["max-age"] == "60"


ascii_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


@given(token_type=st.integers(0, 0xFFFF), issuer=ascii_text.filter(bool),
       context=st.sampled_from([b"", bytes(32), b"\xff" * 32]), origin=ascii_text)
def test_token_challenge_round_trip(token_type: int, issuer: str, context: bytes,
                                    origin: str) -> None:
    challenge = TokenChallenge(token_type, issuer, context, origin)
    assert TokenChallenge.from_bytes(challenge.to_bytes()) == challenge


@given(data=st.binary(max_size=80))
def test_token_challenge_parser_only_raises_protocol_error(data: bytes) -> None:
    try:
        parsed = TokenChallenge.from_bytes(data)
    except ProtocolError:
        return
    assert parsed.to_bytes() == data


@given(truncated=st.integers(0, 255), blinded=st.binary(min_size=256, max_size=256))
def test_token_request_round_trip(truncated: int, blinded: bytes) -> None:
    request = TokenRequest(truncated, blinded)
    assert TokenRequest.from_bytes(request.to_bytes()) == request


@given(sig=st.binary(min_size=256, max_size=256))
def test_token_response_round_trip(sig: bytes) -> None:
    assert TokenResponse.from_bytes(TokenResponse(sig).to_bytes()) == TokenResponse(sig)


@given(nonce=st.binary(min_size=32, max_size=32), digest=st.binary(min_size=32, max_size=32),
       key_id=st.binary(min_size=32, max_size=32), auth=st.binary(min_size=256, max_size=256))
def test_token_round_trip(nonce: bytes, digest: bytes, key_id: bytes, auth: bytes) -> None:
    token = Token(nonce, digest, key_id, auth)
    assert Token.from_bytes(token.to_bytes()) == token
    assert authscheme.parse_authorization(authscheme.format_authorization(token)) == token


@given(data=st.binary(max_size=64))
def test_b64url_round_trip(data: bytes) -> None:
    assert authscheme.b64url_decode(authscheme.b64url_encode(data)) == data


@given(not_before=st.one_of(st.none(), st.integers(0, 2**40)),
       uri=st.sampled_from(["/token-request", "https://issuer.test/token-request"]))
def test_issuer_directory_round_trip(issuer, not_before: int | None, uri: str) -> None:
    _, key = issuer
    directory = authscheme.IssuerDirectory(uri, (authscheme.TokenKeyEntry(key, not_before),))
    assert authscheme.IssuerDirectory.from_bytes(directory.to_bytes()) == directory


def test_issuer_directory_skips_unknown_types_and_rejects_bad_keys(issuer) -> None:
    _, key = issuer
    good = {"token-type": 2, "token-key": authscheme.b64url_encode(key.spki)}
    doc = {"issuer-request-uri": "/token-request",
           "token-keys": [{"token-type": 1, "token-key": "AAAA"}, good]}
    parsed = authscheme.IssuerDirectory.from_bytes(json.dumps(doc).encode())
    assert [e.key for e in parsed.token_keys] == [key]
    for bad in (b"[]", b"{", json.dumps({"token-keys": []}).encode(),
                json.dumps({"issuer-request-uri": "/x", "token-keys": [
                    {"token-type": 2, "token-key": "AAAA"}]}).encode(),
                json.dumps({"issuer-request-uri": "/x", "token-keys": [
                    dict(good, **{"not-before": "soon"})]}).encode()):
        with pytest.raises(ProtocolError):
            authscheme.IssuerDirectory.from_bytes(bad)
