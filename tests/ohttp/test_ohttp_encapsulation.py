"""RFC 9458 encapsulation: round trips for every suite; negative cases G6, G8-G10, G12, G13."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from pyhpke import KEMKeyPair

from hushcc.errors import DecryptError, ProtocolError
from ohttp.chunked import ChunkedRequestDecoder, ChunkedRequestEncoder
from ohttp.encapsulation import (
    UnknownKeyError,
    decapsulate_request,
    decapsulate_response,
    encapsulate_request,
    encapsulate_response,
)
from ohttp.header import OHTTP_REQUEST_LABELS, REQUEST_LABEL, build_info
from ohttp.suites import (
    AeadId,
    KdfId,
    KemId,
    SymmetricSuite,
    hpke_key,
    hpke_suite,
    x25519_private_key,
)
from tests.ohttp.ohttp_helpers import ALL_SUITES, counter_rng, make_key

if TYPE_CHECKING:
    from tests.canary_guard import CanaryRegistry

KEY = make_key()
MESSAGE = b"\x00\x04POST\x05https\x00\x14/v1/chat/completions"


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: f"{s.kdf_id.name}-{s.aead_id.name}")
def test_round_trip_every_suite(suite: SymmetricSuite) -> None:
    enc_request, client = encapsulate_request(KEY.config, MESSAGE, suite=suite)
    assert enc_request[3:7] == suite.kdf_id.to_bytes(2, "big") + suite.aead_id.to_bytes(2, "big")
    assert len(enc_request) == 7 + 32 + len(MESSAGE) + 16
    plaintext, ctx = decapsulate_request(enc_request, KEY)
    assert plaintext == MESSAGE
    response = encapsulate_response(ctx, b"\x01\x40\xc8")
    assert len(response) == max(suite.key_length, suite.nonce_length) + 3 + 16
    assert decapsulate_response(client, response) == b"\x01\x40\xc8"


def test_key_rotation_ring_selects_by_key_id() -> None:
    old, new = make_key(1, b"old"), make_key(2, b"new")
    for key in (old, new):
        enc_request, _ = encapsulate_request(key.config, MESSAGE)
        assert decapsulate_request(enc_request, [old, new])[0] == MESSAGE
    with pytest.raises(ProtocolError):
        decapsulate_request(enc_request, [new, make_key(2, b"dup")])


def test_suite_not_offered_is_refused_client_side() -> None:
    config = make_key(suites=(SymmetricSuite(KdfId.HKDF_SHA256, AeadId.AES_128_GCM),)).config
    with pytest.raises(ProtocolError):
        encapsulate_request(config, MESSAGE, suite=ALL_SUITES[-1])


# --- G6: unknown / mismatched key id, KEM, or suite -> UnknownKeyError before any DH ----------


def _with_header(
    data: bytes,
    *,
    key_id: int | None = None,
    kem: int | None = None,
    kdf: int | None = None,
    aead: int | None = None,
) -> bytes:
    h = bytearray(data[:7])
    if key_id is not None:
        h[0] = key_id
    if kem is not None:
        h[1:3] = kem.to_bytes(2, "big")
    if kdf is not None:
        h[3:5] = kdf.to_bytes(2, "big")
    if aead is not None:
        h[5:7] = aead.to_bytes(2, "big")
    return bytes(h) + data[7:]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"key_id": 2}, id="unknown-key-id"),
        pytest.param({"kem": 0x0010}, id="kem-p256-not-the-keys"),
        pytest.param({"kem": 0xFFFF}, id="kem-unknown"),
        pytest.param({"kdf": 0x0099}, id="kdf-unknown"),
        pytest.param({"aead": 0xFFFF}, id="aead-export-only"),
        pytest.param({"aead": 0x0002}, id="aead-not-offered"),
    ],
)
def test_g6_unknown_key_before_dh(change: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    key = make_key(suites=(SymmetricSuite(KdfId.HKDF_SHA256, AeadId.AES_128_GCM),))
    good, _ = encapsulate_request(key.config, MESSAGE)
    assert decapsulate_request(good, key)[0] == MESSAGE  # positive twin
    calls = []
    monkeypatch.setattr(type(key), "setup_recipient", lambda *a: calls.append(1))
    with pytest.raises(UnknownKeyError) as info:
        decapsulate_request(_with_header(good, **change), key)
    assert str(info.value) == UnknownKeyError.MESSAGE
    assert not calls, "the private key was touched before the key id was checked"


# --- G8: truncation / corruption family -> one opaque DecryptError ----------------------------


def _corruptions(good: bytes) -> Iterator[tuple[str, bytes]]:
    for n in (0, 1, 6):
        yield f"len-{n}", good[:n]
    yield "len-7+31", good[: 7 + 31]
    yield "len-7+32", good[: 7 + 32]
    yield "len-7+32+15", good[: 7 + 32 + 15]
    yield "drop-last", good[:-1]
    yield "appended", good + b"\x00"
    for index in (7, 20, 38, 39, len(good) - 17, len(good) - 1):
        flipped = bytearray(good)
        flipped[index] ^= 0x01
        yield f"flip-{index}", bytes(flipped)


def test_g8_truncation_and_corruption_are_opaque() -> None:
    good, _ = encapsulate_request(KEY.config, MESSAGE)
    assert decapsulate_request(good, KEY)[0] == MESSAGE
    messages = set()
    for name, bad in _corruptions(good):
        with pytest.raises(DecryptError) as info:
            decapsulate_request(bad, KEY)
        assert type(info.value) is DecryptError, name
        messages.add(str(info.value))
    assert messages == {DecryptError.MESSAGE}


def test_g8_response_truncation_and_corruption_are_opaque() -> None:
    enc_request, client = encapsulate_request(KEY.config, MESSAGE)
    _, ctx = decapsulate_request(enc_request, KEY)
    good = encapsulate_response(ctx, b"\x01\x40\xc8")
    assert decapsulate_response(client, good) == b"\x01\x40\xc8"
    for bad in [good[:n] for n in range(len(good))] + [good + b"\x00"]:
        with pytest.raises(DecryptError):
            decapsulate_response(client, bad)
    for i in range(len(good)):
        flipped = bytearray(good)
        flipped[i] ^= 0x80
        with pytest.raises(DecryptError):
            decapsulate_response(client, bytes(flipped))


# --- G9: low-order enc -> opaque failure (pyca raises ValueError; mapped at the seam) ---------

LOW_ORDER_POINTS = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_g9_low_order_enc_is_opaque(point: str) -> None:
    good, _ = encapsulate_request(KEY.config, MESSAGE)
    assert decapsulate_request(good, KEY)[0] == MESSAGE
    bad = good[:7] + bytes.fromhex(point) + good[39:]
    with pytest.raises(DecryptError) as info:
        decapsulate_request(bad, KEY)
    assert type(info.value) is DecryptError
    assert str(info.value) == DecryptError.MESSAGE


# --- G10: the header is authenticated (it is part of HPKE info) ------------------------------


def test_g10_altered_header_fails() -> None:
    key = make_key()  # offers every suite, so a changed kdf/aead still selects the key
    suite = SymmetricSuite(KdfId.HKDF_SHA256, AeadId.AES_256_GCM)
    good, _ = encapsulate_request(key.config, MESSAGE, suite=suite)
    assert decapsulate_request(good, key)[0] == MESSAGE
    for change in ({"aead": AeadId.CHACHA20_POLY1305}, {"kdf": KdfId.HKDF_SHA384}):
        with pytest.raises(DecryptError):
            decapsulate_request(_with_header(good, **change), key)


# --- G12: response keys never repeat ---------------------------------------------------------


def test_g12_response_nonces_never_repeat() -> None:
    enc_request, client = encapsulate_request(KEY.config, MESSAGE)
    _, ctx = decapsulate_request(enc_request, KEY)
    n = 10_000
    responses = [encapsulate_response(ctx, b"\x01\x40\xc8") for _ in range(n)]
    assert len({r[:16] for r in responses}) == n
    assert len({r[16:] for r in responses}) == n  # distinct keys/nonces, so distinct ciphertexts
    assert decapsulate_response(client, responses[-1]) == b"\x01\x40\xc8"


def test_g12_fresh_context_per_request() -> None:
    encs = {encapsulate_request(KEY.config, MESSAGE)[0][7:39] for _ in range(1000)}
    assert len(encs) == 1000


# --- G13: the gateway key opens nothing under another label ----------------------------------


def test_g13_labels_are_not_interchangeable() -> None:
    chunked = ChunkedRequestEncoder(KEY.config)
    chunked_wire = chunked.chunk(MESSAGE) + chunked.final()
    # Positive twins: each decoder opens its own kind.
    decoder = ChunkedRequestDecoder(KEY)
    assert decoder.feed(chunked_wire) == [MESSAGE]
    plain, _ = encapsulate_request(KEY.config, MESSAGE)
    assert decapsulate_request(plain, KEY)[0] == MESSAGE
    # Cross-label: a chunked request is not a request, and vice versa.
    with pytest.raises(DecryptError):
        decapsulate_request(chunked_wire[:39] + chunked_wire[40:-17], KEY)
    cross = ChunkedRequestDecoder(KEY)
    with pytest.raises(DecryptError):
        cross.feed(plain[:39] + bytes([len(plain) - 39]) + plain[39:])
    # A plain HPKE message with an arbitrary info (another protocol) does not open either.
    cipher = hpke_suite(KemId.DHKEM_X25519_HKDF_SHA256, ALL_SUITES[0])
    eph = x25519_private_key(counter_rng(b"eph")(32))
    gateway_public = X25519PublicKey.from_public_bytes(KEY.config.public_key)
    for info in (b"", b"another protocol", build_info(b"message/bhttp response", plain[:7])):
        enc, sender = cipher.create_sender_context(
            hpke_key(gateway_public), info,
            eks=KEMKeyPair(hpke_key(eph), hpke_key(eph.public_key())),
        )
        with pytest.raises(DecryptError):
            decapsulate_request(plain[:7] + enc + sender.seal(MESSAGE, b""), KEY)
    assert build_info(REQUEST_LABEL, plain[:7]).startswith(b"message/bhttp request\x00")
    assert not hasattr(KEY, "open")
    assert not hasattr(KEY, "decrypt")


def test_secrets_are_redacted_in_repr(canaries: CanaryRegistry) -> None:
    key_file = KEY.to_key_file()
    secret_hex = key_file.decode().split('"private_key": "')[1].split('"')[0]
    canaries.add(secret_hex)
    enc_request, client = encapsulate_request(KEY.config, MESSAGE)
    _, ctx = decapsulate_request(enc_request, KEY)
    canaries.add(bytes(ctx.keys.secret).hex())
    for obj in (KEY, client, ctx, ctx.keys):
        text = repr(obj) + str(obj)
        assert secret_hex not in text
        assert bytes(ctx.keys.secret).hex() not in text
        assert repr(bytes(ctx.keys.secret)) not in text
        print(text)  # noqa: T201 - the canary fixture checks printed output too
    assert "redacted" in repr(KEY)


def test_g13_gateway_key_refuses_other_purposes() -> None:
    good, _ = encapsulate_request(KEY.config, MESSAGE)
    header, enc = good[:7], good[7:39]
    suite = ALL_SUITES[0]
    assert {b"message/bhttp request", b"message/bhttp chunked request"} == OHTTP_REQUEST_LABELS
    for label in OHTTP_REQUEST_LABELS:  # positive twins
        KEY.setup_recipient(suite, enc, label, header)
    for label in (b"", b"message/bhttp response", b"message/bhttp chunked response", b"other"):
        with pytest.raises(ProtocolError):
            KEY.setup_recipient(suite, enc, label, header)
    offered_once = make_key(3, b"one", (ALL_SUITES[0],))
    with pytest.raises(ProtocolError):
        offered_once.setup_recipient(ALL_SUITES[1], enc, REQUEST_LABEL, header)
    # No accessor hands out the private key (from_private_bytes is a constructor).
    accessors = {n for n in dir(KEY) if "private" in n and not n.startswith("_")}
    assert accessors == {"from_private_bytes"}
