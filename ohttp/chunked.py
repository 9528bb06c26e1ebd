"""Chunked OHTTP (draft-ietf-ohai-chunked-ohttp-08): incremental encoders and decoders.

Pure: entropy is the `rng` parameter. Decoders accept input in arbitrary pieces (a byte at a time
too) through `feed()`, return each plaintext chunk once it is authenticated, and must be closed
with `finish()` at end of stream.

Wire format (draft-08 §4-§6): request = hdr || enc || {varint(len) || Seal("", chunk)}* ||
varint(0) || Seal("final", last); response = response_nonce || the same chunk framing, sealed
with the exporter-derived key and nonce XOR counter. The final chunk runs to the end of the
message, so it is only opened at `finish()`.

Invariants:
* A stream that ends before its final chunk, a zero-length non-final chunk, a chunk over the size
  limit, a bad tag: all raise the one opaque `DecryptError` — a truncated response is never a
  silent short answer. An unknown key id raises `UnknownKeyError` before any DH.
* After an error a decoder is poisoned: every later call raises `DecryptError` again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hushcc.errors import DecryptError, ProtocolError
from ohttp.encapsulation import (
    ClientContext,
    GatewayContext,
    ResponseKeys,
    as_keyring,
    body_offset,
    hpke_open,
    select_key,
    sender_context,
)
from ohttp.header import (
    CHUNKED_REQUEST_LABEL,
    CHUNKED_RESPONSE_LABEL,
    HEADER_LENGTH,
    RequestHeader,
)
from ohttp.suites import aead_open, aead_seal
from ohttp.varint import decode_varint, encode_varint

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from pyhpke import ContextInterface

    from ohttp.keyconfig import GatewayKey, KeyConfig
    from ohttp.suites import SymmetricSuite

FINAL_AAD = b"final"
REQUEST_MEDIA_TYPE = "message/ohttp-chunked-req"
RESPONSE_MEDIA_TYPE = "message/ohttp-chunked-res"
# draft-08 §3: implementations MUST accept 2^14 octets of plaintext per chunk.
DEFAULT_MAX_CHUNK = 1 << 14


@dataclass(frozen=True, slots=True)
class ChunkLimits:
    """Bounds a decoder enforces while reading (on the declared length, before buffering)."""

    max_chunk_plaintext: int = DEFAULT_MAX_CHUNK
    max_final_chunk_plaintext: int = DEFAULT_MAX_CHUNK


def _frame(sealed: bytes) -> bytes:
    return encode_varint(len(sealed)) + sealed


class ChunkedRequestEncoder:
    """Client: produce a `message/ohttp-chunked-req` stream piece by piece."""

    def __init__(
        self,
        config: KeyConfig,
        *,
        suite: SymmetricSuite | None = None,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """Set up HPKE to `config`; `rng` supplies the ephemeral key.

        Raises:
            ProtocolError: `suite` is not offered by `config`.
        """
        chosen = suite if suite is not None else config.suites[0]
        header, enc, self._ctx = sender_context(config, chosen, CHUNKED_REQUEST_LABEL, rng)
        self._prefix: bytes | None = header + enc
        self._done = False
        self.context = ClientContext(
            ResponseKeys.export(self._ctx, chosen, enc, CHUNKED_RESPONSE_LABEL)
        )

    def __repr__(self) -> str:
        """Never show secrets."""
        return "ChunkedRequestEncoder(<redacted>)"

    def _take_prefix(self) -> bytes:
        if self._done:
            raise ProtocolError("the final chunk was already written")
        prefix, self._prefix = self._prefix or b"", None
        return prefix

    def chunk(self, data: bytes) -> bytes:
        """Seal one non-final chunk (non-empty); the first call also returns hdr || enc.

        Raises:
            ProtocolError: empty chunk, or called after `final`.
        """
        if not data:
            raise ProtocolError("a non-final chunk must not be empty")
        prefix = self._take_prefix()
        return prefix + _frame(bytes(self._ctx.seal(data, b"")))

    def final(self, data: bytes = b"") -> bytes:
        """Seal the final chunk (may be empty) with AAD "final"; no chunk may follow.

        Raises:
            ProtocolError: called twice.
        """
        prefix = self._take_prefix()
        self._done = True
        return prefix + b"\x00" + bytes(self._ctx.seal(data, FINAL_AAD))


class _ChunkReader:
    """Shared framing state machine: splits {varint len || sealed}* || 0 || final."""

    def __init__(self, limits: ChunkLimits, tag_length: int) -> None:
        self._buffer = bytearray()
        self._limits = limits
        self._tag = tag_length
        self._in_final = False
        self._closed = False

    def _fail(self) -> DecryptError:
        self._closed = True
        self._buffer.clear()
        return DecryptError()

    def split(self, piece: bytes) -> list[bytes]:
        """Add `piece`; return the complete sealed non-final chunks now available."""
        if self._closed:
            raise DecryptError
        self._buffer += piece
        if self._in_final:
            if len(self._buffer) > self._limits.max_final_chunk_plaintext + self._tag:
                raise self._fail()
            return []
        sealed: list[bytes] = []
        while True:
            decoded = decode_varint(self._buffer)
            if decoded is None:
                return sealed
            length, start = decoded
            if length == 0:
                del self._buffer[:start]
                self._in_final = True
                if len(self._buffer) > self._limits.max_final_chunk_plaintext + self._tag:
                    raise self._fail()
                return sealed
            if length <= self._tag or length > self._limits.max_chunk_plaintext + self._tag:
                raise self._fail()  # zero-length non-final plaintext, or oversize chunk
            if len(self._buffer) < start + length:
                return sealed
            sealed.append(bytes(self._buffer[start : start + length]))
            del self._buffer[: start + length]

    def final_sealed(self) -> bytes:
        """At end of stream: the sealed final chunk, or `DecryptError` if it never started."""
        if self._closed or not self._in_final:
            raise self._fail()
        self._closed = True
        sealed = bytes(self._buffer)
        self._buffer.clear()
        return sealed


class ChunkedRequestDecoder:
    """Gateway: read a `message/ohttp-chunked-req` stream incrementally."""

    def __init__(
        self, keys: GatewayKey | Iterable[GatewayKey], *, limits: ChunkLimits | None = None
    ) -> None:
        """Prepare to decode with the gateway's key(s)."""
        self._keys = as_keyring(keys)
        self._limits = limits or ChunkLimits()
        self._head = bytearray()
        self._selected: tuple[RequestHeader, GatewayKey, SymmetricSuite] | None = None
        self._ctx: ContextInterface | None = None
        self._reader: _ChunkReader | None = None
        self._failed = False
        self.context: GatewayContext | None = None

    def __repr__(self) -> str:
        """Never show secrets."""
        return "ChunkedRequestDecoder(<redacted>)"

    def _start(self) -> None:
        """Parse the header and select the key once, then SetupBaseR once `enc` has arrived.

        `select_key` raises `UnknownKeyError` as soon as the 7 header bytes are in, before any DH.
        """
        if self._selected is None:
            if len(self._head) < HEADER_LENGTH:
                return
            header = RequestHeader.from_bytes(bytes(self._head))
            self._selected = (header, *select_key(header, self._keys))
        header, key, suite = self._selected
        body = body_offset(key)
        if len(self._head) < body:
            return
        enc = bytes(self._head[HEADER_LENGTH:body])
        ctx = key.setup_recipient(suite, enc, CHUNKED_REQUEST_LABEL, header.to_bytes())
        self._ctx = ctx
        self.context = GatewayContext(
            ResponseKeys.export(ctx, suite, enc, CHUNKED_RESPONSE_LABEL), header
        )
        self._reader = _ChunkReader(self._limits, suite.tag_length)
        del self._head[:body]

    def _open_chunks(self, piece: bytes) -> list[bytes]:
        if self._ctx is None or self._reader is None:
            raise DecryptError
        return [hpke_open(self._ctx, sealed) for sealed in self._reader.split(piece)]

    def feed(self, piece: bytes) -> list[bytes]:
        """Add bytes from the stream; return the plaintext chunks authenticated so far.

        Raises:
            UnknownKeyError: the header names a key this gateway does not offer.
            DecryptError: any other failure (opaque); the decoder is then unusable.
        """
        if self._failed:
            raise DecryptError
        try:
            if self._reader is None:
                self._head += piece
                self._start()
                if self._reader is None:
                    return []
                piece, self._head = bytes(self._head), bytearray()
            return self._open_chunks(piece)
        except (DecryptError, ProtocolError):
            self._failed = True
            raise

    def finish(self) -> bytes:
        """End of stream: open and return the final chunk.

        Raises:
            DecryptError: the stream ended before its final chunk, or the final chunk is bad.
        """
        if self._failed or self._reader is None or self._ctx is None:
            self._failed = True
            raise DecryptError
        self._failed = True  # nothing may be fed after the end
        return hpke_open(self._ctx, self._reader.final_sealed(), FINAL_AAD)


