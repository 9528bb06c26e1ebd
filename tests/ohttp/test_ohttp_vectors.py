"""Known-answer tests (SECURITY.md G1).

RFC 9458 App. A, RFC 9180 A.1.1, chunked OHTTP draft-08 example, RFC 9292 §5 examples.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from pyhpke import KEMKeyPair

from ohttp import bhttp
from ohttp.chunked import (
    ChunkedRequestDecoder,
    ChunkedRequestEncoder,
    ChunkedResponseDecoder,
    ChunkedResponseEncoder,
)
from ohttp.encapsulation import (
    decapsulate_request,
    decapsulate_response,
    encapsulate_request,
    encapsulate_response,
)
from ohttp.keyconfig import GatewayKey, KeyConfig
from ohttp.suites import (
    AeadId,
    KdfId,
    KemId,
    SymmetricSuite,
    hpke_key,
    hpke_suite,
    x25519_private_key,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def _load(shared_vectors: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((shared_vectors / name).read_text())
    return data


def _fixed(value: bytes) -> Callable[[int], bytes]:
    """An entropy source that returns `value` once (and fails if asked for a different length)."""
    calls: list[int] = []

    def rng(n: int) -> bytes:
        assert n == len(value)
        assert not calls, "entropy drawn twice"
        calls.append(n)
        return value

    return rng


@pytest.fixture(scope="module")
def app_a(shared_vectors: Path) -> dict[str, Any]:
    return _load(shared_vectors, "rfc9458_ohttp_appendix_a.json")


def test_rfc9458_key_config_round_trip(app_a: dict[str, Any]) -> None:
    raw = bytes.fromhex(app_a["key_config"]["hex"])
    config = KeyConfig.from_bytes(raw)
    assert config.key_id == 1
    assert config.kem_id is KemId.DHKEM_X25519_HKDF_SHA256
    assert config.public_key.hex() == app_a["gateway_key"]["x25519_public_key_pkR"]
    assert config.suites == (
        SymmetricSuite(KdfId.HKDF_SHA256, AeadId.AES_128_GCM),
        SymmetricSuite(KdfId.HKDF_SHA256, AeadId.CHACHA20_POLY1305),
    )
    assert config.to_bytes() == raw
    key = GatewayKey.from_private_bytes(
        1, config.suites, bytes.fromhex(app_a["gateway_key"]["x25519_secret_key_skR"])
    )
    assert key.config == config


def test_rfc9458_appendix_a_both_directions(app_a: dict[str, Any]) -> None:
    req, resp = app_a["request"], app_a["response"]
    config = KeyConfig.from_bytes(bytes.fromhex(app_a["key_config"]["hex"]))
    gateway = GatewayKey.from_private_bytes(
        1, config.suites, bytes.fromhex(app_a["gateway_key"]["x25519_secret_key_skR"])
    )
    request = bytes.fromhex(req["binary_http_request_hex"])
    # Client side: skE injected, byte-identical Encapsulated Request.
    encapsulated, client = encapsulate_request(
        config, request, rng=_fixed(bytes.fromhex(req["hpke_ephemeral_secret_key_skE"]))
    )
    assert encapsulated.hex() == req["encapsulated_request_hex"]
    assert encapsulated[7:39].hex() == req["hpke_ephemeral_public_key_pkE_enc"]
    assert bytes(client.keys.secret).hex() == resp["exported_secret_hex"]
    # Gateway side: the published bytes decapsulate to the published request.
    plaintext, ctx = decapsulate_request(bytes.fromhex(req["encapsulated_request_hex"]), gateway)
    assert plaintext == request
    assert ctx.enc.hex() == req["hpke_ephemeral_public_key_pkE_enc"]
    assert bytes(ctx.keys.secret).hex() == resp["exported_secret_hex"]
    nonce = bytes.fromhex(resp["response_nonce_hex"])
    key, aead_nonce = ctx.keys.derive(nonce)
    assert key.hex() == resp["aead_key_hex"]
    assert aead_nonce.hex() == resp["aead_nonce_hex"]
    response = bytes.fromhex(resp["binary_http_response_hex"])
    sealed = encapsulate_response(ctx, response, rng=_fixed(nonce))
    assert sealed.hex() == resp["encapsulated_response_hex"]
    # Client opens the published response.
    published = bytes.fromhex(resp["encapsulated_response_hex"])
    assert decapsulate_response(client, published) == response


def test_rfc9180_a11_through_hpke_layer(shared_vectors: Path) -> None:
    v = _load(shared_vectors, "rfc9180_hpke_x25519_sha256_aes128gcm_base.json")
    s = v["setup"]
    suite = hpke_suite(
        KemId(s["kem_id"]), SymmetricSuite(KdfId(s["kdf_id"]), AeadId(s["aead_id"]))
    )
    derived_e = suite.kem.derive_key_pair(bytes.fromhex(s["ikmE"]))
    derived_r = suite.kem.derive_key_pair(bytes.fromhex(s["ikmR"]))
    assert derived_e.private_key.to_private_bytes().hex() == s["skEm"]
    assert derived_r.public_key.to_public_bytes().hex() == s["pkRm"]
    sk_e = x25519_private_key(bytes.fromhex(s["skEm"]))
    sk_r = x25519_private_key(bytes.fromhex(s["skRm"]))
    info = bytes.fromhex(s["info"])
    enc, sender = suite.create_sender_context(
        hpke_key(sk_r.public_key()),
        info,
        eks=KEMKeyPair(hpke_key(sk_e), hpke_key(sk_e.public_key())),
    )
    assert enc.hex() == s["enc"]
    recipient = suite.create_recipient_context(enc, hpke_key(sk_r), info)
    by_seq = {e["sequence_number"]: e for e in v["encryptions"]}
    for seq in range(max(by_seq) + 1):
        e = by_seq.get(seq)
        pt = bytes.fromhex(e["pt"]) if e else b"filler"
        aad = bytes.fromhex(e["aad"]) if e else b""
        ct = sender.seal(pt, aad)
        assert recipient.open(ct, aad) == pt
        if e:
            assert ct.hex() == e["ct"], seq
    for x in v["exports"]:
        ctx_bytes = bytes.fromhex(x["exporter_context"])
        assert sender.export(ctx_bytes, x["L"]).hex() == x["exported_value"]
        assert recipient.export(ctx_bytes, x["L"]).hex() == x["exported_value"]


def test_chunked_draft08_example_both_directions(shared_vectors: Path) -> None:
    v = _load(shared_vectors, "chunked_ohttp_draft08_example.json")["example"]
    config = KeyConfig.from_bytes(bytes.fromhex(v["key_config_hex"]))
    gateway = GatewayKey.from_private_bytes(
        1, config.suites, bytes.fromhex(v["gateway_x25519_secret_key"])
    )
    assert gateway.config.public_key.hex() == v["gateway_public_key"]
    request = bytes.fromhex(v["binary_http_request_hex"])
    chunks = [bytes.fromhex(p["plaintext_hex"]) for p in v["encapsulated_request_structure"][2:]]
    encoder = ChunkedRequestEncoder(
        config, rng=_fixed(bytes.fromhex(v["client_ephemeral_secret_key"]))
    )
    wire = encoder.chunk(chunks[0]) + encoder.chunk(chunks[1]) + encoder.final(chunks[2])
    assert wire.hex() == v["encapsulated_request_hex"]
    assert bytes(encoder.context.keys.secret).hex() == v["exported_secret_hex"]
    # Gateway decodes the published bytes, one byte at a time.
    decoder = ChunkedRequestDecoder(gateway)
    got: list[bytes] = []
    for byte in bytes.fromhex(v["encapsulated_request_hex"]):
        got += decoder.feed(bytes([byte]))
    got.append(decoder.finish())
    assert got == chunks
    assert b"".join(got) == request
    assert decoder.context is not None
    keys = decoder.context.keys
    assert bytes(keys.secret).hex() == v["exported_secret_hex"]
    nonce = bytes.fromhex(v["response_nonce_hex"])
    assert keys.enc + nonce == bytes.fromhex(v["salt_hex"])
    key, base_nonce = keys.derive(nonce)
    assert key.hex() == v["aead_key_hex"]
    assert base_nonce.hex() == v["aead_base_nonce_hex"]
    parts = [bytes.fromhex(p["plaintext_hex"]) for p in v["encapsulated_response_structure"][1:]]
    response_encoder = ChunkedResponseEncoder(decoder.context, rng=_fixed(nonce))
    out = response_encoder.chunk(parts[0]) + response_encoder.chunk(parts[1])
    out += response_encoder.final(parts[2])
    assert out.hex() == v["encapsulated_response_hex"]
    # Client decodes the published response, one byte at a time.
    response_decoder = ChunkedResponseDecoder(encoder.context)
    opened: list[bytes] = []
    for byte in bytes.fromhex(v["encapsulated_response_hex"]):
        opened += response_decoder.feed(bytes([byte]))
    opened.append(response_decoder.finish())
    assert opened == parts
    assert b"".join(opened).hex() == v["binary_http_response_hex"]


def _fields(pairs: list[list[str]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((n.encode(), val.encode()) for n, val in pairs)


def _bhttp_examples(shared_vectors: Path) -> list[dict[str, Any]]:
    data = _load(shared_vectors, "rfc9292_bhttp_examples.json")
    examples: list[dict[str, Any]] = data["examples"] + data["extra_examples"]
    return examples


def test_rfc9292_every_example(shared_vectors: Path) -> None:
    examples = _bhttp_examples(shared_vectors)
    assert len(examples) == 7
    for ex in examples:
        raw = bytes.fromhex(ex["hex"])
        d = ex["decoded"]
        framing = d["framing_indicator"]
        truncated = "truncated" in d.get("note", "")
        options = {
            "indeterminate": framing in (2, 3),
            "padding": d.get("padding_len", 0),
            "truncate": truncated,
        }
        if framing in (0, 2):
            message = bhttp.decode_request(raw)
            expected_req = bhttp.Request(
                d["method"].encode(), d["scheme"].encode(), d["authority"].encode(),
                d["path"].encode(), _fields(d.get("header", [])),
                d.get("content", "").encode(), _fields(d.get("trailer", [])),
            )
            assert message == expected_req, ex["id"]
            assert bhttp.encode_request(message, **options) == raw, ex["id"]
        else:
            response = bhttp.decode_response(raw)
            expected = bhttp.Response(
                d["status"], _fields(d.get("header", [])), d.get("content", "").encode(),
                _fields(d.get("trailer", [])),
                tuple(
                    bhttp.InformationalResponse(i["status"], _fields(i["fields"]))
                    for i in d.get("informational", [])
                ),
            )
            assert response == expected, ex["id"]
            assert bhttp.encode_response(response, **options) == raw, ex["id"]
