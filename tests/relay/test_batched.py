"""Generic batched issuance (draft-ietf-privacypass-batched-tokens §5): the draft's vectors, one
refusal per malformed field (each with its well-formed twin), the issuer's 200/206/400/422, and
the client's wallet filled in batches, one token at a time, and falling back on a 415."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hypothesis import given
from hypothesis import strategies as st

from client.tokens import IssuanceError, TokenWallet
from client.transport import AiohttpTransport, Reply, Transport
from hushcc.errors import ProtocolError
from relay import blindrsa
from relay.authscheme import parse_authorization
from relay.batched import (
    GENERIC_BATCH_REQUEST_MEDIA_TYPE as BATCH_REQUEST,
)
from relay.batched import (
    GENERIC_BATCH_RESPONSE_MEDIA_TYPE as BATCH_RESPONSE,
)
from relay.batched import (
    MAX_BATCH,
    GenericBatchTokenRequest,
    GenericBatchTokenResponse,
    GenericTokenRequest,
    GenericTokenResponse,
    decode_varint,
    encode_varint,
)
from relay.privacypass import (
    IssuanceState,
    IssuerPublicKey,
    Token,
    TokenChallenge,
    TokenRequest,
    TokenResponse,
    begin_issuance,
    finalize_token,
    issue,
    verify_token,
)
from tests.relay.relay_helpers import make_issuer, start

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

VECTORS = Path(__file__).resolve().parents[1] / "vectors/batched_tokens/generic_batch_vectors.json"
API_KEY = "k-" + "5" * 30
CHALLENGE = TokenChallenge(2, "issuer.test", b"", "relay.test")
TYPE2 = bytes.fromhex("0002") + bytes(257)  # a well-formed type-2 TokenRequest (size 259)


def _vectors() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return data


def test_generic_batch_vectors_round_trip_byte_exact() -> None:
    vectors = _vectors()
    assert [v["vector"] for v in vectors] == list(range(1, 9))
    for v in vectors:
        types = [int(i["type"], 16) for i in v["issuance"]]
        raw_request, raw_response = (bytes.fromhex(v[k]) for k in ("token_request",
                                                                    "token_response"))
        request = GenericBatchTokenRequest.from_bytes(raw_request)
        response = GenericBatchTokenResponse.from_bytes(raw_response)
        assert [r.token_type for r in request.requests] == types
        assert [r.token_type for r in response.responses if r is not None] == types
        assert request.to_bytes() == raw_request
        assert response.to_bytes() == raw_response


def test_generic_batch_vectors_type2_issue_and_finalize_to_the_drafts_tokens() -> None:
    checked = 0
    for v in _vectors():
        request = GenericBatchTokenRequest.from_bytes(bytes.fromhex(v["token_request"]))
        response = GenericBatchTokenResponse.from_bytes(bytes.fromhex(v["token_response"]))
        for item, req, resp in zip(v["issuance"], request.requests, response.responses,
                                   strict=True):
            if item["type"] != "0002":
                continue  # VOPRF types: framing checked above, their crypto is not hushcc's
            assert resp is not None
            private = load_pem_private_key(bytes.fromhex(item["skS"]), password=None)
            assert isinstance(private, rsa.RSAPrivateKey)
            key = IssuerPublicKey.from_spki(bytes.fromhex(item["pkS"]))
            signed = issue(blindrsa.BlindSigner(private), key,
                           TokenRequest.from_bytes(req.token_request))
            assert signed.to_bytes() == resp.token_response  # BlindSign is deterministic
            challenge = TokenChallenge.from_bytes(bytes.fromhex(item["token_challenge"]))
            token_input = (b"\x00\x02" + bytes.fromhex(item["nonce"]) + challenge.digest
                           + key.token_key_id)
            n = private.public_key().public_numbers().n
            state = IssuanceState(token_input, blindrsa.Blinding(pow(int(item["blind"], 16),
                                                                     -1, n)))
            token = finalize_token(key, state, TokenResponse.from_bytes(resp.token_response))
            assert token.to_bytes().hex() == item["token"]
            verify_token(key, token, challenge)
            checked += 1
    assert checked == 8  # vectors 2, 4 (x2), 5, 6, 7, 8 (x2)


@given(st.integers(0, (1 << 62) - 1))
def test_varint_round_trip_in_shortest_form(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded, 0) == (value, len(encoded))
    assert len(encoded) == next(n for n, top in ((1, 63), (2, 16383), (4, 2**30 - 1),
                                                 (8, 2**62 - 1)) if value <= top)


@pytest.mark.parametrize(("encoded", "value"), [
    (b"\x25", 37), (b"\x40\x40", 64), (b"\x7b\xbd", 15293), (b"\x80\x00\x40\x00", 16384)])
def test_varint_longer_than_needed_is_refused_and_its_shortest_twin_read(
        encoded: bytes, value: int) -> None:
    assert decode_varint(encoded, 0)[0] == value
    size = len(encoded) * 2
    padded = (value | ((size.bit_length() - 1) << (8 * size - 2))).to_bytes(size, "big")
    with pytest.raises(ProtocolError, match="shortest"):
        decode_varint(padded, 0)
    with pytest.raises(ProtocolError, match="truncated"):
        decode_varint(encoded[:-1] if len(encoded) > 1 else b"", 0)


def _batch(*requests: bytes) -> bytes:
    return encode_varint(sum(map(len, requests))) + b"".join(requests)


def test_batch_request_refuses_each_malformed_field_and_reads_its_twin() -> None:
    good = _batch(TYPE2, TYPE2)
    assert len(GenericBatchTokenRequest.from_bytes(good).requests) == 2
    assert GenericBatchTokenRequest.from_bytes(_batch()).requests == ()
    cases = {
        "vector length": [good[:-1], good + b"\x00", b"\x42\x05" + good[2:]],
        "varint": [b""],
        "unknown token type": [_batch(b"\x00\x03" + TYPE2[2:]), _batch(b"\xff\xff" + TYPE2[2:])],
        "truncated TokenRequest": [_batch(TYPE2, TYPE2[:-1])],
        "truncated token_type": [_batch(TYPE2, b"\x00")],
    }
    for message, bad in cases.items():
        for data in bad:
            with pytest.raises(ProtocolError, match=message):
                GenericBatchTokenRequest.from_bytes(data)
    with pytest.raises(ProtocolError, match="wrong size"):
        GenericTokenRequest(TYPE2 + b"\x00")
    assert GenericTokenRequest(TYPE2).token_type == 2


def test_batch_response_refuses_each_malformed_field_and_reads_its_twin() -> None:
    present = b"\x01\x00\x02" + bytes(256)
    good = _batch(present, b"\x00")
    assert GenericBatchTokenResponse.from_bytes(good).responses == (
        GenericTokenResponse(2, bytes(256)), None)
    cases = {
        "presence octet": [_batch(b"\x02" + present[1:]), _batch(b"\xff")],
        "unknown token type": [_batch(b"\x01\x00\x03" + bytes(256))],
        "truncated TokenResponse": [_batch(present[:-1])],
        "truncated token_type": [_batch(b"\x01\x00")],
        "vector length": [good[:-1], good + b"\x00"],
    }
    for message, bad in cases.items():
        for data in bad:
            with pytest.raises(ProtocolError, match=message):
                GenericBatchTokenResponse.from_bytes(data)
    with pytest.raises(ProtocolError, match="wrong size"):
        GenericTokenResponse(2, bytes(255))


@pytest.fixture(scope="module")
def issuer_service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("batched")
    issuer = make_issuer(workdir)
    keys = workdir / "api-keys"
    keys.write_text(API_KEY + "\n" + API_KEY + "-b\n")
    keys.chmod(0o600)
    service = start(["issuer", "serve", "--port", "0", "--key", str(issuer.key), "--api-keys",
                     str(keys), "--quota", str(MAX_BATCH + 4)], workdir, "issuer")
    try:
        yield service, issuer
    finally:
        assert service.stop() == 0
    assert API_KEY not in service.stderr_text()


async def _post(url: str, body: bytes, api_key: str = API_KEY,
                content_type: str = BATCH_REQUEST) -> tuple[int, Mapping[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.post(
            url + "/token-request", data=body, headers={
                "Content-Type": content_type, "Authorization": f"Bearer {api_key}"}) as r:
        return r.status, r.headers, await r.read()


def test_issuer_answers_a_generic_batch_200_206_400_and_422(issuer_service: Any) -> None:
    service, issuer = issuer_service
    key = issuer.pinned.key
    pending = [begin_issuance(key, CHALLENGE) for _ in range(3)]
    other_key = TokenRequest((key.truncated_token_key_id + 1) % 256, bytes(256)).to_bytes()
    voprf = b"\x00\x01" + bytes(50)

    def batch(*items: bytes) -> bytes:
        return GenericBatchTokenRequest(tuple(GenericTokenRequest(i) for i in items)).to_bytes()

    async def run() -> None:
        status, headers, body = await _post(service.url, batch(*(r.to_bytes() for r, _ in
                                                                 pending[:2])))
        assert (status, headers["Content-Type"]) == (200, BATCH_RESPONSE)
        answers = GenericBatchTokenResponse.from_bytes(body).responses
        for (_, state), answer in zip(pending, answers, strict=False):
            assert answer is not None
            verify_token(key, finalize_token(key, state, TokenResponse(answer.token_response)),
                         CHALLENGE)
        # Another key's and another type's requests get absent entries in place: 206.
        status, headers, body = await _post(service.url, batch(
            other_key, pending[2][0].to_bytes(), voprf))
        assert (status, headers["Content-Type"]) == (206, BATCH_RESPONSE)
        answers = GenericBatchTokenResponse.from_bytes(body).responses
        assert [a is not None for a in answers] == [False, True, False]
        assert (await _post(service.url, batch(other_key, voprf)))[0] == 400
        assert (await _post(service.url, batch()))[0] == 400
        assert (await _post(service.url, _batch(b"\x00\x03" + TYPE2[2:])))[0] == 422
        assert (await _post(service.url, batch(pending[0][0].to_bytes())[:-1]))[0] == 422
        assert (await _post(service.url, batch(TYPE2), content_type="text/plain"))[0] == 415
        assert (await _post(service.url, batch(TYPE2), api_key="wrong"))[0] == 401
        # A batch larger than MAX_BATCH type-2 requests is refused whole (413); MAX_BATCH are
        # all issued. Then the key's quota (MAX_BATCH + 4) runs out inside the next batch (206),
        # and a batch with nothing left to issue is a 400 with Retry-After; the single RFC 9578
        # path says 429 as before.
        many = [begin_issuance(key, CHALLENGE)[0].to_bytes() for _ in range(MAX_BATCH + 1)]
        assert (await _post(service.url, batch(*many), api_key=API_KEY + "-b"))[0] == 413
        status, _, body = await _post(service.url, batch(*many[:-1]), api_key=API_KEY + "-b")
        answers = GenericBatchTokenResponse.from_bytes(body).responses
        assert status == 200
        assert all(a is not None for a in answers)
        assert len(answers) == MAX_BATCH
        status, _, body = await _post(service.url, batch(*many[:5]), api_key=API_KEY + "-b")
        assert status == 206
        assert sum(a is not None for a in GenericBatchTokenResponse.from_bytes(body).responses) == 4
        status, headers, _ = await _post(service.url, batch(many[0]), api_key=API_KEY + "-b")
        assert status == 400
        assert int(headers["Retry-After"]) >= 1
        single = await _post(service.url, many[0], api_key=API_KEY + "-b",
                             content_type="application/private-token-request")
        assert single[0] == 429

    asyncio.run(run())


class AlteredIssuer(Transport):
    """The real transport to the real issuer; `alter` may rewrite what the issuer answers to a
    batch (the issuer refusing batches, or answering one wrongly). Records each POST's type."""

    def __init__(self, alter: Callable[[Reply], Reply] = lambda reply: reply) -> None:
        self.inner = AiohttpTransport()
        self.alter = alter
        self.posts: list[str] = []

    async def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        return await self.inner.get(url, headers=headers)

    async def post(self, url: str, body: bytes, *, headers: Mapping[str, str]) -> Reply:
        self.posts.append(headers["Content-Type"])
        reply = await self.inner.post(url, body, headers=headers)
        return self.alter(reply) if headers["Content-Type"] == BATCH_REQUEST else reply

    def post_stream(self, url: str, body: bytes, *, headers: Mapping[str, str]) -> Any:
        return self.inner.post_stream(url, body, headers=headers)

    async def close(self) -> None:
        await self.inner.close()


