"""Token redemption at the relay: RFC 9577 `Authorization: PrivateToken` checked, then spent.

The relay is the Privacy Pass origin. It issues one fixed TokenChallenge (token type 2, the pinned
issuer's name, empty redemption context, the relay's name as origin_info), so clients can fetch
tokens in batches ahead of time and every token looks alike (RFC 9577 §2.1.4 caching).

`Redeemer.redeem` steps, each failing closed:
1. parse the credential (RFC 9577 §2.2) -> `TokenRejectedError`;
2. the pinned key's epoch contains now -> `TokenRejectedError`;
3. verify against the pinned key and the relay's challenge (RFC 9578 §6.4, T4) -> rejected;
4. record SHA-256(token input) in the spent store until the epoch ends; already there -> rejected
   (double spend, T5); the store unavailable -> `SpentStoreUnavailableError` (503).
A rejection carries no detail; `challenge_header` is the 401's `WWW-Authenticate` value.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from hushcc.errors import HushError, ProtocolError, VerificationError
from relay.authscheme import format_challenge, parse_authorization
from relay.privacypass import TOKEN_TYPE_BLIND_RSA, TokenChallenge, verify_token

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.issuer_keys import PinnedKey
    from relay.spent import SpentStore


class TokenRejectedError(HushError):
    """No valid, unspent token: answer 401 with the challenge."""


def relay_challenge(issuer_name: str, origin_name: str) -> TokenChallenge:
    """The relay's one TokenChallenge."""
    return TokenChallenge(TOKEN_TYPE_BLIND_RSA, issuer_name, b"", origin_name)


class Redeemer:
    """Checks and spends tokens for one pinned issuer key."""

    def __init__(self, pinned: PinnedKey, challenge: TokenChallenge, store: SpentStore,
                 clock: Callable[[], float] = time.time) -> None:
        """Accept tokens for `challenge` signed by `pinned`, spending them in `store`."""
        self.pinned = pinned
        self.challenge = challenge
        self.store = store
        self.clock = clock
        self.challenge_header = format_challenge(challenge, pinned.key)

    async def redeem(self, authorization: str | None) -> None:
        """Admit one request, or raise.

        Raises:
            TokenRejectedError: missing, malformed, invalid, out-of-epoch or spent token.
            SpentStoreUnavailableError: the spent store cannot record it (fail closed).
        """
        if authorization is None:
            raise TokenRejectedError("token required")
        try:
            token = parse_authorization(authorization)  # (1)
        except ProtocolError:
            raise TokenRejectedError("token required") from None
        now = self.clock()
        if not self.pinned.not_before <= now < self.pinned.not_after:  # (2)
            raise TokenRejectedError("token required")
        try:
            verify_token(self.pinned.key, token, self.challenge)  # (3)
        except VerificationError:
            raise TokenRejectedError("token required") from None
        token_id = hashlib.sha256(token.authenticator_input).digest()
        if not await self.store.spend(token_id, self.pinned.not_after):  # (4)
            raise TokenRejectedError("token required")
