"""C2SP signed-note and tlog-checkpoint against signed_note_checkpoint_vectors.json (L8)."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import ProtocolError, VerificationError
from transparency_log import merkle
from transparency_log.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from transparency_log.note import Note, Signer, Verifier, open_note, sign_note

if TYPE_CHECKING:
    from pathlib import Path


def _items(shared_vectors: Path) -> dict[str, Any]:
    data = json.loads((shared_vectors / "signed_note_checkpoint_vectors.json").read_text())
    return {item["id"]: item for item in data["items"]}


def test_c2sp_signed_note_example_verifies(shared_vectors: Path) -> None:
    item = _items(shared_vectors)["c2sp-signed-note-example"]
    v = Verifier.from_string(item["verifier_key"])
    assert v.public_key.hex() == item["verifier_key_decoded"]["ed25519_public_key_hex"]
    assert v.to_string() == item["verifier_key"]
    opened = open_note(item["signed_note"].encode(), [v])
    assert opened.text == item["note_text"].encode()
    assert [s.name for s in opened.verified] == ["example.com/foo"]


def test_go_note_signer_reproduces_signed_note_exactly(shared_vectors: Path) -> None:
    item = _items(shared_vectors)["go-x-mod-note-PeterNeumann"]
    signer = Signer.from_string(item["signer_key"])
    assert signer.to_string() == item["signer_key"]
    assert signer.verifier().to_string() == item["verifier_key"]
    assert sign_note(item["note_text"].encode(), [signer]) == item["signed_note"].encode()
    open_note(item["signed_note"].encode(), [Verifier.from_string(item["verifier_key"])])


def test_go_note_two_signatures_unknown_key_ignored(shared_vectors: Path) -> None:
    item = _items(shared_vectors)["go-x-mod-note-two-signatures"]
    peter, enoch = (Verifier.from_string(k) for k in item["verifier_keys"])
    msg = item["signed_note"].encode()
    one = open_note(msg, [peter])
    assert [s.name for s in one.verified] == ["PeterNeumann"]
    assert [s.name for s in one.unverified] == ["EnochRoot"]
    both = open_note(msg, [peter, enoch])
    assert len(both.verified) == 2
    assert Note.from_bytes(msg).to_bytes() == msg
    with pytest.raises(VerificationError, match="no signature from a known key"):
        open_note(msg, [Verifier.from_string(
            _items(shared_vectors)["c2sp-signed-note-example"]["verifier_key"])])


def _raw(s: str) -> bytes:
    # The vector file writes the Go test's raw leading bytes 0x01 / 0xff as U+0001 / U+00FF.
    if s and s[0] in "\x01\xff":
        return bytes([ord(s[0])]) + s[1:].encode()
    return s.encode()


def test_go_note_malformed_cases_rejected(shared_vectors: Path) -> None:
    item = _items(shared_vectors)["go-x-mod-note-two-signatures"]
    peter = Verifier.from_string(item["verifier_keys"][0])
    neg = item["negative_cases_from_source"]
    for case in neg["expected_error_malformed_note"]:
        with pytest.raises(ProtocolError):
            open_note(_raw(case), [peter])
    line = item["signature_lines"][0]
    too_many = item["note_text"] + "\n" + (line + "\n") * 101
    with pytest.raises(ProtocolError, match="too many"):
        open_note(too_many.encode(), [peter])
    hundred = item["note_text"] + "\n" + (line + "\n") * 100
    assert len(open_note(hundred.encode(), [peter]).verified) == 100  # positive twin
    bad = neg["expected_error_invalid_signature_for_key_PeterNeumann+c74f20a3"]
    with pytest.raises(VerificationError, match="invalid signature for key PeterNeumann"):
        open_note(bad.encode(), [peter])


def test_go_sumdb_tree_notes_are_checkpoints(shared_vectors: Path) -> None:
    item = _items(shared_vectors)["go-sumdb-tree-notes"]
    v = Verifier.from_string(item["verifier_key"])
    signer = Signer.from_string(item["signer_key"])
    sizes = []
    for n in item["notes"]:
        note = (n["note_text"] + "\n" + "".join(x + "\n" for x in n["signature_lines"])).encode()
        signed = open_checkpoint(note, v, "go.sum database tree")
        assert signed.checkpoint.to_bytes() == n["note_text"].encode()
        assert sign_note(n["note_text"].encode(), [signer]) == note
        sizes.append(signed.checkpoint.size)
        with pytest.raises(VerificationError, match="origin"):
            open_checkpoint(note, v, "other origin")
    assert sizes == [6, 5]


def test_rekor_v2_checkpoint_and_inclusion_proof(shared_vectors: Path) -> None:
    item = _items(shared_vectors)["sigstore-rekor-v2-staging-checkpoint"]
    from cryptography.hazmat.primitives.serialization import load_der_public_key  # noqa: PLC0415

    pub = load_der_public_key(base64.b64decode(item["log_public_key_spki_der_b64"]))
    raw = pub.public_bytes_raw()  # type: ignore[union-attr]
    assert raw.hex() == item["log_public_key_ed25519_hex"]
    name = "log2025-alpha3.rekor.sigstage.dev"
    from transparency_log.note import key_hash  # noqa: PLC0415

    v = Verifier(name, key_hash(name, 1, raw), raw)
    assert v.to_string() == item["derived_verifier_key"]
    signed = open_checkpoint(item["checkpoint_envelope"].encode(), v, name)
    assert len(signed.opened.unverified) == 3  # the witnesses, unknown here, are ignored
    proof = item["inclusion_proof"]
    assert signed.checkpoint.size == proof["tree_size"]
    assert signed.checkpoint.root.hex() == proof["root_hash_hex"]
    leaf = merkle.leaf_hash(base64.b64decode(proof["leaf_canonicalized_body_b64"]))
    assert leaf.hex() == proof["leaf_hash_hex"]
    hashes = [bytes.fromhex(h) for h in proof["hashes_hex"]]
    merkle.verify_inclusion(proof["log_index"], proof["tree_size"], leaf, hashes,
                            signed.checkpoint.root)
    with pytest.raises(VerificationError):
        merkle.verify_inclusion(proof["log_index"] - 1, proof["tree_size"], leaf, hashes,
                                signed.checkpoint.root)


def test_c2sp_checkpoint_example_parses(shared_vectors: Path) -> None:
    item = _items(shared_vectors)["c2sp-tlog-checkpoint-example-unverifiable"]
    note = Note.from_bytes(item["signed_note"].encode())
    cp = Checkpoint.from_bytes(note.text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert base64.b64encode(cp.root).decode() == "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="


ROOT_B64 = base64.b64encode(b"\x11" * 32).decode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(f"o\n-1\n{ROOT_B64}\n", id="negative-size"),
        pytest.param(f"o\n1.5\n{ROOT_B64}\n", id="non-integer-size"),
        pytest.param(f"o\n{1 << 63}\n{ROOT_B64}\n", id="overflowing-size"),
        pytest.param(f"o\n0012\n{ROOT_B64}\n", id="leading-zero-size"),
        pytest.param(f"o\n+12\n{ROOT_B64}\n", id="plus-size"),
        pytest.param("o\n12\n!!!!\n", id="bad-base64-root"),
        pytest.param(f"o\n12\n{base64.b64encode(b'x' * 31).decode()}\n", id="short-root"),
        pytest.param(f"o\n12\n{ROOT_B64}", id="no-final-newline"),
        pytest.param("o\n12\n", id="missing-root"),
        pytest.param(f"\n12\n{ROOT_B64}\n", id="empty-origin"),
        pytest.param(f"o\n12\n{ROOT_B64}\n\n", id="empty-extension"),
        pytest.param(f"o\n\u0661\n{ROOT_B64}\n", id="unicode-digit-size"),
    ],
)
def test_malformed_checkpoint_bodies_rejected_l8(body: str) -> None:
    with pytest.raises(ProtocolError):
        Checkpoint.from_bytes(body.encode())


def test_valid_checkpoint_body_positive_twin_l8() -> None:
    cp = Checkpoint.from_bytes(f"o\n{(1 << 63) - 1}\n{ROOT_B64}\next one\n".encode())
    assert cp.size == (1 << 63) - 1
    assert cp.extensions == ("ext one",)


def test_wrong_log_key_rejected_l8() -> None:
    log = Signer.generate("log.example")
    other = Signer.generate("log.example")
    note = sign_checkpoint(Checkpoint("log.example", 3, b"\x22" * 32), log)
    assert open_checkpoint(note, log.verifier(), "log.example").checkpoint.size == 3
    with pytest.raises(VerificationError):
        open_checkpoint(note, other.verifier(), "log.example")


@settings(max_examples=50)
@given(size=st.integers(0, (1 << 63) - 1), root=st.binary(min_size=32, max_size=32),
       ts=st.none() | st.integers(0, (1 << 63) - 1))
def test_checkpoint_roundtrip(size: int, root: bytes, ts: int | None) -> None:
    cp = Checkpoint("example.org/log", size, root)
    if ts is not None:
        cp = cp.with_timestamp(ts)
    assert Checkpoint.from_bytes(cp.to_bytes()) == cp
    assert cp.timestamp == ts


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_note_parser_only_raises_protocol_error(data: bytes) -> None:
    try:
        note = Note.from_bytes(data)
    except ProtocolError:
        return
    assert note.to_bytes() == data


@pytest.mark.parametrize("vkey", [
    "bad+name+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW+x",
])
def test_malformed_verifier_keys_rejected(vkey: str) -> None:
    with pytest.raises(ProtocolError):
        Verifier.from_string(vkey)
    Verifier.from_string("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_rekor_witness_lines_are_cosignature_v1_shaped(shared_vectors: Path) -> None:
    """The witness keys are not published with the vector: check the timestamped_signature shape,
    and that an unknown witness policy is not met (and a known local witness is, as the twin)."""
    from transparency_log.cosignature import Cosigner, WitnessPolicy  # noqa: PLC0415

    item = _items(shared_vectors)["sigstore-rekor-v2-staging-checkpoint"]
    note = Note.from_bytes(item["checkpoint_envelope"].encode())
    witnesses = note.signatures[1:]
    assert len(witnesses) == 3
    for sig in witnesses:
        assert len(sig.sig) == 8 + 64
        assert 1_600_000_000 < int.from_bytes(sig.sig[:8], "big") < 2_000_000_000
    local = Cosigner.generate("witness.local")
    policy = WitnessPolicy((local.verifier(),), 1)
    with pytest.raises(VerificationError):
        policy.verify(item["checkpoint_envelope"].encode())
    cosigned = local.cosign(item["checkpoint_envelope"].encode(), 1_780_000_000)
    assert policy.verify(cosigned) == [1_780_000_000]


def test_go_tree_note_format_example(shared_vectors: Path) -> None:
    data = json.loads((shared_vectors / "signed_note_checkpoint_vectors.json").read_text())
    ex = data["go_tree_note_format_example"]
    cp = Checkpoint("go.sum database tree", ex["tree_size"], merkle.leaf_hash(b"hello world"))
    assert cp.to_bytes() == ex["formatted"].encode()
    assert Checkpoint.from_bytes(ex["formatted"].encode()) == cp
