"""`hushcc issuer keygen|serve`: key files, the RFC 9578 directory and POST /token-request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.cli import main as hushcc
from hushcc.errors import ConfigError, ProtocolError
from relay import authscheme
from relay.issuer import Quota, read_api_keys
from relay.issuer_keys import PinnedKey, read_private_key
from relay.privacypass import (
    TokenChallenge,
    TokenRequest,
    TokenResponse,
    begin_issuance,
    finalize_token,
    verify_token,
)
from tests.relay.relay_helpers import make_issuer, start
from tests.relay.token_parsers import KEY as FUZZ_KEY

API_KEY = "k-" + "7" * 30
CHALLENGE = TokenChallenge(2, "issuer.test", b"", "relay.test")


def test_keygen_writes_private_0600_and_pinned_record_and_never_overwrites(tmp_path: Path) -> None:
    issuer = make_issuer(tmp_path)
    assert issuer.key.stat().st_mode & 0o777 == 0o600
    assert issuer.pinned.not_after - issuer.pinned.not_before == 30 * 86400
    assert issuer.pinned.key.rsa_key.public_numbers() == issuer.signer.public_key.public_numbers()
    assert hushcc(["issuer", "keygen", "--out", str(issuer.key)]) == 1
    issuer.key.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        read_private_key(issuer.key)


def test_api_key_file_must_be_private_and_non_empty(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# comment\n\n" + API_KEY + "\n")
    path.chmod(0o600)
    assert len(read_api_keys(path)) == 1
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="readable by others"):
        read_api_keys(path)
    path.write_text("# nothing\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="no keys"):
        read_api_keys(path)


def test_quota_is_a_batch_per_window() -> None:
    now = [0.0]
    quota = Quota(3, 60.0, clock=lambda: now[0])
    assert [quota.take(b"a") for _ in range(3)] == [0, 0, 0]
    assert quota.take(b"a") == 60.0
    assert quota.take(b"b") == 0
    now[0] = 61.0
    assert quota.take(b"a") == 0


def test_issuer_service_issues_tokens_that_verify(tmp_path: Path) -> None:
    issuer = make_issuer(tmp_path)
    keys = tmp_path / "api-keys"
    keys.write_text(API_KEY + "\n")
    keys.chmod(0o600)
    service = start(["issuer", "serve", "--port", "0", "--key", str(issuer.key), "--api-keys",
                     str(keys), "--quota", "3"], tmp_path, "issuer")
    try:
        asyncio.run(_exercise(service.url, issuer.pinned.key))
    finally:
        assert service.stop() == 0
    assert API_KEY not in service.stderr_text()


async def _exercise(url: str, pinned: object) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(url + authscheme.DIRECTORY_PATH) as r:
            assert r.status == 200
            assert r.content_type == authscheme.DIRECTORY_MEDIA_TYPE
            assert r.headers["Cache-Control"].startswith("max-age=")
            directory = authscheme.IssuerDirectory.from_bytes(await r.read())
        key = directory.token_keys[0].key
        assert key == pinned  # T4: the served key is the pinned one
        target = url + directory.issuer_request_uri
        good = {"Authorization": f"Bearer {API_KEY}",
                "Content-Type": authscheme.REQUEST_MEDIA_TYPE}

        request, state = begin_issuance(key, CHALLENGE)
        async with s.post(target, data=request.to_bytes(), headers=good) as r:
            assert r.status == 200
            assert r.content_type == authscheme.RESPONSE_MEDIA_TYPE
            response = TokenResponse.from_bytes(await r.read())
        verify_token(key, finalize_token(key, state, response), CHALLENGE)

        async def status(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
            async with s.post(target, data=body, headers=headers) as r:
                return r.status, dict(r.headers)

        fresh, _ = begin_issuance(key, CHALLENGE)
        assert (await status(fresh.to_bytes(), {**good, "Authorization": "Bearer wrong"}))[0] == 401
        assert (await status(fresh.to_bytes(), {"Content-Type": good["Content-Type"]}))[0] == 401
        assert (await status(fresh.to_bytes(), {**good, "Content-Type": "text/plain"}))[0] == 415
        other_key = TokenRequest((fresh.truncated_token_key_id + 1) % 256, fresh.blinded_msg)
        assert (await status(other_key.to_bytes(), good))[0] == 422
        assert (await status(fresh.to_bytes()[:-1], good))[0] == 422
        assert (await status(b"\x00\x01" + fresh.to_bytes()[2:], good))[0] == 422
        assert (await status(fresh.to_bytes() + bytes(4096), good))[0] == 413
        # The batch is 3 tokens: 2 more succeed, then 429 with Retry-After.
        assert (await status(fresh.to_bytes(), good))[0] == 200
        assert (await status(fresh.to_bytes(), good))[0] == 200
        code, headers = await status(fresh.to_bytes(), good)
        assert code == 429
        assert int(headers["Retry-After"]) >= 1


@given(start=st.integers(0, 2**40), length=st.integers(1, 2**32))
def test_pinned_key_record_round_trip(start: int, length: int) -> None:
    pinned = PinnedKey(FUZZ_KEY, start, start + length)
    assert PinnedKey.from_bytes(pinned.to_bytes()) == pinned
    with pytest.raises(ProtocolError):
        PinnedKey.from_bytes(PinnedKey(FUZZ_KEY, start + length, start).to_bytes())
