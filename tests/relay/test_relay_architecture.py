"""The relay passes attestation bundles opaquely: no module of `relay` imports `node` or
`attestation` (or `app`); it may use `ohttp` and the `hushcc` leaf."""

from __future__ import annotations

import ast
from pathlib import Path

RELAY = Path(__file__).resolve().parents[2] / "relay"
FORBIDDEN = {"node", "attestation", "app", "client", "transparency_log"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_relay_imports_neither_node_nor_attestation() -> None:
    modules = sorted(RELAY.glob("*.py"))
    assert len(modules) > 3  # positive twin: the scan does see the package
    seen = set()
    for path in modules:
        roots = _imported_roots(path)
        seen |= roots
        assert not roots & FORBIDDEN, f"{path.name} imports {roots & FORBIDDEN}"
    assert "hushcc" in seen
