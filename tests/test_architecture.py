"""The house's layering, kept true: every module's imports read with `ast`, checked against rules.

The rules are data, at the top of this file; README.md's layout section draws the same picture.
An import counts wherever it is written (module level, inside a function, under `TYPE_CHECKING`):
each one is an arrow a reader and a tool must be able to follow.

* `hushcc` is the leaf: it imports nothing of the project but itself.
* `app` is the roof: nothing in the project imports it (the `hushcc` entry point and `python -m
  app` reach it from outside; tests may import it).
* Pure modules import no I/O shell (no sockets, HTTP, subprocesses, Redis) and, of the project,
  only the leaf and their own pure siblings.
* Forbidden arrows between components, each with the reason it exists.

The positive twin plants a module with forbidden imports in a scratch tree and checks that every
one of them is reported, and that the allowed ones beside them are not.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# The project's import packages (DESIGN.md's components, the leaf and the application).
PROJECT_PACKAGES = (
    "hushcc", "app", "ohttp", "attestation", "transparency_log", "image", "node", "relay", "client",
)

# I/O shells a pure module may not import: network, HTTP, processes, shared stores.
IO_MODULES = (
    "aiohttp", "asyncio", "socket", "ssl", "subprocess", "urllib.request", "http.client",
    "http.server", "redis", "requests", "prometheus_client",
)

# Pure modules (bytes in, frozen values out) and the project modules they may import.
PURE_MODULES: dict[str, tuple[str, ...]] = {
    # all of ohttp but its command-line shell
    "ohttp": ("hushcc.errors", "ohttp"),
    # the Merkle / signed-note / checkpoint / tile core of the log
    "transparency_log.merkle": ("hushcc.errors", "transparency_log.merkle"),
    "transparency_log.note": ("hushcc.errors",),
    "transparency_log.checkpoint": (
        "hushcc.errors", "transparency_log.merkle", "transparency_log.note",
    ),
    "transparency_log.tiles": ("hushcc.errors", "transparency_log.merkle"),
    # the engine's scheduler and block manager, and the pure records they plan over
    "node.engine.scheduler": (
        "hushcc.errors", "node.engine.batch", "node.engine.blocks", "node.engine.prefix_cache",
        "node.engine.sequence",
    ),
    "node.engine.blocks": ("hushcc.errors", "node.engine.prefix_cache"),
    "node.engine.prefix_cache": ("hushcc.errors",),
    # the log's config, the token crypto and wire formats, the image's dm-verity calculator
    "transparency_log.config": ("hushcc.errors",),
    "relay.blindrsa": ("hushcc.errors",),
    "relay.privacypass": ("hushcc.errors", "relay.blindrsa"),
    "relay.authscheme": ("hushcc.errors", "relay.privacypass"),
    "relay.batched": ("hushcc.errors",),
    "image.verity": ("hushcc.errors",),
    # the SDK's event-stream decoder, result types and inner requests
    "client.sse": ("hushcc.errors",),
    "client.types": ("hushcc.errors",),
    "client.inner": ("hushcc.errors", "ohttp"),
}
# Modules inside a pure package that are its shells.
PURE_EXEMPT = ("ohttp.cli",)


@dataclass(frozen=True, slots=True)
class Forbidden:
    """Modules under `source` may not import anything under one of `targets`."""

    source: str
    targets: tuple[str, ...]
    why: str


FORBIDDEN: tuple[Forbidden, ...] = (
    Forbidden("hushcc", tuple(p for p in PROJECT_PACKAGES if p != "hushcc"),
              "the leaf imports nothing of the project"),
    Forbidden("node.engine", ("ohttp", "aiohttp", "node.gateway", "relay", "client", "app"),
              "the engine knows no transport"),
    Forbidden("relay", ("node", "attestation", "client", "image", "app"),
              "the relay passes bundles opaquely and never sees plaintext"),
    Forbidden("client", ("node", "app"), "the client talks to nodes only over the wire"),
    Forbidden("transparency_log", ("attestation", "node", "relay", "client", "image", "app"),
              "the log imports nothing of its users"),
    Forbidden("attestation", ("node", "client", "relay", "app"),
              "attestation verifies evidence; it does not know who serves or sends"),
    Forbidden("ohttp",
              ("attestation", "transparency_log", "node", "relay", "client", "image", "app"),
              "the wire package sits below every service"),
    *(
        Forbidden(package, ("app",), "nothing imports the application but its entry point")
        for package in PROJECT_PACKAGES
        if package != "app"
    ),
)


@dataclass(frozen=True, slots=True)
class Arrow:
    """One import: `module` (at `path:line`) imports `target`."""

    module: str
    target: str
    path: Path
    line: int


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def read_arrows(root: Path) -> list[Arrow]:
    """Every import of every module of the project's packages under `root`."""
    arrows: list[Arrow] = []
    for package in PROJECT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(root, path)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = _resolve(module, path.name == "__init__.py", node)
                    # `from pkg import sub` may name a submodule: count both spellings.
                    targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
                else:
                    continue
                arrows.extend(Arrow(module, target, path, node.lineno) for target in targets)
    return arrows


