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


def test_concurrent_takes_share_writes_and_each_removal_is_on_disk_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import client.tokens  # noqa: PLC0415

    issuer = make_issuer(tmp_path)
    tokens = [mint(issuer, CHALLENGE) for _ in range(8)]
    writes: list[int] = []
    real = client.tokens.write_private_atomically

    def counted(path: Path, data: bytes) -> None:
        writes.append(len(json.loads(data)["tokens"]))
        real(path, data)

    monkeypatch.setattr(client.tokens, "write_private_atomically", counted)
    path = tmp_path / "tokens.json"

    async def take_and_check(wallet: TokenWallet) -> str:
        header = await wallet.take()
        assert header is not None
        on_disk = json.loads(path.read_text())["tokens"]
        assert b64url_encode(parse_authorization(header).to_bytes()) not in on_disk
        return header

    async def together() -> list[str]:
        wallet = _wallet(tmp_path, issuer, tokens)
        return await asyncio.gather(*(take_and_check(wallet) for _ in range(6)))

    headers = asyncio.run(together())
    assert len(set(headers)) == 6
    assert writes == [2]  # six takes in one loop turn: one write of the two left (group commit)
    assert len(_wallet(tmp_path, issuer)) == 2  # a new process sees the two left

    writes.clear()
    wallet = _wallet(tmp_path, issuer)

    async def one_by_one() -> None:
        for _ in range(2):
            await take_and_check(wallet)

    asyncio.run(one_by_one())
    assert writes == [1, 0]  # the twin: takes one after another write one file each
