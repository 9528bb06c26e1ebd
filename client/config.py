"""The client's configuration file: where the relay, issuer and log are, and what is pinned.

TOML, every key checked (unknown keys, wrong types and malformed URLs are a `ConfigError`
naming the key, never ignored); relative paths are relative to the file's folder:

```toml
relay_url = "http://127.0.0.1:8080"          # the OHTTP relay (the only place requests go)
issuer_url = "http://127.0.0.1:8082"         # the Privacy Pass issuer
log_url = "http://127.0.0.1:8081"            # optional: tiles for consistency proofs
log_key = "log.example+1a2b3c4d+AbC..."      # the pinned log verifier key (C2SP note key)
policy = "policy.toml"                       # attestation policy (docs/policy.md)
issuer_key = "issuer.key.pub"                # the pinned issuer key record (T4)
issuer_name = "issuer.example"               # the relay's token challenge: issuer name ...
origin_name = "relay.example"                # ... and origin (the relay's name)
api_key_file = "api.key"                     # the user's issuer API key (mode 0600)
model = "smollm2-135m-instruct"              # optional default model
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hushcc.cliparse import http_url
from hushcc.errors import ConfigError
from hushcc.files import read_text

if TYPE_CHECKING:
    from pathlib import Path

_REQUIRED = ("relay_url", "issuer_url", "log_key", "policy", "issuer_key", "issuer_name",
             "origin_name", "api_key_file")
_OPTIONAL = ("log_url", "model")
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """A parsed, checked client configuration (paths made absolute)."""

    relay_url: str
    issuer_url: str
    log_key: str
    policy: Path
    issuer_key: Path
    issuer_name: str
    origin_name: str
    api_key_file: Path
    log_url: str | None = None
    model: str = DEFAULT_MODEL


def parse_client_config(text: str, base: Path) -> ClientConfig:
    """Parse the TOML text of a client configuration whose folder is `base`.

    Raises:
        ConfigError: malformed TOML, an unknown or missing key, or a bad value (named).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"client config is not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ConfigError(f"client config has unknown key(s): {', '.join(unknown)}")
    missing = [key for key in _REQUIRED if key not in doc]
    if missing:
        raise ConfigError(f"client config lacks: {', '.join(missing)}")
    for key, value in doc.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"client config {key} must be a non-empty string")
    urls = {key: http_url(doc[key]) for key in ("relay_url", "issuer_url", "log_url")
            if key in doc}
    return ClientConfig(
        relay_url=urls["relay_url"], issuer_url=urls["issuer_url"], log_key=doc["log_key"],
        policy=base / doc["policy"], issuer_key=base / doc["issuer_key"],
        issuer_name=doc["issuer_name"], origin_name=doc["origin_name"],
        api_key_file=base / doc["api_key_file"], log_url=urls.get("log_url"),
        model=doc.get("model", DEFAULT_MODEL))


def load_client_config(path: Path) -> ClientConfig:
    """Read and parse a client configuration file."""
    return parse_client_config(read_text(path, "client config"), path.resolve().parent)
