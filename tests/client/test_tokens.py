"""The token wallet: spent before use, kept 0600, other keys' and challenges' tokens dropped."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest

from client.tokens import TokenWallet
from hushcc.errors import ConfigError
from relay.authscheme import b64url_encode, parse_authorization
from relay.privacypass import TokenChallenge
from tests.relay.relay_helpers import make_issuer, mint

if TYPE_CHECKING:
    from pathlib import Path

CHALLENGE = TokenChallenge(2, "issuer.test", b"", "relay.test")


def _wallet(tmp_path: Path, issuer, tokens=(), challenge: TokenChallenge = CHALLENGE,
            clock: float | None = None) -> TokenWallet:
    path = tmp_path / "tokens.json"
    if tokens:
        path.write_text(json.dumps({"format": "hushcc-token-wallet/v1", "tokens": [
            b64url_encode(t.to_bytes()) for t in tokens]}))
    now = clock if clock is not None else issuer.pinned.not_before + 1
    return TokenWallet(issuer.pinned, challenge, path=path, clock=lambda: now)


def test_a_token_is_removed_on_disk_before_it_is_handed_out(tmp_path: Path) -> None:
    issuer = make_issuer(tmp_path)
    tokens = [mint(issuer, CHALLENGE) for _ in range(3)]
    wallet = _wallet(tmp_path, issuer, tokens)
    assert len(wallet) == 3
    header = asyncio.run(wallet.take())
    assert header is not None
    assert parse_authorization(header) == tokens[-1]
    on_disk = json.loads((tmp_path / "tokens.json").read_text())["tokens"]
    assert len(on_disk) == 2
    assert b64url_encode(tokens[-1].to_bytes()) not in on_disk
    assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600
    assert len(_wallet(tmp_path, issuer)) == 2  # a new process sees the same two


def test_tokens_of_another_key_challenge_or_epoch_are_never_sent(tmp_path: Path) -> None:
    issuer, other = make_issuer(tmp_path), make_issuer(tmp_path, "other.key")
    elsewhere = TokenChallenge(2, "issuer.test", b"", "another-relay.test")
    wallet = _wallet(tmp_path, issuer, [mint(other, CHALLENGE), mint(issuer, elsewhere)])
    assert len(wallet) == 0
    assert asyncio.run(wallet.take()) is None
    expired = _wallet(tmp_path, issuer, [mint(issuer, CHALLENGE)],
                      clock=issuer.pinned.not_after + 1)
    assert asyncio.run(expired.take()) is None
    # the positive twin: the right key, challenge and epoch
    assert asyncio.run(_wallet(tmp_path, issuer, [mint(issuer, CHALLENGE)]).take())


@pytest.mark.parametrize("text", ["", "[]", '{"format": "x", "tokens": []}',
                                  '{"format": "hushcc-token-wallet/v1", "tokens": ["!!"]}'])
def test_a_malformed_wallet_is_a_one_line_config_error(tmp_path: Path, text: str) -> None:
    issuer = make_issuer(tmp_path)
    (tmp_path / "tokens.json").write_text(text)
    with pytest.raises(ConfigError, match="token wallet is malformed"):
        TokenWallet(issuer.pinned, CHALLENGE, path=tmp_path / "tokens.json", clock=lambda: 0.0)
