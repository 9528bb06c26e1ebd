"""Every Privacy Pass / PrivateToken parser behind one signature, with seeds, for the fuzzers.

Invariant: a parser returns a value or raises ProtocolError; any other exception is a bug.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import rsa

from hushcc.errors import ProtocolError
from relay import authscheme
from relay.issuer_keys import PinnedKey
from relay.privacypass import (
    IssuerPublicKey,
    Token,
    TokenChallenge,
    TokenRequest,
    TokenResponse,
)

if TYPE_CHECKING:
    from collections.abc import Callable

KEY = IssuerPublicKey.from_rsa(rsa.generate_private_key(65537, 2048).public_key())
CHALLENGE = TokenChallenge(2, "issuer.test", bytes(range(32)), "a.test,b.test")
TOKEN = Token(bytes(32), CHALLENGE.digest, KEY.token_key_id, bytes(range(256)))
DIRECTORY = authscheme.IssuerDirectory("/token-request", (authscheme.TokenKeyEntry(KEY, 5),))


def _text(parse: Callable[[str], object]) -> Callable[[bytes], object]:
    return lambda data: parse(data.decode("latin-1"))


PARSERS: dict[str, tuple[Callable[[bytes], object], bytes]] = {
    "token_challenge": (TokenChallenge.from_bytes, CHALLENGE.to_bytes()),
    "token_request": (TokenRequest.from_bytes, TokenRequest(7, bytes(256)).to_bytes()),
    "token_response": (TokenResponse.from_bytes, bytes(256)),
    "token": (Token.from_bytes, TOKEN.to_bytes()),
    "token_key": (IssuerPublicKey.from_spki, KEY.spki),
    "directory": (authscheme.IssuerDirectory.from_bytes, DIRECTORY.to_bytes()),
    "pinned_key": (PinnedKey.from_bytes, PinnedKey(KEY, 1, 2).to_bytes()),
    "authorization": (_text(authscheme.parse_authorization),
                      authscheme.format_authorization(TOKEN).encode()),
    "auth_params": (_text(authscheme.parse_auth_params),
                    authscheme.format_challenge(CHALLENGE, KEY, 9).split(" ", 1)[1].encode()),
}


def run(name: str, data: bytes) -> bool:
    """Run one parser; True if it returned a value, False if it raised ProtocolError."""
    parser, _ = PARSERS[name]
    try:
        parser(data)
    except ProtocolError:
        return False
    return True
