"""`hushcc ask` and `hushcc verify`: the SDK from the terminal.

* `hushcc verify [--config F] [--relay URL]` fetches the node directory through the relay,
  verifies every node and prints the report as a table (a green PASS or red FAIL per step);
  exit 0 when at least one node is usable, 1 otherwise.
* `hushcc ask "PROMPT" [--config F] [--relay URL] [--stream] [--max-tokens N]` verifies, then
  sends the question to one verified node chosen at random and prints the answer (streamed as
  it arrives with `--stream`). The answer goes to stdout only; nothing is logged or kept.

The configuration is `client.config`'s TOML (default `$XDG_CONFIG_HOME/hushcc/client.toml`);
the client's state (the last log checkpoint and unspent tokens, 0600) lives beside it in
`state/` unless `--state-dir` says otherwise.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.cliparse import bounded_float, http_url
from hushcc.errors import ConfigError

if TYPE_CHECKING:
    import argparse

    from attestation.report import Step
    from client.session import AsyncClient
    from client.verification import DirectoryReport
    from hushcc.cliparse import OneLineErrorParser


def default_config_path() -> Path:
    """`$XDG_CONFIG_HOME/hushcc/client.toml` (or `~/.config/hushcc/client.toml`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hushcc" / "client.toml"


def register(subparsers: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    """Add `hushcc ask` and `hushcc verify`."""
    for name, help_text in (
        ("ask", "verify the nodes, then ask one of them a question privately"),
        ("verify", "verify every node the relay lists and print the report"),
    ):
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == "ask":
            p.add_argument("prompt", help="the question (sent only encrypted to a verified node)")
            p.add_argument("--stream", action="store_true", help="print tokens as they arrive")
            p.add_argument("--max-tokens", type=bounded_float(1, 4096), default=256.0,
                           help="most tokens to generate (default 256)")
            p.add_argument("--model", help="model name (default: the config's)")
        p.add_argument("--config", type=Path, default=None,
                       help=f"client config (default {default_config_path()})")
        p.add_argument("--relay", type=http_url, help="relay URL (overrides the config)")
        p.add_argument("--state-dir", type=Path, help="where the checkpoint and tokens are kept")
        p.set_defaults(handler=_ask if name == "ask" else _verify)


def _api_key(path: Path) -> str:
    from hushcc.files import read_text  # noqa: PLC0415

    text = read_text(path, "API key file").strip()
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"API key file is readable by group or others (chmod 600): {path}")
    if not text or any(c.isspace() for c in text):
        raise ConfigError(f"API key file must hold one key: {path}")
    return text


def _client(args: argparse.Namespace) -> tuple[AsyncClient, str]:
    from attestation.policy import load_policy  # noqa: PLC0415
    from client.attest import PolicyVerifier  # noqa: PLC0415
    from client.config import load_client_config  # noqa: PLC0415
    from client.session import AsyncClient, TokenSettings  # noqa: PLC0415
    from relay.issuer_keys import read_pinned_key  # noqa: PLC0415

    config_path = args.config or default_config_path()
    config = load_client_config(config_path)
    state_dir = args.state_dir or config_path.resolve().parent / "state"
    policy = load_policy(config.policy)
    tokens = TokenSettings(read_pinned_key(config.issuer_key), config.issuer_name,
                           config.origin_name, _api_key(config.api_key_file))
    client = AsyncClient(args.relay or config.relay_url, config.issuer_url, config.log_key,
                         policy, tokens=tokens, log_url=config.log_url, state_dir=state_dir,
                         verifier=PolicyVerifier.from_policy(policy, config.log_key))
    return client, getattr(args, "model", None) or config.model


def _result(step: Step) -> str:
    if not step.passed:
        return "[bold red]FAIL[/bold red]"
    return "[yellow]WARN[/yellow]" if step.warning else "[green]PASS[/green]"


def print_report(report: DirectoryReport, *, detail: bool = True) -> None:
    """The report as a table: every step of every node, or (`detail=False`) one row a node."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"{len(report.usable)} of {len(report.nodes)} node(s) verified")
    columns = ("node", "step", "result", "detail") if detail else (
        "node", "result", "steps", "first failure or warning")
    for column in columns:
        table.add_column(column, overflow="fold")
    if report.log_step is not None:
        step = report.log_step
        if detail:
            table.add_row("log", step.name, _result(step), step.reason)
        else:
            table.add_row("log", _result(step), step.name, step.reason)
    for node in report.nodes:
        if detail:
            for step in node.report.steps:
                table.add_row(node.node_id[:12], step.name, _result(step), step.reason)
            continue
        failure = node.report.first_failure
        warnings = [s for s in node.report.steps if s.passed and s.warning]
        shown = failure or (warnings[0] if warnings else None)
        passed = sum(1 for s in node.report.steps if s.passed)
        table.add_row(node.node_id[:12], _result(failure) if failure else (
            "[green]VERIFIED[/green]"), f"{passed}/{len(node.report.steps)} passed"
            + (f", {len(warnings)} warning(s)" if warnings else ""),
            f"{shown.name}: {shown.reason}" if shown else "")
    Console(highlight=False).print(table)
    if report.fork_evidence is not None:
        old, new = report.fork_evidence
        print("FORK DETECTED: two checkpoints that cannot both be honest")
        print("--- last seen checkpoint ---")
        print(old.decode(errors="replace"), end="")
        print("--- checkpoint stapled by a node ---")
        print(new.decode(errors="replace"), end="")


def _verify(args: argparse.Namespace) -> int:
    async def run() -> int:
        client, _ = _client(args)
        try:
            report = await client.verify()
        finally:
            await client.close()
        print_report(report)
        return 0 if report.usable else 1

    return asyncio.run(run())


def _ask(args: argparse.Namespace) -> int:
    from client.types import ChatCompletion  # noqa: PLC0415

    async def run() -> int:
        client, model = _client(args)
        try:
            report = await client.verify()
            print(f"verified {len(report.usable)} of {len(report.nodes)} node(s); "
                  f"asking one at random", file=sys.stderr)
            answer = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": args.prompt}],
                stream=args.stream, max_tokens=int(args.max_tokens))
            if isinstance(answer, ChatCompletion):
                print(answer.choices[0].message.content or "")
            else:
                async for chunk in answer:
                    for choice in chunk.choices:
                        sys.stdout.write(choice.delta.content or "")
                        sys.stdout.flush()
                print()
        finally:
            await client.close()
        return 0

    return asyncio.run(run())
