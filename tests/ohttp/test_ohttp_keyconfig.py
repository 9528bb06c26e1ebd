"""Key configurations (RFC 9458 §3): single config, application/ohttp-keys lists, key files."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import ProtocolError
from ohttp.keyconfig import GatewayKey, KeyConfig, parse_key_configs, serialize_key_configs
from ohttp.suites import AeadId, KdfId, KemId, SymmetricSuite, UnsupportedAlgorithmError
from tests.ohttp.ohttp_helpers import ALL_SUITES, make_key

KEY = make_key(5)
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
