"""The one `hushcc` command: the command groups of every component, assembled.

Each component owns a module with `register(subparsers)` that adds its group (`hushcc ohttp ...`,
`hushcc log ...`) and sets a `handler(args) -> int` default on every leaf parser. This module
imports those modules plainly, assembles them and maps errors to exit codes, so every subcommand
behaves alike:

* `--help` at every level; a usage error prints one line and exits 2;
* a `HushError` (bad input, failed verification, bad config) or an `OSError` prints one line
  `hushcc: error: ...` and exits 1 — never a traceback, never request data;
* heavy imports (torch, transformers) happen inside handlers, so `--help` stays fast.

This is the application layer: nothing in the project imports it but the entry point.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import attestation.cli
import client.cli
import image.cli
import node.cli
import ohttp.cli
import relay.cli
import transparency_log.cli
from app import demo
from hushcc import __version__
from hushcc.cliparse import OneLineErrorParser
from hushcc.errors import HushError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

# The command groups, in the order `hushcc --help` lists them.
COMMAND_GROUPS = (
    client.cli, ohttp.cli, transparency_log.cli, attestation.cli, node.cli, relay.cli, image.cli,
    demo,
)


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
    for group in COMMAND_GROUPS:
        group.register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `hushcc` command line and return its exit code."""
    parser = build_parser()
    try:
        # Inside the try: argument types (`hushcc.cliparse`) raise ConfigError for a bad value.
        args = parser.parse_args(argv)
        handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
        if handler is None:
            # A group named without a subcommand: show that group's help.
            help_parser: argparse.ArgumentParser = getattr(args, "group_parser", parser)
            help_parser.print_help(sys.stderr)
            return 2
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