def _pure_rule(module: str) -> tuple[str, ...] | None:
    if any(_under(module, exempt) for exempt in PURE_EXEMPT):
        return None
    for pure, allowed in PURE_MODULES.items():
        if _under(module, pure):
            return allowed
    return None


def violations(arrows: list[Arrow]) -> list[str]:
    """The forbidden arrows among `arrows`, one readable line each."""
    found: list[str] = []
    for arrow in arrows:
        where = f"{arrow.path.name}:{arrow.line} {arrow.module} -> {arrow.target}"
        found.extend(
            f"{where}: {rule.why}"
            for rule in FORBIDDEN
            if _under(arrow.module, rule.source)
            and any(_under(arrow.target, target) for target in rule.targets)
        )
        allowed = _pure_rule(arrow.module)
        if allowed is None:
            continue
        if any(_under(arrow.target, io) for io in IO_MODULES):
            found.append(f"{where}: a pure module imports an I/O shell")
        project = arrow.target.split(".")[0] in PROJECT_PACKAGES
        # `from pkg import sub` also names `pkg` itself: a parent of an allowed module is fine
        if project and not any(_under(arrow.target, ok) or _under(ok, arrow.target)
                               for ok in allowed):
            found.append(f"{where}: a pure module imports above or beside itself")
    return sorted(set(found))


def test_the_house_has_no_forbidden_arrow() -> None:
    arrows = read_arrows(REPO_ROOT)
    assert len(arrows) > 500, "the scan must see the whole project"
    assert violations(arrows) == []


def test_every_pure_module_named_in_the_rules_exists() -> None:
    modules = {arrow.module for arrow in read_arrows(REPO_ROOT)}
    for pure in PURE_MODULES:
        assert any(_under(module, pure) for module in modules), pure


PLANTED = """\
from __future__ import annotations
import aiohttp
from hushcc.errors import ProtocolError
from node.engine import engine
from . import varint
from ..app import cli

def later() -> None:
    import redis  # a function-level import is an arrow too
"""


def _plant(root: Path, module_path: str, text: str) -> None:
    for package in PROJECT_PACKAGES:
        (root / package).mkdir(exist_ok=True)
    path = root / module_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_a_planted_forbidden_import_is_reported(tmp_path: Path) -> None:
    _plant(tmp_path, "ohttp/planted.py", PLANTED)
    found = violations(read_arrows(tmp_path))
    text = "\n".join(found)
    assert "ohttp.planted -> aiohttp: a pure module imports an I/O shell" in text
    assert "ohttp.planted -> redis: a pure module imports an I/O shell" in text
    assert "ohttp.planted -> node.engine: the wire package sits below every service" in text
    assert "ohttp.planted -> app.cli: nothing imports the application" in text
    # the allowed arrows beside them are not reported
    assert "hushcc.errors" not in text
    assert "ohttp.varint" not in text


def test_a_leaf_import_of_a_component_is_reported(tmp_path: Path) -> None:
    _plant(tmp_path, "hushcc/planted.py", "from ohttp import bhttp\nfrom hushcc import errors\n")
    found = violations(read_arrows(tmp_path))
    assert any("hushcc.planted -> ohttp" in line and "leaf" in line for line in found)
    assert not any("hushcc.errors" in line for line in found)


def test_the_relay_may_not_open_bundles(tmp_path: Path) -> None:
    _plant(tmp_path, "relay/planted.py", "import attestation.bundle\nimport ohttp.bhttp\n")
    found = violations(read_arrows(tmp_path))
    assert any("relay.planted -> attestation.bundle" in line for line in found)
    assert not any("ohttp.bhttp" in line for line in found)
