"""Oblivious HTTP (RFC 9458), chunked OHTTP (draft-08) and binary HTTP (RFC 9292).

Pure: no sockets, files, clocks or ambient randomness. Randomness is a parameter, so the RFC
vectors can be reproduced byte for byte.

Modules:
* `keyconfig`: key configurations and `application/ohttp-keys`; `GatewayKey`, the private key
  usable only for OHTTP decapsulation.
* `header`: the 7-byte request header, HPKE `info` and the OHTTP labels (below `keyconfig` and
  `encapsulation`, so neither imports the other's way back).
* `encapsulation`: `message/ohttp-req` / `-res`, client and gateway side.
* `chunked`: `message/ohttp-chunked-req` / `-res`, incremental encoders and decoders.
* `bhttp`, `bhttp_stream`: binary HTTP messages, whole and streamed; `http_syntax`: what RFC 9292
  makes invalid in their fields and control data.
* `replay`, `problems`: the `ReplayStore` interface and its in-memory store, the Date window,
  RFC 9457 problem shapes.
* `suites`, `varint`: algorithm identifiers and the crypto seam; QUIC integers.

Errors: `hushcc.errors.DecryptError` (opaque) for any failure to open; `ProtocolError` (with
`UnknownKeyError`, `UnsupportedAlgorithmError`, `ReplayError`, `ReplayStoreFullError`,
`DateOutOfWindowError`) otherwise.
"""
