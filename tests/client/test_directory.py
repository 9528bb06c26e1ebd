"""The relay's directory: only `{"nodes": [bundle, ...]}` is read; anything else fails whole."""

from __future__ import annotations

import json

import pytest

from client.verification import MAX_NODES, parse_directory
from hushcc.errors import ProtocolError


def test_each_bundle_comes_back_as_json_bytes() -> None:
    bundles = parse_directory(json.dumps({"nodes": [{"version": 2}, {"version": 2, "x": 1}]}
                                         ).encode())
    assert [json.loads(b) for b in bundles] == [{"version": 2}, {"version": 2, "x": 1}]
    assert parse_directory(b'{"nodes": []}') == []


@pytest.mark.parametrize("data", [
    pytest.param(b"", id="empty"),
    pytest.param(b"[]", id="list"),
    pytest.param(b'{"nodes": {}}', id="nodes-object"),
    pytest.param(b'{"nodes": [1]}', id="node-not-object"),
    pytest.param(b"[" * 100_000, id="deep-nesting"),
    pytest.param(json.dumps({"nodes": [{}] * (MAX_NODES + 1)}).encode(), id="too-many"),
])
def test_a_malformed_directory_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_directory(data)
