"""Benchmark: OHTTP request/response encapsulation vs. the raw pyhpke primitive, same run.

    .venv/bin/python bench/ohttp.py [--seconds 1.0]

Rows: one encapsulate + decapsulate round trip (client + gateway work) for 1 KiB and 64 KiB
bodies. "raw pyhpke" does the same HPKE work with no OHTTP around it: for a request, SetupBaseS +
Seal + SetupBaseR + Open; for a response, Seal + Open on an existing context. Overhead =
raw ops/s / ours ops/s (1.00 means no overhead). The response row's overhead is the RFC 9458
§4.4 per-response key schedule (HKDF-Extract + 2 Expands on each side, a fresh AEAD key) that a
bare Seal/Open on a ready context does not do.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This script is named like the package it measures: keep its own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

from ohttp.encapsulation import (  # noqa: E402
    decapsulate_request,
    decapsulate_response,
    encapsulate_request,
    encapsulate_response,
)
from ohttp.header import REQUEST_LABEL, build_info  # noqa: E402
from ohttp.keyconfig import GatewayKey  # noqa: E402
from ohttp.suites import (  # noqa: E402
    AeadId,
    KdfId,
    SymmetricSuite,
    hpke_key,
    hpke_public_key,
    hpke_suite,
)

if TYPE_CHECKING:
    from collections.abc import Callable

SUITE = SymmetricSuite(KdfId.HKDF_SHA256, AeadId.AES_128_GCM)
RAW_SK = X25519PrivateKey.generate()
KEY = GatewayKey.from_private_bytes(1, (SUITE,), RAW_SK.private_bytes_raw())
CIPHER = hpke_suite(KEY.config.kem_id, SUITE)
PK = hpke_public_key(KEY.config.kem_id, KEY.config.public_key)
SK = hpke_key(RAW_SK)
INFO = build_info(REQUEST_LABEL, KEY.config.header(SUITE))


def rate(fn: Callable[[], object], seconds: float) -> float:
    fn()  # warm up
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def request_pair(body: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    def ours() -> None:
        enc_req, _ = encapsulate_request(KEY.config, body)
        decapsulate_request(enc_req, KEY)

    def raw() -> None:
        enc, sender = CIPHER.create_sender_context(PK, INFO)
        ct = sender.seal(body, b"")
        CIPHER.create_recipient_context(enc, SK, INFO).open(ct, b"")

    return ours, raw


def response_pair(body: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    enc_req, client = encapsulate_request(KEY.config, b"x")
    _, gateway = decapsulate_request(enc_req, KEY)
    enc, sender = CIPHER.create_sender_context(PK, INFO)
    recipient = CIPHER.create_recipient_context(enc, SK, INFO)

    def ours() -> None:
        decapsulate_response(client, encapsulate_response(gateway, body))

    def raw() -> None:
        recipient.open(sender.seal(body, b""), b"")

    return ours, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.5, help="time per cell and column")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (best kept)")
    args = parser.parse_args()
    print(f"# ohttp bench: DHKEM(X25519)/HKDF-SHA256/AES-128-GCM, Python "
          f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.seconds:.1f} s per cell, best of {args.rounds} interleaved rounds")
    print("| encap+decap | body | hushcc ohttp ops/s | raw pyhpke ops/s | overhead (raw/ours) |")
    print("|---|---|---:|---:|---:|")
    for size in (1024, 64 * 1024):
        body = os.urandom(size)
        for label, (ours, raw) in (("request", request_pair(body)),
                                   ("response", response_pair(body))):
            # Interleaved rounds, best of each: the same machine noise hits both columns.
            o = w = 0.0
            for _ in range(args.rounds):
                o = max(o, rate(ours, args.seconds / args.rounds))
                w = max(w, rate(raw, args.seconds / args.rounds))
            print(f"| {label} | {size // 1024} KiB | {o:,.0f} | {w:,.0f} | {w / o:.2f}x |")


if __name__ == "__main__":
    main()