def _rewrite(change: Callable[[list[GenericTokenResponse | None]], list[Any]]
             ) -> Callable[[Reply], Reply]:
    def alter(reply: Reply) -> Reply:
        answers = list(GenericBatchTokenResponse.from_bytes(reply.body).responses)
        return Reply(reply.status, reply.headers,
                     GenericBatchTokenResponse(tuple(change(answers))).to_bytes())
    return alter


def _fill(issuer_service: Any, transport: Transport, n: int, *, batched: bool = True,
          api_key: str = API_KEY) -> list[Token]:
    service, issuer = issuer_service
    wallet = TokenWallet(issuer.pinned, CHALLENGE, clock=lambda: issuer.pinned.not_before + 1)

    async def run() -> list[Token]:
        try:
            await wallet.refill(transport, service.url, api_key, n, batched=batched)
        finally:
            await transport.close()
        values = [await wallet.take() for _ in range(n)]
        return [parse_authorization(v) for v in values if v is not None]

    tokens = asyncio.run(run())
    for token in tokens:
        verify_token(issuer.pinned.key, token, CHALLENGE)
    return tokens


def test_wallet_fills_in_batches_or_singly_and_falls_back_on_415(issuer_service: Any) -> None:
    batched = AlteredIssuer()
    assert len(_fill(issuer_service, batched, 3)) == 3
    assert batched.posts == [BATCH_REQUEST]
    single = AlteredIssuer()
    assert len(_fill(issuer_service, single, 2, batched=False)) == 2
    assert single.posts == ["application/private-token-request"] * 2
    refusing = AlteredIssuer(lambda reply: Reply(415, {}, b""))
    assert len(_fill(issuer_service, refusing, 2)) == 2
    assert refusing.posts == [BATCH_REQUEST] + ["application/private-token-request"] * 2
    # A 206 fills the wallet with what was issued; absent entries are skipped.
    partial = AlteredIssuer(_rewrite(lambda answers: [None, *answers[1:]]))
    assert len(_fill(issuer_service, partial, 3)) == 2


@pytest.mark.parametrize(("alter", "message"), [
    (_rewrite(lambda answers: answers[:-1]), "does not match the request"),
    (_rewrite(lambda answers: [GenericTokenResponse(1, bytes(145)), *answers[1:]]),
     "does not match the request"),
    (_rewrite(lambda answers: [GenericTokenResponse(2, bytes(256)), *answers[1:]]),
     "does not verify"),
    (lambda reply: Reply(200, reply.headers, reply.body[:-1]), "malformed"),
    (lambda reply: Reply(200, {"content-type": "application/octet-stream"}, reply.body),
     "answered 200"),
    (lambda reply: Reply(500, reply.headers, reply.body), "answered 500"),
    (_rewrite(lambda answers: [None] * len(answers)), "issued no token"),
])
def test_wallet_refuses_a_batch_answer_that_does_not_match_or_verify(
        issuer_service: Any, alter: Callable[[Reply], Reply], message: str) -> None:
    with pytest.raises(IssuanceError, match=message):
        _fill(issuer_service, AlteredIssuer(alter), 2)
