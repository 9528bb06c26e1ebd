"""Every `hushcc` subcommand on bad inputs: one line `hushcc: error: ...`, exit 1, nothing written.

The table below is the newcomer's experience as data. Each row runs one subcommand on one bad
input (a missing path, a directory, an empty, truncated, random or non-UTF-8 file, the wrong kind
of key both ways, out-of-range and non-finite numbers, a malformed URL, an unknown config key)
and checks: exit status 1, exactly one line on stderr starting `hushcc: error:` that names the
problem, no traceback, and no file created or changed. Rows run in-process through
`app.cli.main` (an escaping exception fails the row), except servers, which run as the user
starts them (a subprocess with a deadline, which must never print `listening on`).

The positive twin runs every subcommand on good inputs, chained as a user would:
`keygen -> serve -> add -> simulate -> verify`. A guard test fails when a subcommand exists
that neither table covers.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from app.cli import build_parser, main

if TYPE_CHECKING:
    from collections.abc import Iterator

SERVE_DEADLINE = 60.0  # seconds for a server given a bad input to exit (it should at once)
NOT_LISTENING = "http://127.0.0.1:9"  # the discard port: nothing listens there


@dataclass(frozen=True, slots=True)
class Row:
    """One bad invocation: argv with `{name}` placeholders for files of the world fixture."""

    argv: tuple[str, ...]
    expect: str  # a word the one error line must contain (case-insensitive)


def row(expect: str, *argv: str, name: str) -> object:
    return pytest.param(Row(argv, expect), id=name)


BAD_FILES = ("missing", "dir", "empty", "random", "nonutf8")
FILE_WORDS = {"missing": "not found", "dir": "directory", "empty": "empty",
              "random": "", "nonutf8": ""}


def file_rows(prefix: str, template: tuple[str, ...], kinds: tuple[str, ...] = BAD_FILES,
              truncated: str | None = None) -> list[object]:
    """Rows putting each bad file (and a truncated good one) where `{file}` stands."""
    out = [row(FILE_WORDS[k], *(a.replace("{file}", "{" + k + "}") for a in template),
               name=f"{prefix}-{k}") for k in kinds]
    if truncated:
        out.append(row("", *(a.replace("{file}", "{" + truncated + "}") for a in template),
                       name=f"{prefix}-truncated"))
    return out


SIMULATE = ("attest", "simulate", "--key-config", "{gw_pub}", "--out", "{new}")
SERVE = ("log", "serve", "--host", "127.0.0.1", "--port", "0", "--state-dir", "{new}")
SERVE_KEYS = ("--log-key", "{log_key}", "--release-key", "{rel_pub}")

IN_PROCESS_ROWS = [
    # hushcc ohttp keygen / show-config
    row("overwrite", "ohttp", "keygen", "--out", "{gw_key}", name="ohttp-keygen-existing-out"),
    row("", "ohttp", "keygen", "--out", "{missing}/gw.key", name="ohttp-keygen-out-in-missing-dir"),
    row("--key-id", "ohttp", "keygen", "--out", "{new}", "--key-id", "256",
        name="ohttp-keygen-key-id-256"),
    row("--key-id", "ohttp", "keygen", "--out", "{new}", "--key-id", "-1",
        name="ohttp-keygen-key-id-negative"),
    row("--key-id", "ohttp", "keygen", "--out", "{new}", "--key-id", "nan",
        name="ohttp-keygen-key-id-nan"),
    *file_rows("ohttp-show-config", ("ohttp", "show-config", "{file}"), truncated="gw_pub_cut"),
    row("private key", "ohttp", "show-config", "{gw_key}", name="ohttp-show-config-private-key"),
    # hushcc log keygen / add / verify
    row("overwrite", "log", "keygen", "--out", "{log_key}", name="log-keygen-existing-out"),
    row("name", "log", "keygen", "--out", "{new}", "--name", "n" * 100_000,
        name="log-keygen-name-100k"),
    row("name", "log", "keygen", "--out", "{new}", "--name", "", name="log-keygen-name-empty"),
    row("name", "log", "keygen", "--out", "{new}", "--name", "a b", name="log-keygen-name-space"),
    row("release entry", "log", "entry", "--image-digest", "", "--measurement", "sim=00",
        name="log-entry-empty-image-digest"),
    row("release entry", "log", "entry", "--image-digest", "sha256:0", "--measurement", "sim=zz",
        name="log-entry-measurement-not-hex"),
    row("--measurement", "log", "entry", "--image-digest", "sha256:0", "--measurement", "sim",
        name="log-entry-measurement-without-value"),
    row("--model", "log", "entry", "--image-digest", "sha256:0", "--measurement", "sim=00",
        "--model", "nameonly", name="log-entry-model-not-key-value"),
    row("", "log", "entry", "--image-digest", "sha256:0", "--measurement", "sim=00",
        "--out", "{missing}/e.json", name="log-entry-out-in-missing-dir"),
    *file_rows("log-add-entry", ("log", "add", "{file}", "--url", NOT_LISTENING,
                                 "--release-key", "{rel_key}"), truncated="entry_cut"),
    row("url", "log", "add", "{entry}", "--url", "localhost:8081", "--release-key", "{rel_key}",
        name="log-add-url-without-scheme"),
    row("url", "log", "add", "{entry}", "--url", "not a url", "--release-key", "{rel_key}",
        name="log-add-url-not-a-url"),
    row("url", "log", "add", "{entry}", "--url", "http://127.0.0.1:99999",
        "--release-key", "{rel_key}", name="log-add-url-port-out-of-range"),
    row("key", "log", "add", "{entry}", "--url", NOT_LISTENING, "--release-key", "{rel_pub}",
        name="log-add-public-key-for-private"),
    row("", "log", "add", "{entry}", "--url", NOT_LISTENING, "--release-key", "{nonutf8}",
        name="log-add-release-key-nonutf8"),
    row("key", "log", "add", "{entry}", "--url", NOT_LISTENING, "--release-key", "{rel_key}",
        "--log-key", "{log_key}", name="log-add-private-key-for-public"),
    row("url", "log", "verify", "--url", "localhost:8081", "--log-key", "{log_pub}",
        "--state", "{new}", name="log-verify-url-without-scheme"),
    row("key", "log", "verify", "--url", NOT_LISTENING, "--log-key", "{log_key}",
        "--state", "{new}", name="log-verify-private-key-for-public"),
    row("", "log", "verify", "--url", NOT_LISTENING, "--log-key", "{nonutf8}",
        "--state", "{new}", name="log-verify-log-key-nonutf8"),
    row("", "log", "verify", "--url", NOT_LISTENING, "--log-key", "{log_pub}",
        "--state", "{dir}", name="log-verify-state-is-a-directory"),
    row("", "log", "verify", "--url", NOT_LISTENING, "--log-key", "{log_pub}",
        "--state", "{nonutf8}", name="log-verify-state-nonutf8"),
    row("--max-age", "log", "verify", "--url", NOT_LISTENING, "--log-key", "{log_pub}",
        "--state", "{new}", "--max-age", "-1", name="log-verify-max-age-negative"),
    row("--max-age", "log", "verify", "--url", NOT_LISTENING, "--log-key", "{log_pub}",
        "--state", "{new}", "--max-age", "nan", name="log-verify-max-age-nan"),
    row("--max-age", "log", "verify", "--url", NOT_LISTENING, "--log-key", "{log_pub}",
        "--state", "{new}", "--max-age", "1e12", name="log-verify-max-age-1e12"),
    # hushcc attest show / verify / simulate / measure
    *file_rows("attest-show", ("attest", "show", "{file}"), truncated="bundle_cut"),
    *file_rows("attest-verify-bundle", ("attest", "verify", "{file}", "--policy", "{policy}"),
               truncated="bundle_cut"),
    *file_rows("attest-verify-policy", ("attest", "verify", "{bundle}", "--policy", "{file}"),
               kinds=("missing", "dir", "random", "nonutf8")),
    row("unknown", "attest", "verify", "{bundle}", "--policy", "{policy_unknown_key}",
        name="attest-verify-policy-unknown-key"),
    row("--at", "attest", "verify", "{bundle}", "--policy", "{policy}", "--at", "yesterday",
        name="attest-verify-at-not-a-time"),
    row("--nonce", "attest", "verify", "{bundle}", "--policy", "{policy}", "--nonce", "zz",
        name="attest-verify-nonce-not-hex"),
    row("--gpu-vbios-rim", "attest", "verify", "{bundle}", "--policy", "{policy}",
        "--gpu-driver-rim", "{policy}", name="attest-verify-driver-rim-without-vbios-rim"),
    row("--gpu-driver-rim", "attest", "verify", "{bundle}", "--policy", "{policy}",
        "--gpu-vbios-rim", "{policy}", name="attest-verify-vbios-rim-without-driver-rim"),
    *file_rows("attest-verify-tdx-collateral",
               ("attest", "verify", "{bundle}", "--policy", "{policy}",
                "--tdx-collateral", "{file}"), kinds=("missing", "dir", "nonutf8")),
    *file_rows("attest-simulate-key-config", ("attest", "simulate", "--key-config", "{file}",
                                              "--out", "{new}"), truncated="gw_pub_cut"),
    row("private key", "attest", "simulate", "--key-config", "{gw_key}", "--out", "{new}",
        name="attest-simulate-private-key-for-public"),
    row("", "attest", "simulate", "--key-config", "{log_pub}", "--out", "{new}",
        name="attest-simulate-log-key-for-key-config"),
    *(row("--hours", *SIMULATE, f"--hours={h}", name=f"attest-simulate-hours-{h}")
      for h in ("nan", "inf", "-inf", "1e12", "0", "-1", "x")),
    *(row("--gpus", *SIMULATE, f"--gpus={g}", name=f"attest-simulate-gpus-{g}")
      for g in ("17", "-1", "1.5")),
    *file_rows("attest-simulate-release", (*SIMULATE, "--release", "{file}"),
               truncated="release_cut"),
    row("release", *SIMULATE, "--release", "{release_wrong_shape}",
        name="attest-simulate-release-wrong-shape"),
    row("--model", *SIMULATE, "--model", "{missing}", name="attest-simulate-model-missing"),
    *file_rows("attest-simulate-config", (*SIMULATE, "--config", "{file}"),
               kinds=("missing", "dir", "nonutf8")),
    row("directory", *SIMULATE[:4], "--out", "{missing}/b.json",
        name="attest-simulate-out-in-missing-dir"),
    row("directory", *SIMULATE[:4], "--out", "{dir}", name="attest-simulate-out-is-a-directory"),
    row("directory", *SIMULATE, "--entry-out", "{missing}/e.json",
        name="attest-simulate-entry-out-in-missing-dir"),
    row("not found", "attest", "measure", "--root", "{missing}",
        name="attest-measure-root-missing"),
    row("directory", "attest", "measure", "--root", "{policy}", name="attest-measure-root-a-file"),
    row("nothing to measure", "attest", "measure", "--root", "{dir}",
        name="attest-measure-root-empty"),
    # hushcc verify / ask (the client)
    *file_rows("verify-config", ("verify", "--config", "{file}")),
    *file_rows("ask-config", ("ask", "hello", "--config", "{file}")),
    row("unknown key", "verify", "--config", "{cfg_unknown_key}", name="verify-config-unknown-key"),
    row("url", "verify", "--config", "{cfg_unknown_key}", "--relay", "localhost:8080",
        name="verify-relay-without-scheme"),
    row("--max-tokens", "ask", "hello", "--config", "{cfg_unknown_key}", "--max-tokens", "nan",
        name="ask-max-tokens-nan"),
    row("--max-tokens", "ask", "hello", "--config", "{cfg_unknown_key}", "--max-tokens", "1e12",
        name="ask-max-tokens-huge"),
    # hushcc demo
    row("--question", "demo", "--question", "", name="demo-question-empty"),
    row("--question", "demo", "--question", "q" * 3000, name="demo-question-too-long"),
]

SERVE_ROWS = [
    row("port", *SERVE[:4], "--port", "99999", *SERVE[6:], *SERVE_KEYS,
        name="log-serve-port-99999"),
    row("port", *SERVE[:4], "--port", "nan", *SERVE[6:], *SERVE_KEYS, name="log-serve-port-nan"),
    *file_rows("log-serve-config", (*SERVE, *SERVE_KEYS, "--config", "{file}"),
               kinds=("missing", "dir", "random", "nonutf8")),
    *(row(key.split()[0], *SERVE, *SERVE_KEYS, "--config", "{" + name + "}",
          name=f"log-serve-config-{name.replace('_', '-')}")
      for name, key in (("cfg_unknown_key", "unknown"), ("cfg_max_batch_0", "max_batch"),
                        ("cfg_resign_0", "resign_interval"),
                        ("cfg_resign_nan", "resign_interval"))),
    row("key", *SERVE, "--log-key", "{log_pub}", "--release-key", "{rel_pub}",
        name="log-serve-public-key-for-private"),
    row("key", *SERVE, "--log-key", "{log_key}", "--release-key", "{rel_key}",
        name="log-serve-private-key-for-public"),
    row("", *SERVE, "--log-key", "{nonutf8}", "--release-key", "{rel_pub}",
        name="log-serve-log-key-nonutf8"),
    row("", *SERVE, "--log-key", "{missing}", "--release-key", "{rel_pub}",
        name="log-serve-log-key-missing"),
]

NODE = ("node", "serve", "--host", "127.0.0.1", "--port", "0", "--tiny-model")

# `node serve` rows: every input is checked before the hardening audit lines.
SERVE_ROWS += [
    row("--port", *NODE, "--port=99999", name="node-serve-port-99999"),
    row("--metrics-port", *NODE, "--metrics-port", "nan", name="node-serve-metrics-port-nan"),
    row("url", *NODE, "--release", "{release}", "--log-url", "localhost:8081",
        name="node-serve-log-url-without-scheme"),
    row("unknown", *NODE, "--config", "{cfg_unknown_key}", name="node-serve-config-unknown-key"),
    *file_rows("node-serve-config", (*NODE, "--config", "{file}"),
               kinds=("missing", "dir", "random", "nonutf8")),
    *(row("--key-interval", *NODE, f"--key-interval={v}", name=f"node-serve-key-interval-{v}")
      for v in ("nan", "inf", "-1", "0", "1e12")),
    *(row("--key-grace", *NODE, f"--key-grace={v}", name=f"node-serve-key-grace-{v}")
      for v in ("nan", "inf", "-1", "1e12")),
    *(row("redis", *NODE, "--redis-url", url, name=f"node-serve-redis-url-{name}")
      for name, url in (("without-scheme", "localhost:6379"),
                        ("port-99999", "redis://localhost:99999"))),
    row("model", *NODE[:-1], "--model", "{missing}", name="node-serve-model-missing"),
    row("model", *NODE[:-1], "--model", "{random}", name="node-serve-model-random-file"),
    row("gguf", *NODE[:-1], "--model", "{random_gguf}", name="node-serve-model-random-gguf"),
    *file_rows("node-serve-release", (*NODE, "--release", "{file}")),
    row("release", *NODE, "--release", "{release_wrong_shape}",
        name="node-serve-release-wrong-shape"),
    *(row(key, *NODE, "--config", "{" + name + "}", name=f"node-serve-{name.replace('_', '-')}")
      for name, key in (("cfg_key_interval_nan", "key_interval"),
                        ("cfg_key_grace_neg", "key_grace"), ("cfg_num_blocks_0", "num_blocks"),
                        ("cfg_num_blocks_str", "num_blocks"))),
    row("--release", *NODE, "--tee", "configfs-tsm",
        name="node-serve-hardware-tee-without-release"),
    *(row("--pace-ms", *NODE, f"--pace-ms={v}", name=f"node-serve-pace-ms-{v}")
      for v in ("-1", "nan", "1.5", "10001")),
    row("--device", *NODE, "--device", "tpu", name="node-serve-device-unknown"),
    row("cuda device", *NODE, "--device", "cuda:99", name="node-serve-device-absent-gpu"),
    row("--dtype", *NODE, "--dtype", "int8", name="node-serve-dtype-unknown"),
    row("device", *NODE, "--config", "{cfg_device_gpu}", name="node-serve-config-device-gpu"),
]

# Relay and issuer rows.
NODE_ID = "ab" * 32
RELAY = ("relay", "serve", "--host", "127.0.0.1", "--port", "0", "--issuer-name", "issuer.test",
         "--issuer-key", "{issuer_key_pub}", "--node", f"{NODE_ID}={NOT_LISTENING}")
ISSUER = ("issuer", "serve", "--host", "127.0.0.1", "--port", "0", "--key", "{issuer_key}",
          "--api-keys", "{api_keys}")

IN_PROCESS_ROWS += [
    row("overwrite", "issuer", "keygen", "--out", "{gw_key}", name="issuer-keygen-existing-out"),
    row("", "issuer", "keygen", "--out", "{missing}/k", name="issuer-keygen-out-in-missing-dir"),
    *(row("--lifetime-days", "issuer", "keygen", "--out", "{new}", f"--lifetime-days={v}",
          name=f"issuer-keygen-lifetime-days-{v}") for v in ("nan", "-1", "0", "1e12")),
]

SERVE_ROWS += [
    row("--port", *RELAY[:4], "--port=99999", *RELAY[6:], name="relay-serve-port-99999"),
    *file_rows("relay-serve-config", (*RELAY, "--config", "{file}"),
               kinds=("missing", "dir", "random", "nonutf8")),
    row("unknown", *RELAY, "--config", "{cfg_unknown_key}", name="relay-serve-config-unknown-key"),
    *(row("redis", *RELAY, "--redis", url, name=f"relay-serve-redis-{name}")
      for name, url in (("without-scheme", "localhost:6379"), ("http", "http://localhost:6379"),
                        ("port-99999", "redis://localhost:99999"),
                        ("db-not-a-number", "redis://localhost:6379/x"))),
    *file_rows("relay-serve-issuer-key", (*RELAY[:8], "--issuer-key", "{file}", *RELAY[10:]),
               truncated="issuer_pub_cut"),
    row("", *RELAY[:8], "--issuer-key", "{issuer_key}", *RELAY[10:],
        name="relay-serve-private-key-for-public"),
    row("", *RELAY[:8], "--issuer-key", "{gw_pub}", *RELAY[10:],
        name="relay-serve-ohttp-key-for-issuer-key"),
    row("--node", *RELAY, "--node", "no-equals-sign", name="relay-serve-node-not-id-url"),
    row("url", *RELAY[:-2], "--node", f"{NODE_ID}=not a url",
        name="relay-serve-node-url-malformed"),
    *(row("--refresh-interval", *RELAY, f"--refresh-interval={v}",
          name=f"relay-serve-refresh-interval-{v}") for v in ("nan", "-1", "0", "inf")),
    row("--port", *ISSUER[:4], "--port=99999", *ISSUER[6:], name="issuer-serve-port-99999"),
    *file_rows("issuer-serve-key", (*ISSUER[:6], "--key", "{file}", *ISSUER[8:]),
               kinds=("missing", "dir", "empty", "random", "nonutf8"), truncated="issuer_key_cut"),
    row("", *ISSUER[:6], "--key", "{issuer_pub}", *ISSUER[8:],
        name="issuer-serve-public-key-for-private"),
    row("", *ISSUER[:6], "--key", "{gw_key}", *ISSUER[8:],
        name="issuer-serve-ohttp-key-for-issuer-key"),
    *file_rows("issuer-serve-api-keys", (*ISSUER[:8], "--api-keys", "{file}"),
               kinds=("missing", "dir", "empty", "nonutf8")),
    *(row("--quota", *ISSUER, f"--quota={v}", name=f"issuer-serve-quota-{v}")
      for v in ("-1", "0", "nan", "1e12")),
    *(row("--quota-window", *ISSUER, f"--quota-window={v}", name=f"issuer-serve-quota-window-{v}")
      for v in ("nan", "-1", "0", "inf")),
]

# `image` rows: `image build` checks every input before any work or output directory.
BUILD = ("image", "build", "--out", "{new}", "--model", "{missing}")
IN_PROCESS_ROWS += [
    *(row("--vcpus", *BUILD, f"--vcpus={v}", name=f"image-build-vcpus-{v}")
      for v in ("0", "nan", "-1", "100000")),
    *(row("--source-date-epoch", *BUILD, f"--source-date-epoch={v}",
          name=f"image-build-source-date-epoch-{v}") for v in ("nan", "-1", "1e12")),
    *(row("--guest-features", *BUILD, f"--guest-features={v}",
          name=f"image-build-guest-features-{n}") for n, v in (("not-hex", "zz"),
                                                               ("over-64-bits", "1" + "0" * 16))),
    *file_rows("image-build-config", (*BUILD, "--config", "{file}"),
               kinds=("missing", "dir", "nonutf8")),
    row("utf-8", *BUILD, "--lock", "{nonutf8}", "--wheels", "{dir}",
        name="image-build-lock-nonutf8"),
    row("--wheels", *BUILD, "--lock", "{api_keys}", name="image-build-lock-without-wheels"),
    row("--kernel", *BUILD, "--ovmf", "{release}", "--kernel", "{missing}", "--initrd",
        "{release}", name="image-build-kernel-missing"),
    row("--model", *BUILD, name="image-build-model-missing"),
    row("--model", *BUILD[:-1], "{random}", name="image-build-model-random-file"),
    row("not a directory", "image", "build", "--out", "{release}", "--model", "{missing}",
        name="image-build-out-existing-file"),
    row("manifest", "image", "publish", "{missing}", "--log", NOT_LISTENING, "--key", "{rel_key}",
        name="image-publish-dir-missing"),
    row("manifest", "image", "publish", "{dir}", "--log", NOT_LISTENING, "--key", "{rel_key}",
        name="image-publish-dir-empty"),
    row("--log", "image", "publish", "{dir}", "--log", "not a url", "--key", "{rel_key}",
        name="image-publish-log-url-malformed"),
    row("inputs", "image", "verify", "{missing}", "--log", NOT_LISTENING, "--log-key", "{log_pub}",
        name="image-verify-dir-missing"),
    row("inputs", "image", "verify", "{dir}", "--log", NOT_LISTENING, "--log-key", "{log_pub}",
        name="image-verify-dir-empty"),
    row("--log", "image", "verify", "{dir}", "--log", "localhost:8081", "--log-key", "{log_pub}",
        name="image-verify-log-url-without-scheme"),
]

CONFIGS = {
    "cfg_unknown_key": "max_batchh = 10\n",
    "cfg_max_batch_0": "max_batch = 0\n",
    "cfg_resign_0": "resign_interval = 0\n",
    "cfg_resign_nan": "resign_interval = nan\n",
    "cfg_key_interval_nan": "key_interval = nan\n",
    "cfg_key_grace_neg": "key_grace = -1\n",
    "cfg_num_blocks_0": "num_blocks = 0\n",
    "cfg_num_blocks_str": 'num_blocks = "many"\n',
    "cfg_device_gpu": 'device = "gpu"\n',
    "policy": "allow_simulated = true\n",
    "policy_unknown_key": "allow_simulated = true\nallow_simulatd = true\n",
    "release_wrong_shape": '{"entry": "AA==", "index": -1, "checkpoint": 7}',
}


@dataclass(frozen=True, slots=True)
class World:
    """A folder of good and bad input files; `new` names a path no good run may leave behind."""

    root: Path

    def path(self, name: str) -> Path:
        return self.root / name

    def argv(self, template: tuple[str, ...]) -> list[str]:
        names = {p.name.replace(".", "_"): str(p) for p in self.root.iterdir()}
        names |= {"missing": str(self.root / "missing"), "new": str(self.root / "new")}
        return [a.format_map(names) if "{" in a else a for a in template]

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(self.root)): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in sorted(self.root.rglob("*"))}


def _run_hushcc(*args: str) -> None:
    """Run a subcommand in-process for the world's setup; it must succeed."""
    assert main(list(args)) == 0, args


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world")
    w = World(root)
    _run_hushcc("ohttp", "keygen", "--out", str(root / "gw_key"))
    (root / "gw_key.pub").rename(root / "gw_pub")
    for name in ("log", "rel"):
        _run_hushcc("log", "keygen", "--out", str(root / f"{name}_key"), "--name", f"{name}.test")
        (root / f"{name}_key.pub").rename(root / f"{name}_pub")
    _run_hushcc("attest", "simulate", "--key-config", str(root / "gw_pub"),
                "--out", str(root / "bundle"), "--entry-out", str(root / "entry"))
    entry = (root / "entry").read_bytes()
    release = {"entry": base64.b64encode(entry).decode(), "index": 0,
               "checkpoint": "log.test\n1\n" + "A" * 44 + "\n", "inclusion_proof": []}
    (root / "release").write_text(json.dumps(release))
    _run_hushcc("issuer", "keygen", "--out", str(root / "issuer_key"))
    (root / "issuer_pub").write_bytes((root / "issuer_key.pub").read_bytes())
    (root / "api_keys").write_text("k" * 32 + "\n")
    (root / "api_keys").chmod(0o600)
    for name in ("gw_pub", "entry", "bundle", "release", "issuer_pub", "issuer_key"):
        data = (root / name).read_bytes()
        (root / f"{name}_cut").write_bytes(data[: len(data) // 2])
    for name, text in CONFIGS.items():
        (root / name).write_text(text)
    (root / "dir").mkdir()
    (root / "empty").write_bytes(b"")
    (root / "random").write_bytes(random.Random(11).randbytes(1024))
    (root / "random.gguf").write_bytes(random.Random(12).randbytes(1024))
    (root / "nonutf8").write_bytes(b"\xff\xfe\x00bad \xc3\x28 utf-8\n" * 8)
    return w


@pytest.fixture
def unchanged(world: World) -> Iterator[World]:
    """The world, checked after the test: no file created, removed or changed."""
    before = world.snapshot()
    yield world
    assert world.snapshot() == before, "a failed command wrote or changed a file"


def _check_one_line_error(code: int, err: str, expect: str) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {err[:300]!r}"
    assert lines[0].startswith("hushcc: error: "), lines[0][:300]
    assert expect.lower() in lines[0].lower(), lines[0][:300]
    assert len(lines[0]) < 1000, "the error line quotes too much"
    assert code == 1


@pytest.mark.parametrize("bad", IN_PROCESS_ROWS)
def test_bad_input_is_one_line_error_exit_1_nothing_written(
    bad: Row, unchanged: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(unchanged.argv(bad.argv))
    _check_one_line_error(code, capsys.readouterr().err, bad.expect)


@pytest.mark.parametrize("bad", SERVE_ROWS)
def test_server_given_bad_input_exits_1_with_one_line_and_never_listens(
    bad: Row, unchanged: World
) -> None:
    result = subprocess.run([sys.executable, "-m", "app", *unchanged.argv(bad.argv)],
                            capture_output=True, text=True, timeout=SERVE_DEADLINE, check=False)
    assert "listening on" not in result.stdout
    _check_one_line_error(result.returncode, result.stderr, bad.expect)


def _leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[str]:
    """Every runnable `hushcc` subcommand, as 'group name' strings."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                deeper = _leaf_commands(sub, (*prefix, name))
                found |= deeper or {" ".join((*prefix, name))}
    return found


def _covered(rows: list[object], width: int) -> set[str]:
    return {" ".join(p.values[0].argv[:width]) for p in rows}  # type: ignore[attr-defined]


# Where each subcommand's positive twin runs: here, or (slow ones) in the named test.
GOOD_COMMANDS = {
    **dict.fromkeys(("ohttp keygen", "ohttp show-config", "log keygen", "log serve", "log entry",
                     "log add", "log verify", "attest simulate", "attest show", "attest verify",
                     "attest measure"), "test_positive_twin_every_subcommand_on_good_inputs"),
    "demo": "tests/integration/test_demo.py (loads the default model)",
    **dict.fromkeys(("ask", "verify"), "tests/integration/test_private_request.py "
                    "(log, issuer, relay and two nodes as real processes)"),
    "node serve": "tests/node/test_node_e2e.py (a real node process on loopback)",
    "relay serve": "tests/relay/test_relay_e2e.py (real relay, issuer and node processes)",
    "issuer serve": "tests/relay/test_relay_e2e.py (real relay, issuer and node processes)",
    "issuer keygen": "tests/relay/test_relay_e2e.py (its keys come from the command)",
    **dict.fromkeys(("image build", "image publish", "image verify"),
                    "tests/image/ (a real build, publish to a log, rebuild and verify)"),
}


# Subcommands that have no bad-input row yet because none holds: each is a known defect, named
# here so it stays visible. The test fails once a row exists (remove the entry then).
NO_ROW_HOLDS_YET: dict[str, str] = {}


def test_every_subcommand_has_bad_input_rows_and_a_positive_twin() -> None:
    commands = _leaf_commands(build_parser())
    bad = _covered(IN_PROCESS_ROWS + SERVE_ROWS, 2) | _covered(IN_PROCESS_ROWS, 1)
    assert commands - bad - NO_ROW_HOLDS_YET.keys() == set(), "subcommands without bad-input rows"
    assert bad & NO_ROW_HOLDS_YET.keys() == set(), "a known gap has rows now: drop its entry"
    assert NO_ROW_HOLDS_YET.keys() <= commands
    assert commands - GOOD_COMMANDS.keys() == set(), "subcommands without a positive twin"


def _ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "error" not in captured.err, captured.err  # stderr may carry progress, not errors
    assert "Traceback" not in captured.err
    return captured.out


def _start_log(world: World, state: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "log", "serve", "--host", "127.0.0.1", "--port", "0",
         "--state-dir", str(state), "--log-key", str(world.path("log_key")),
         "--release-key", str(world.path("rel_pub"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening on http://"):
        process.kill()
        pytest.fail(f"log server did not start: {line!r} {process.communicate()[1][-500:]}")
    return process, line.split()[-1]


def test_positive_twin_every_subcommand_on_good_inputs_chains(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _ok(capsys, "ohttp", "keygen", "--out", str(tmp_path / "gw.key"), "--key-id", "255")
    assert "gw.key.pub" in out
    assert "key_id=255" in _ok(capsys, "ohttp", "show-config", str(tmp_path / "gw.key.pub"))
    assert ".pub" in _ok(capsys, "log", "keygen", "--out", str(tmp_path / "k"), "--name", "a.b")
    measured = _ok(capsys, "attest", "measure", "--root", str(Path(__file__).parents[2]))
    assert "hushcc-measure/v1" in measured
    # `log entry` from that measurement is the entry `attest simulate --entry-out` wrote.
    entry = json.loads(_ok(capsys, "log", "entry", "--image-digest", "sha256:" + "0" * 64,
                           "--measurement", "sim=" + measured.split()[0]))
    assert entry == json.loads(world.path("entry").read_bytes())
    server, url = _start_log(world, tmp_path / "state")
    try:
        staple = tmp_path / "release.json"
        staple.write_text(_ok(capsys, "log", "add", str(world.path("entry")), "--url", url,
                              "--release-key", str(world.path("rel_key")),
                              "--log-key", world.path("log_pub").read_text().strip()))
        assert json.loads(staple.read_text())["index"] == 0
        bundle = tmp_path / "bundle.json"
        _ok(capsys, "attest", "simulate", "--key-config", str(tmp_path / "gw.key.pub"),
            "--out", str(bundle), "--release", str(staple), "--hours", "1", "--gpus", "2")
        assert "gpu[1]:" in _ok(capsys, "attest", "show", str(bundle))
        policy = tmp_path / "policy.toml"
        log_pub = world.path("log_pub").read_text().strip()
        policy.write_text(f'allow_simulated = true\nlog_key = "{log_pub}"\n')
        assert _ok(capsys, "attest", "verify", str(bundle), "--policy", str(policy)).startswith(
            "attestation bundle: VERIFIED")
        state = tmp_path / "seen.note"
        assert "tree size 1" in _ok(capsys, "log", "verify", "--url", url, "--log-key",
                                    str(world.path("log_pub")), "--state", str(state))
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
