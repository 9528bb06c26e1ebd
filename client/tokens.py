"""The client's Privacy Pass wallet: tokens fetched from the issuer in batches, spent one a request.

Issuance (RFC 9578 §5-6, type 0x0002, blind RSA): the client checks that the issuer's directory
offers exactly the token key it pinned (T4: a per-client key would let the issuer tag users),
blinds one TokenRequest per token, `POST`s them to the directory's `issuer-request-uri` with
its API key, and unblinds the answers. By default up to `MAX_BATCH` requests travel in one
GenericBatchTokenRequest (draft-ietf-privacypass-batched-tokens §5); an entry the issuer left
absent (a 206) is skipped. An issuer that answers 415 to that media type speaks RFC 9578 only:
the wallet then sends one `application/private-token-request` per token. The issuer sees the
API key and blinded messages only; the relay later sees the token only: neither can link the
two (DESIGN.md, data flow step 2).

Invariants:
* A token is removed from the wallet (and the file) before it is used, so a crash can lose a
  token but never spend one twice.
* Writes are group-committed: one write (with its fsyncs) at a time, each of the whole wallet as
  it is when that write starts; a caller waits for the first write that starts after its own
  change, so concurrent requests share one write instead of queueing one fsync each behind it.
* Unspent tokens are the only state besides the log checkpoint the SDK keeps (C3): a JSON file
  in the client's config directory, mode 0600, replaced atomically; never request data.
* Tokens outside the pinned key's epoch are dropped, not sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError, ProtocolError, VerificationError
from relay.authscheme import (
    DIRECTORY_PATH,
    REQUEST_MEDIA_TYPE,
    RESPONSE_MEDIA_TYPE,
    IssuerDirectory,
    b64url_decode,
    b64url_encode,
    format_authorization,
)
from relay.batched import (
    GENERIC_BATCH_REQUEST_MEDIA_TYPE,
    GENERIC_BATCH_RESPONSE_MEDIA_TYPE,
    MAX_BATCH,
    GenericBatchTokenRequest,
    GenericBatchTokenResponse,
    GenericTokenRequest,
)
from relay.privacypass import (
    TOKEN_TYPE_BLIND_RSA,
    IssuanceState,
    Token,
    TokenChallenge,
    TokenResponse,
    begin_issuance,
    finalize_token,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from client.transport import Transport
    from relay.issuer_keys import PinnedKey

WALLET_FORMAT = "hushcc-token-wallet/v1"


class IssuanceError(VerificationError):
    """The issuer refused, offered another key, or answered something that does not verify."""


class TokenWallet:
    """Unspent tokens for one pinned issuer key and one relay challenge."""

    def __init__(self, pinned: PinnedKey, challenge: TokenChallenge, *,
                 path: Path | None = None, clock: Callable[[], float]) -> None:
        """Load unspent tokens from `path` (if given); keep only those this key can redeem."""
        self.pinned = pinned
        self.challenge = challenge
        self.path = path
        self.clock = clock
        self._tokens: list[Token] = self._load()
        self._writing = asyncio.Lock()
        self._changes = 0  # changes made to the wallet so far
        self._saved = 0  # changes the file on disk holds

    def __repr__(self) -> str:
        """No token values."""
        return f"TokenWallet({len(self._tokens)} tokens)"

    def __len__(self) -> int:
        """How many unspent tokens are held."""
        return len(self._tokens)

    def _usable(self, token: Token) -> bool:
        return (token.token_key_id == self.pinned.key.token_key_id
                and token.challenge_digest == self.challenge.digest
                and self.pinned.not_before <= self.clock() < self.pinned.not_after)

    def _load(self) -> list[Token]:
        if self.path is None or not self.path.exists():
            return []
        malformed = ConfigError(f"token wallet is malformed: {self.path}")
        try:
            doc = json.loads(self.path.read_bytes())
        except ValueError:
            raise malformed from None
        if not isinstance(doc, dict) or doc.get("format") != WALLET_FORMAT or not isinstance(
                doc.get("tokens"), list):
            raise malformed
        try:
            tokens = [Token.from_bytes(b64url_decode(t)) for t in doc["tokens"]]
        except (ValueError, TypeError, ProtocolError):
            raise malformed from None
        return [t for t in tokens if self._usable(t)]

    async def _save(self) -> None:
        """Return once the file holds the wallet as it is now (group commit, module doc)."""
        if self.path is None:
            return
        self._changes += 1
        mine = self._changes
        async with self._writing:
            if self._saved >= mine:  # a write that started after this change has landed
                return
            await asyncio.sleep(0)  # let the takes started in this same loop turn join in
            covers = self._changes
            doc = {"format": WALLET_FORMAT,
                   "tokens": [b64url_encode(t.to_bytes()) for t in self._tokens]}
            data = json.dumps(doc).encode()  # the snapshot: every change up to `covers`
            await asyncio.to_thread(write_private_atomically, self.path, data)
            self._saved = covers

    async def take(self) -> str | None:
        """Remove one usable token and return its `Authorization` value, or None if empty.

        The removal is on disk before the token is returned; the write (with its fsync) runs
        on a worker thread, shared by the takes waiting at the same time.
        """
        while self._tokens:
            token = self._tokens.pop()
            await self._save()
            if self._usable(token):
                return format_authorization(token)
        return None

    async def refill(self, transport: Transport, issuer_url: str, api_key: str, count: int,
                     *, batched: bool = True) -> None:
        """Fetch up to `count` tokens from the issuer and keep them.

        With `batched`, the requests go in generic batches and an issuer that issues only some
        of them (206) still refills the wallet with those; without it (or when the issuer
        answers 415 to a batch), one RFC 9578 request per token.

        Raises:
            IssuanceError: the issuer's key is not the pinned one, it refused or issued
                nothing, or a signature does not verify.
            TransportError: the issuer is unreachable.
        """
        request_url = await self._request_url(transport, issuer_url)
        auth = f"Bearer {api_key}"
        fresh = await self._batches(transport, request_url, auth, count) if batched else None
        if fresh is None:
            fresh = [await self._one(transport, request_url, auth) for _ in range(count)]
        self._tokens.extend(fresh)
        await self._save()

    def _finalize(self, state: IssuanceState, response: bytes) -> Token:
        try:
            return finalize_token(self.pinned.key, state, TokenResponse.from_bytes(response))
        except (ProtocolError, VerificationError) as exc:
            raise IssuanceError("issuer's token does not verify under the pinned key") from exc

    async def _one(self, transport: Transport, url: str, auth: str) -> Token:
        request, state = begin_issuance(self.pinned.key, self.challenge)
        reply = await transport.post(url, request.to_bytes(), headers={
            "Content-Type": REQUEST_MEDIA_TYPE, "Accept": RESPONSE_MEDIA_TYPE,
            "Authorization": auth})
        if reply.status != 200 or reply.headers.get("content-type") != RESPONSE_MEDIA_TYPE:
            raise IssuanceError(f"issuer answered {reply.status}")
        return self._finalize(state, reply.body)

    async def _batches(self, transport: Transport, url: str, auth: str, count: int
                       ) -> list[Token] | None:
        """Tokens from generic batches; None if the issuer does not take batches (415)."""
        fresh: list[Token] = []
        for start in range(0, count, MAX_BATCH):
            states = [begin_issuance(self.pinned.key, self.challenge)
                      for _ in range(min(MAX_BATCH, count - start))]
            body = GenericBatchTokenRequest(tuple(GenericTokenRequest(r.to_bytes())
                                                  for r, _ in states)).to_bytes()
            reply = await transport.post(url, body, headers={
                "Content-Type": GENERIC_BATCH_REQUEST_MEDIA_TYPE,
                "Accept": GENERIC_BATCH_RESPONSE_MEDIA_TYPE, "Authorization": auth})
            if reply.status == 415 and start == 0:
                return None
            if reply.status not in (200, 206) or reply.headers.get(
                    "content-type") != GENERIC_BATCH_RESPONSE_MEDIA_TYPE:
                raise IssuanceError(f"issuer answered {reply.status}")
            try:
                answers = GenericBatchTokenResponse.from_bytes(reply.body).responses
            except ProtocolError as exc:
                raise IssuanceError("issuer's batch response is malformed") from exc
            if len(answers) != len(states) or any(
                    a is not None and a.token_type != TOKEN_TYPE_BLIND_RSA for a in answers):
                raise IssuanceError("issuer's batch response does not match the request")
            fresh += [self._finalize(state, a.token_response)
                      for (_, state), a in zip(states, answers, strict=True) if a is not None]
        if not fresh and count > 0:
            raise IssuanceError("issuer issued no token")
        return fresh

    async def _request_url(self, transport: Transport, issuer_url: str) -> str:
        reply = await transport.get(f"{issuer_url}{DIRECTORY_PATH}")
        if reply.status != 200:
            raise IssuanceError(f"issuer directory answered {reply.status}")
        try:
            directory = IssuerDirectory.from_bytes(reply.body)
        except ProtocolError as exc:
            raise IssuanceError("issuer directory is malformed") from exc
        # T4: the issuer must offer exactly the key this client pinned, and no other.
        spkis = {entry.key.spki for entry in directory.token_keys}
        if spkis != {self.pinned.key.spki}:
            raise IssuanceError("issuer offers a token key other than the pinned one")
        return urllib.parse.urljoin(issuer_url + "/", directory.issuer_request_uri)


def write_private_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a 0600 temporary file, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