def _chunk_nonce(base_nonce: bytes, counter: int) -> bytes:
    """aead_nonce XOR I2OSP(counter, Nn) (draft-08 §6.2)."""
    n = len(base_nonce)
    if counter >= 1 << (8 * n):
        raise ProtocolError("chunk counter exhausted")
    return (int.from_bytes(base_nonce, "big") ^ counter).to_bytes(n, "big")


class ChunkedResponseEncoder:
    """Gateway: produce a `message/ohttp-chunked-res` stream; flush each chunk as it is made."""

    def __init__(self, ctx: GatewayContext, *, rng: Callable[[int], bytes] = os.urandom) -> None:
        """Draw `response_nonce` from `rng` and derive the response key and base nonce."""
        keys = ctx.keys
        nonce = keys.draw_nonce(rng)
        self._aead = keys.suite.aead_id
        self._key, self._base_nonce = keys.derive(nonce)
        self._prefix: bytes | None = nonce
        self._counter = 0
        self._done = False

    def __repr__(self) -> str:
        """Never show secrets."""
        return "ChunkedResponseEncoder(<redacted>)"

    def _seal(self, data: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Return (response_nonce on the first call else b"", sealed chunk)."""
        if self._done:
            raise ProtocolError("the final chunk was already written")
        nonce = _chunk_nonce(self._base_nonce, self._counter)
        sealed = aead_seal(self._aead, self._key, nonce, aad, data)
        self._counter += 1
        prefix, self._prefix = self._prefix or b"", None
        return prefix, sealed

    def chunk(self, data: bytes) -> bytes:
        """Seal one non-empty, non-final chunk (the first output carries response_nonce).

        Raises:
            ProtocolError: empty chunk, or called after `final`.
        """
        if not data:
            raise ProtocolError("a non-final chunk must not be empty")
        prefix, sealed = self._seal(data, b"")
        return prefix + _frame(sealed)

    def final(self, data: bytes = b"") -> bytes:
        """Seal the final chunk (may be empty) with AAD "final".

        Raises:
            ProtocolError: called twice.
        """
        prefix, sealed = self._seal(data, FINAL_AAD)
        self._done = True
        return prefix + b"\x00" + sealed


class ChunkedResponseDecoder:
    """Client: read a `message/ohttp-chunked-res` stream incrementally."""

    def __init__(self, ctx: ClientContext, *, limits: ChunkLimits | None = None) -> None:
        """Prepare to decode the response to the request that produced `ctx`."""
        self._keys = ctx.keys
        self._limits = limits or ChunkLimits()
        self._head = bytearray()
        self._reader: _ChunkReader | None = None
        self._key = b""
        self._base_nonce = b""
        self._counter = 0
        self._failed = False

    def __repr__(self) -> str:
        """Never show secrets."""
        return "ChunkedResponseDecoder(<redacted>)"

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        nonce = _chunk_nonce(self._base_nonce, self._counter)
        self._counter += 1
        return aead_open(self._keys.suite.aead_id, self._key, nonce, aad, sealed)

    def feed(self, piece: bytes) -> list[bytes]:
        """Add bytes; return the plaintext chunks authenticated so far.

        Raises:
            DecryptError: bad chunk, oversize or empty non-final chunk (opaque; poisons).
        """
        if self._failed:
            raise DecryptError
        try:
            if self._reader is None:
                self._head += piece
                n = self._keys.nonce_length
                if len(self._head) < n:
                    return []
                self._key, self._base_nonce = self._keys.derive(bytes(self._head[:n]))
                piece = bytes(self._head[n:])
                self._head.clear()
                self._reader = _ChunkReader(self._limits, self._keys.suite.tag_length)
            return [self._open(sealed, b"") for sealed in self._reader.split(piece)]
        except (DecryptError, ProtocolError):
            self._failed = True
            raise DecryptError from None

    def finish(self) -> bytes:
        """End of stream: open and return the final chunk.

        Raises:
            DecryptError: the stream was cut before its final chunk, or the final chunk is bad.
        """
        if self._failed or self._reader is None:
            self._failed = True
            raise DecryptError
        self._failed = True
        return self._open(self._reader.final_sealed(), FINAL_AAD)
