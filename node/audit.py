"""The node's audit log: only registered events with typed, non-free-text fields (N5).

Not pure (writes JSON lines to a stream, stderr by default). An event is one line
`{"event": NAME, "ts": SECONDS, ...fields}`. `event()` refuses (raises `AuditError`) an unknown
event name, a missing or extra field, or a value of the wrong type: counts and ports are
non-negative ints, durations finite floats, key ids bytes-sized ints, node ids 64 hex digits, and
every string field is an enum of registered values. No field can carry free text, so no request
content, prompt, output, token or key can reach the log through it.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from hushcc.errors import HushError

if TYPE_CHECKING:
    from collections.abc import Callable

_HEX64 = re.compile(r"[0-9a-f]{64}")


class AuditError(HushError):
    """An event outside the allowlist (a programming error: refused, never written)."""


@dataclass(frozen=True, slots=True)
class Field:
    """A field's type: 'count', 'duration', 'key_id', 'hex64', or an enum of strings."""

    kind: str
    values: frozenset[str] = frozenset()

    def check(self, value: object) -> bool:
        """True when `value` is of this type."""
        if self.kind == "enum":
            return isinstance(value, str) and value in self.values
        if self.kind == "hex64":
            return isinstance(value, str) and _HEX64.fullmatch(value) is not None
        if self.kind == "duration":
            return isinstance(value, float) and math.isfinite(value) and value >= 0
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        return 0 <= value < (256 if self.kind == "key_id" else 1 << 63)


COUNT, DURATION, KEY_ID, HEX64 = Field("count"), Field("duration"), Field("key_id"), Field("hex64")


def enum(*values: str) -> Field:
    """An enum field."""
    return Field("enum", frozenset(values))


EVENTS: dict[str, dict[str, Field]] = {
    "node.started": {"node_id": HEX64, "tee": enum("simulated", "configfs-tsm"),
                     "key_id": KEY_ID, "startup_seconds": DURATION},
    "node.stopping": {"in_flight": COUNT},
    "node.stopped": {"requests": COUNT},
    "node.hardening": {"measure": enum("core", "dumpable", "no_new_privs", "mlock", "seccomp"),
                       "result": enum("applied", "unavailable")},
    "node.memory_hygiene": {"mode": enum("erase_on_free", "glibc_perturb")},
    "metrics.listening": {"port": COUNT},
    "key.rotated": {"key_id": KEY_ID, "epoch": COUNT},
    "key.retired": {"key_id": KEY_ID, "epoch": COUNT},
    "release.refreshed": {"index": COUNT, "tree_size": COUNT},
    "release.refresh_failed": {"index": COUNT},
}


class AuditLog:
    """Writes allowlisted events as JSON lines."""

    def __init__(self, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """Write to `stream` (stderr by default)."""
        self._stream = stream
        self._clock = clock

    def event(self, name: str, **fields: object) -> None:
        """Write one event.

        Raises:
            AuditError: unregistered name, missing or extra field, or a value of the wrong type.
        """
        schema = EVENTS.get(name)
        if schema is None:
            raise AuditError("unregistered audit event")
        if set(fields) != set(schema):
            raise AuditError("audit event fields do not match its registration")
        for key, value in fields.items():
            if not schema[key].check(value):
                raise AuditError("audit event field of the wrong type")
        line = json.dumps({"event": name, "ts": round(self._clock(), 3), **fields})
        stream = self._stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()
