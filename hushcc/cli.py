"""The one `hushcc` command: subcommand groups contributed by each component.

Each component owns a module with `register(subparsers)` that adds its group (`hushcc ohttp ...`,
`hushcc log ...`) and sets a `handler(args) -> int` default on every leaf parser. This module only
assembles them and maps errors to exit codes, so every subcommand behaves alike:

* `--help` at every level; a usage error prints one line and exits 2;
* a `HushError` (bad input, failed verification, bad config) or an `OSError` prints one line
  `hushcc: error: ...` and exits 1 — never a traceback, never request data;
* heavy imports (torch, transformers) happen inside handlers, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING, NoReturn, Protocol

from hushcc import __version__
from hushcc.errors import HushError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

# Modules contributing subcommand groups, in the order `hushcc --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "ohttp.cli",
    "transparency_log.cli",
    "attestation.cli",
    "hushcc.demo",
)

class _Registrar(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[OneLineErrorParser]) -> None: ...


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print `PROG: error: MESSAGE (see --help)` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> OneLineErrorParser:
    """Build the full parser with every component's subcommands."""
    parser = OneLineErrorParser(
        prog="hushcc",
        description="hushcc: an open Private Cloud Compute for LLM inference.",
    )
    parser.add_argument("--version", action="version", version=f"hushcc {__version__}")
    groups = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=OneLineErrorParser
    )
    for module_name in COMMAND_MODULES:
        module: _Registrar = importlib.import_module(module_name)
        module.register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `hushcc` command line and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        # A group named without a subcommand: show that group's help.
        help_parser: argparse.ArgumentParser = getattr(args, "group_parser", parser)
        help_parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except HushError as exc:
        print(f"hushcc: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"hushcc: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def add_group(
    subparsers: argparse._SubParsersAction[OneLineErrorParser], name: str, help_text: str
) -> argparse._SubParsersAction[OneLineErrorParser]:
    """Add a command group (`hushcc NAME ...`) and return its own subparsers.

    Components call this from their `register` so every group shows its help when named alone.
    """
    group_parser = subparsers.add_parser(name, help=help_text, description=help_text)
    group_parser.set_defaults(group_parser=group_parser)
    return group_parser.add_subparsers(
        title="subcommands", metavar="SUBCOMMAND", parser_class=OneLineErrorParser
    )


if __name__ == "__main__":
    raise SystemExit(main())
