"""The audit logger accepts only registered events with typed fields, never free text (N5)."""

from __future__ import annotations

import io
import json

import pytest

from node.audit import AuditError, AuditLog

NODE_ID = "ab" * 32


def log() -> tuple[AuditLog, io.StringIO]:
    stream = io.StringIO()
    return AuditLog(stream, clock=lambda: 1.5), stream


def test_registered_event_is_written_as_one_json_line() -> None:
    audit, stream = log()
    audit.event("key.rotated", key_id=3, epoch=7)
    assert json.loads(stream.getvalue()) == {"event": "key.rotated", "ts": 1.5, "key_id": 3,
                                             "epoch": 7}


@pytest.mark.parametrize(("name", "fields"), [
    pytest.param("request.prompt", {"text": "canary"}, id="unregistered-name"),
    pytest.param("key.rotated", {"key_id": 3}, id="missing-field"),
    pytest.param("key.rotated", {"key_id": 3, "epoch": 1, "note": "x"}, id="extra-field"),
    pytest.param("key.rotated", {"key_id": "3", "epoch": 1}, id="text-for-a-count"),
    pytest.param("key.rotated", {"key_id": 300, "epoch": 1}, id="key-id-out-of-range"),
    pytest.param("key.rotated", {"key_id": True, "epoch": 1}, id="bool-for-an-int"),
    pytest.param("node.hardening", {"measure": "core", "result": "secret prompt"},
                 id="free-text-in-an-enum"),
    pytest.param("node.started", {"node_id": "canary" * 11, "tee": "simulated", "key_id": 1,
                                  "startup_seconds": 1.0}, id="free-text-as-node-id"),
    pytest.param("node.started", {"node_id": NODE_ID, "tee": "simulated", "key_id": 1,
                                  "startup_seconds": float("nan")}, id="nan-duration"),
])
def test_anything_else_is_refused_and_not_written(name: str, fields: dict[str, object]) -> None:
    audit, stream = log()
    with pytest.raises(AuditError):
        audit.event(name, **fields)
    assert stream.getvalue() == ""


def test_positive_twin_of_each_typed_field() -> None:
    audit, stream = log()
    audit.event("node.started", node_id=NODE_ID, tee="simulated", key_id=255,
                startup_seconds=0.25)
    audit.event("node.hardening", measure="seccomp", result="applied")
    assert len(stream.getvalue().splitlines()) == 2
