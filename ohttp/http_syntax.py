"""What RFC 9292 makes invalid in a binary HTTP message's fields and control data.

Pure; raises only `ProtocolError`. Used by the `bhttp` encoders and decoders alike, so nothing this
package emits is something it would refuse.

Rules (each a `ProtocolError`):
* Field name (RFC 9292 §3.6, RFC 9110 §5.1): a token (RFC 9110 §5.6.2); uppercase letters are
  valid (names compare case-insensitively). A pseudo-field name is ":" followed by a token.
* Field value (RFC 9292 §3.6 → RFC 9113 §8.2.1): no NUL, CR or LF anywhere, and no SP or HTAB at
  either end. The empty value is valid.
* Pseudo-fields (RFC 9292 §3.6): `:method`, `:scheme`, `:authority`, `:path` and `:status` are
  control data, never fields; other (extension) pseudo-fields must precede every regular field of
  their section.
* Control data (RFC 9292 §3.4): the method is a token (RFC 9110 §9.1); scheme and authority obey
  the field-value rule (they are HTTP/2 pseudo-field values); the path holds no control character
  and no space: stricter than RFC 9292, so that a request routed on it cannot be split if it is
  ever replayed over HTTP/1.1. The empty path is valid (CONNECT, OPTIONS *).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hushcc.errors import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Iterable

# tchar (RFC 9110 §5.6.2): "!#$%&'*+-.^_`|~", DIGIT, ALPHA.
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_VALUE_FORBIDDEN = frozenset(b"\x00\r\n")
_WHITESPACE = frozenset(b" \t")
_PATH_FORBIDDEN = frozenset([*range(0x21), 0x7F])
# RFC 9292 §3.6: these travel as control data; a field so named makes the message invalid.
CONTROL_PSEUDO_FIELDS = frozenset({b":method", b":scheme", b":authority", b":path", b":status"})


def is_token(value: bytes) -> bool:
    """`token = 1*tchar` (RFC 9110 §5.6.2)."""
    return bool(value) and _TCHAR.issuperset(value)


def check_field_value(value: bytes) -> None:
    """Refuse a value an HTTP/2 message may not carry (RFC 9113 §8.2.1).

    Raises:
        ProtocolError: NUL, CR or LF inside, or SP/HTAB at either end.
    """
    if _VALUE_FORBIDDEN.intersection(value):
        raise ProtocolError("a field value contains NUL, CR or LF")
    if value and (value[0] in _WHITESPACE or value[-1] in _WHITESPACE):
        raise ProtocolError("a field value starts or ends with whitespace")


def check_fields(fields: Iterable[tuple[bytes, bytes]]) -> None:
    """Check one field section: names, values and where pseudo-fields stand (RFC 9292 §3.6).

    Raises:
        ProtocolError: a name that is not a token (or ":" + token), a control-data pseudo-field,
            a pseudo-field after a regular field, or an invalid value.
    """
    regular_seen = False
    for name, value in fields:
        if name[:1] == b":":
            if not is_token(name[1:]):
                raise ProtocolError("a pseudo-field name is not ':' followed by a token")
            if name.lower() in CONTROL_PSEUDO_FIELDS:
                raise ProtocolError("a field repeats control data as a pseudo-field")
            if regular_seen:
                raise ProtocolError("a pseudo-field follows a regular field")
        elif is_token(name):
            regular_seen = True
        else:
            raise ProtocolError("a field name is not a token")
        check_field_value(value)


def check_control_data(method: bytes, scheme: bytes, authority: bytes, path: bytes) -> None:
    """Check a request's control data (RFC 9292 §3.4; see the module docstring).

    Raises:
        ProtocolError: a method that is not a token, a scheme or authority that is not a valid
            field value, or a path with a control character or a space.
    """
    if not is_token(method):
        raise ProtocolError("the request method is not a token")
    check_field_value(scheme)
    check_field_value(authority)
    if _PATH_FORBIDDEN.intersection(path):
        raise ProtocolError("the request path contains a control character or a space")
