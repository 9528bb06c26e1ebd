"""The PrivateToken HTTP authentication scheme (RFC 9577 §2) and the issuer directory (RFC 9578 §4).

Pure: strings and bytes in, frozen values out.

* Base64url values are written with padding, as RFC 9577 §2.1/§2.2 and RFC 9578 §4 require;
  the reader also accepts them unpadded (several deployed clients omit it) but nothing else
  (no standard-alphabet characters, no whitespace).
* `parse_authorization` reads `Authorization: PrivateToken token=...` (token or quoted-string
  value, case-insensitive scheme and parameter names; unknown parameters ignored, §2.2) and
  returns the decoded Token bytes' structure.
* `format_challenge` writes `PrivateToken challenge="...", token-key="..."[, max-age=N]`.
* `IssuerDirectory` is the `application/private-token-issuer-directory` JSON object:
  `issuer-request-uri` and `token-keys` (`token-type`, `token-key`, optional `not-before`).
Errors are `ProtocolError` and never quote the header or token.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from hushcc.errors import ProtocolError
from relay.privacypass import TOKEN_TYPE_BLIND_RSA, IssuerPublicKey, Token, TokenChallenge

SCHEME = "PrivateToken"
DIRECTORY_PATH = "/.well-known/private-token-issuer-directory"
DIRECTORY_MEDIA_TYPE = "application/private-token-issuer-directory"
REQUEST_MEDIA_TYPE = "application/private-token-request"
RESPONSE_MEDIA_TYPE = "application/private-token-response"
MAX_HEADER_LENGTH = 4096
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
# The one form hushcc's client sends (and most do): read without the general parameter parser.
_PLAIN_CREDENTIAL = re.compile(r'PrivateToken token="([A-Za-z0-9_-]*={0,2})"')
# auth-param = token BWS "=" BWS ( token / quoted-string )   (RFC 9110 §11.2)
_PARAM = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*'
                    r'(?:"((?:[^"\\]|\\.)*)"|([!#$%&\'*+.^_`|~0-9A-Za-z-]+=*))\s*(?:,|$)')


def b64url_encode(data: bytes) -> str:
    """Base64url with padding (RFC 4648 §5, §3.2)."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url, padded or not.

    Raises:
        ProtocolError: characters outside the base64url alphabet, or a bad length.
    """
    if _B64URL.fullmatch(text) is None:
        raise ProtocolError("not base64url")
    stripped = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("not base64url") from exc


def _quote(value: str) -> str:
    return f'"{value}"'


def format_challenge(challenge: TokenChallenge, key: IssuerPublicKey,
                     max_age: int | None = None) -> str:
    """The `WWW-Authenticate` value for one PrivateToken challenge (RFC 9577 §2.1)."""
    value = (f"{SCHEME} challenge={_quote(b64url_encode(challenge.to_bytes()))}, "
             f"token-key={_quote(b64url_encode(key.spki))}")
    if max_age is not None:
        value += f", max-age={max_age}"
    return value


def parse_auth_params(params: str) -> dict[str, str]:
    """Split `name=value, name="value"` into a dict with lower-cased names (first one wins).

    Raises:
        ProtocolError: malformed parameter list.
    """
    result: dict[str, str] = {}
    pos = 0
    while pos < len(params):
        match = _PARAM.match(params, pos)
        if match is None or match.end() == pos:
            raise ProtocolError("malformed authentication parameters")
        name = match.group(1).lower()
        value = match.group(2) if match.group(2) is not None else match.group(3)
        if match.group(2) is not None:
            value = re.sub(r"\\(.)", r"\1", value)
        result.setdefault(name, value)
        pos = match.end()
    return result


def parse_authorization(header: str) -> Token:
    """Read the Token from an `Authorization: PrivateToken token=...` value (RFC 9577 §2.2).

    Raises:
        ProtocolError: another scheme, no token parameter, or a malformed token.
    """
    if len(header) > MAX_HEADER_LENGTH:
        raise ProtocolError("authorization header too long")
    if (plain := _PLAIN_CREDENTIAL.fullmatch(header)) is not None:
        return Token.from_bytes(b64url_decode(plain.group(1)))
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != SCHEME.lower():
        raise ProtocolError("not a PrivateToken credential")
    token = parse_auth_params(params.strip()).get("token")
    if token is None:
        raise ProtocolError("PrivateToken credential without a token")
    return Token.from_bytes(b64url_decode(token))


def format_authorization(token: Token) -> str:
    """The `Authorization` value that redeems `token`."""
    return f"{SCHEME} token={_quote(b64url_encode(token.to_bytes()))}"


@dataclass(frozen=True, slots=True)
class TokenKeyEntry:
    """One `token-keys` member of the issuer directory."""

    key: IssuerPublicKey
    not_before: int | None = None
    token_type: int = TOKEN_TYPE_BLIND_RSA


@dataclass(frozen=True, slots=True)
class IssuerDirectory:
    """The issuer directory object (RFC 9578 §4)."""

    issuer_request_uri: str
    token_keys: tuple[TokenKeyEntry, ...]

    def to_bytes(self) -> bytes:
        """Encode as JSON (keys in the RFC's order)."""
        keys: list[dict[str, object]] = []
        for entry in self.token_keys:
            item: dict[str, object] = {"token-type": entry.token_type,
                                       "token-key": b64url_encode(entry.key.spki)}
            if entry.not_before is not None:
                item["not-before"] = entry.not_before
            keys.append(item)
        return json.dumps({"issuer-request-uri": self.issuer_request_uri,
                           "token-keys": keys}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> IssuerDirectory:
        """Decode the JSON; keys of unknown token types are skipped, as clients must.

        Raises:
            ProtocolError: not the directory object, or a malformed type-2 key.
        """
        try:
            value = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError("issuer directory is not JSON") from exc
        if not isinstance(value, dict) or not isinstance(value.get("issuer-request-uri"), str):
            raise ProtocolError("issuer directory lacks issuer-request-uri")
        raw_keys = value.get("token-keys")
        if not isinstance(raw_keys, list):
            raise ProtocolError("issuer directory lacks token-keys")
        entries = []
        for item in raw_keys:
            if not isinstance(item, dict) or item.get("token-type") != TOKEN_TYPE_BLIND_RSA:
                continue
            encoded, not_before = item.get("token-key"), item.get("not-before")
            if not isinstance(encoded, str):
                raise ProtocolError("token-key is not a string")
            if not_before is not None and (type(not_before) is not int or not_before < 0):
                raise ProtocolError("not-before is not a timestamp")
            entries.append(TokenKeyEntry(IssuerPublicKey.from_spki(b64url_decode(encoded)),
                                         not_before))
        return cls(value["issuer-request-uri"], tuple(entries))
