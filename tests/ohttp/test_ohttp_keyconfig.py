"""Key configurations (RFC 9458 §3): single config, application/ohttp-keys lists, key files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import ProtocolError
from ohttp.chunked import ChunkedRequestEncoder
from ohttp.encapsulation import encapsulate_request
from ohttp.keyconfig import (
    GatewayKey,
    KeyConfig,
    parse_key_configs,
    parse_public_key_config,
    serialize_key_configs,
)
from ohttp.suites import AeadId, KdfId, KemId, SymmetricSuite, UnsupportedAlgorithmError
from tests.ohttp.ohttp_helpers import ALL_SUITES, make_key

KEY = make_key(5)
SUBSET = Path(__file__).resolve().parents[1] / "vectors" / "wycheproof" / "ohttp_subset.json"
RFC_CONFIG = bytes.fromhex(
    "01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e79815500080001000100010003"
)

configs = st.builds(
    lambda key_id, suites, seed: make_key(key_id, seed, tuple(dict.fromkeys(suites))).config,
    st.integers(0, 255),
    st.lists(st.sampled_from(ALL_SUITES), min_size=1, max_size=9),
    st.binary(min_size=1, max_size=4),
)


@settings(max_examples=50)
@given(st.lists(configs, min_size=1, max_size=4))
def test_config_and_list_round_trip(config_list: list[KeyConfig]) -> None:
    for config in config_list:
        assert KeyConfig.from_bytes(config.to_bytes()) == config
    assert parse_key_configs(serialize_key_configs(config_list)) == tuple(config_list)


def test_list_uses_two_byte_length_prefixes() -> None:
    body = serialize_key_configs([KeyConfig.from_bytes(RFC_CONFIG)])
    assert body == len(RFC_CONFIG).to_bytes(2, "big") + RFC_CONFIG


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "truncated", id="empty"),
        pytest.param(RFC_CONFIG[:2], "truncated", id="no-kem"),
        pytest.param(RFC_CONFIG[:20], "truncated", id="short-public-key"),
        pytest.param(RFC_CONFIG[:-1], "truncated", id="short-suites"),
        pytest.param(RFC_CONFIG + b"\x00", "trailing", id="trailing"),
        pytest.param(RFC_CONFIG[:1] + b"\x00\x10" + RFC_CONFIG[3:], "KEM", id="kem-p256"),
        pytest.param(RFC_CONFIG[:1] + b"\xff\xff" + RFC_CONFIG[3:], "KEM", id="kem-unknown"),
        pytest.param(RFC_CONFIG[:-4] + b"\x00\x09\x00\x01", "KDF", id="kdf-unknown"),
        pytest.param(RFC_CONFIG[:-4] + b"\x00\x01\xff\xff", "AEAD", id="aead-export-only"),
        pytest.param(RFC_CONFIG[:35] + b"\x00\x00", "multiple of 4", id="no-suites"),
        pytest.param(RFC_CONFIG[:35] + b"\x00\x06" + RFC_CONFIG[37:43], "multiple of 4",
                     id="suites-len-6"),
    ],
)
def test_malformed_configs_are_clear_errors(data: bytes, message: str) -> None:
    assert KeyConfig.from_bytes(RFC_CONFIG).key_id == 1
    with pytest.raises(ProtocolError, match=message):
        KeyConfig.from_bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty-list"),
        pytest.param(b"\x00", id="half-prefix"),
        pytest.param(b"\x00\x30" + RFC_CONFIG, id="prefix-too-long"),
        pytest.param(b"\x00\x20" + RFC_CONFIG, id="prefix-too-short"),
        pytest.param(b"\x00\x2d" + RFC_CONFIG + b"\x00", id="trailing-garbage"),
    ],
)
def test_malformed_lists(data: bytes) -> None:
    assert parse_key_configs(b"\x00\x2d" + RFC_CONFIG)[0].key_id == 1
    with pytest.raises(ProtocolError):
        parse_key_configs(data)


def test_config_constructor_validates() -> None:
    good = KEY.config
    with pytest.raises(ProtocolError):
        KeyConfig(256, good.kem_id, good.public_key, good.suites)
    with pytest.raises(ProtocolError):
        KeyConfig(1, good.kem_id, good.public_key[:31], good.suites)
    with pytest.raises(ProtocolError):
        KeyConfig(1, good.kem_id, good.public_key, ())
    with pytest.raises(ProtocolError):
        serialize_key_configs([])


def test_key_file_round_trip_and_errors() -> None:
    data = KEY.to_key_file()
    loaded = GatewayKey.from_key_file(data)
    assert loaded.config == KEY.config
    other = make_key(5, b"other")
    tampered = data.replace(KEY.config.public_key.hex().encode(), other.config.public_key.hex()
                            .encode())
    for bad in (b"", b"{}", b"[]", b"\xff", b'{"format": "x"}', tampered, b"[" * 100_000,
                data.replace(b"hushcc-ohttp-gateway-key/v1", b"other/v1")):
        with pytest.raises(ProtocolError) as info:
            GatewayKey.from_key_file(bad)
        assert KEY.to_key_file().decode().split('"private_key": "')[1][:64] not in str(info.value)


def test_private_key_must_match_config() -> None:
    with pytest.raises(ProtocolError):
        GatewayKey(make_key(1, b"a").config, make_key(1, b"b")._private)
    with pytest.raises(ProtocolError):
        GatewayKey.from_private_bytes(1, ALL_SUITES, b"short")


def test_suite_parameters() -> None:
    suite = SymmetricSuite(KdfId.HKDF_SHA256, AeadId.AES_256_GCM)
    assert (suite.key_length, suite.nonce_length, suite.tag_length) == (32, 12, 16)
    assert int(KemId.DHKEM_X25519_HKDF_SHA256) == 0x20


def test_unsupported_entries_can_be_skipped_in_a_list() -> None:
    p256_like = RFC_CONFIG[:1] + b"\x00\x10" + RFC_CONFIG[3:]  # KEM 0x0010: not supported here
    body = serialize_key_configs([KEY.config])
    mixed = len(p256_like).to_bytes(2, "big") + p256_like + body
    with pytest.raises(UnsupportedAlgorithmError):
        parse_key_configs(mixed)
    assert parse_key_configs(mixed, skip_unsupported=True) == (KEY.config,)
    only_unsupported = len(p256_like).to_bytes(2, "big") + p256_like
    with pytest.raises(ProtocolError, match="no supported entry"):
        parse_key_configs(only_unsupported, skip_unsupported=True)
    # Malformed (a supported KEM, truncated key) is never skipped, only unsupported algorithms.
    malformed = b"\x00\x05\x01\x00\x20ab" + body
    with pytest.raises(ProtocolError):
        parse_key_configs(malformed, skip_unsupported=True)


# --- low-order X25519 public keys are refused at parse (issue 9 item 11) ----------------------

_P = 2**255 - 19
_LOW_ORDER = [0, 1, _P - 1, _P, _P + 1,
              325606250916557431795983626356110631294008115727848805560023387167927233504,
              39382357235489614581723060781553021112529911719440698176882885853963445705823]



def _encoding(point: int, *, top_bit: bool) -> bytes:
    """Little-endian u-coordinate, with bit 255 set if asked (X25519 ignores it, RFC 7748 §5)."""
    return (point + (1 << 255 if top_bit else 0)).to_bytes(32, "little")


LOW_ORDER_KEYS = [
    pytest.param(_encoding(point, top_bit=top), id=f"{i}{'-top-bit' if top else ''}")
    for i, point in enumerate(_LOW_ORDER)
    for top in (False, True)
]
WYCHEPROOF_X25519 = json.loads(SUBSET.read_text())["files"]["x25519_test.json"]["tests"]
WYCHEPROOF_LOW_ORDER = sorted({t["public"] for t in WYCHEPROOF_X25519
                               if {"LowOrderPublic", "ZeroSharedSecret"} & set(t["flags"])})
WYCHEPROOF_OTHER = sorted({t["public"] for t in WYCHEPROOF_X25519
                           if not {"LowOrderPublic", "ZeroSharedSecret"} & set(t["flags"])})


def _with_public_key(public_key: bytes) -> bytes:
    return RFC_CONFIG[:3] + public_key + RFC_CONFIG[35:]


@pytest.mark.parametrize("public_key", [
    *LOW_ORDER_KEYS, *(pytest.param(bytes.fromhex(k), id=f"wycheproof-{k[:8]}")
                       for k in WYCHEPROOF_LOW_ORDER)])
def test_low_order_public_key_is_refused_at_parse(public_key: bytes) -> None:
    assert KeyConfig.from_bytes(RFC_CONFIG).public_key == RFC_CONFIG[3:35]  # positive twin
    with pytest.raises(ProtocolError, match="low-order"):
        KeyConfig.from_bytes(_with_public_key(public_key))
    with pytest.raises(ProtocolError, match="low-order"):
        parse_key_configs(serialize_key_configs([KEY.config]).replace(
            KEY.config.public_key, public_key))
    with pytest.raises(ProtocolError, match="low-order"):
        KeyConfig(1, KemId.DHKEM_X25519_HKDF_SHA256, public_key, ALL_SUITES)


@pytest.mark.parametrize("public_key", WYCHEPROOF_OTHER)
def test_other_wycheproof_public_keys_are_accepted(public_key: str) -> None:
    config = KeyConfig.from_bytes(_with_public_key(bytes.fromhex(public_key)))
    assert config.public_key.hex() == public_key
    assert encapsulate_request(config, b"x")[0][7:39] != bytes(32)


def test_encapsulation_maps_the_crypto_librarys_error_at_the_seam() -> None:
    # A config that skipped validation (built around __post_init__): pyca's bare ValueError on
    # the all-zero DH output must leave as ProtocolError, on the client side too (G9).
    config = KeyConfig.from_bytes(RFC_CONFIG)
    assert encapsulate_request(config, b"x")  # positive twin
    object.__setattr__(config, "public_key", bytes(32))
    for encapsulate in (lambda: encapsulate_request(config, b"x"),
                        lambda: ChunkedRequestEncoder(config)):
        with pytest.raises(ProtocolError) as info:
            encapsulate()
        assert type(info.value) is ProtocolError


# --- the one reader of a public key configuration (issue 11 item 2) ---------------------------

ONE = serialize_key_configs([KEY.config])


def test_public_key_config_reader_accepts_exactly_one() -> None:
    assert parse_public_key_config(ONE) == KEY.config
    assert parse_public_key_config(b"\x00\x2d" + RFC_CONFIG) == KeyConfig.from_bytes(RFC_CONFIG)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "no supported entry", id="empty"),
        pytest.param(ONE + ONE, "exactly one", id="two-configs"),
        pytest.param(ONE + b"\x00", "truncated", id="trailing-byte"),
        pytest.param(ONE + bytes(2), "truncated", id="trailing-empty-entry"),
        pytest.param(ONE[2:], "truncated", id="bare-config-without-length"),
        pytest.param(bytes(random.Random(7).getrandbits(8) for _ in range(1024)), None,
                     id="random-1024-bytes"),
        pytest.param(KEY.to_key_file(), "private key file", id="gateway-private-key-file"),
        pytest.param(KEY.to_key_file().replace(b"\n", b""), "private key file",
                     id="gateway-private-key-file-one-line"),
        pytest.param(b'{"private_key": "00"}', "private key file", id="private-key-json"),
        pytest.param(b"-----BEGIN PRIVATE KEY-----\nMC4CAQA=\n-----END PRIVATE KEY-----\n",
                     "private key", id="pem-private-key"),
        pytest.param(b"PRIVATE+KEY+log.example+0a1b2c3d+AbCd", "private key",
                     id="signed-note-private-key"),
    ],
)
def test_public_key_config_reader_refuses(data: bytes, message: str | None) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        parse_public_key_config(data)
    assert KEY.to_key_file().decode().split('"private_key": "')[1][:64] not in str(info.value)


def test_public_config_given_as_private_key_file_is_named() -> None:
    assert GatewayKey.from_key_file(KEY.to_key_file()).config == KEY.config  # positive twin
    with pytest.raises(ProtocolError, match="public OHTTP key configuration"):
        GatewayKey.from_key_file(ONE)
