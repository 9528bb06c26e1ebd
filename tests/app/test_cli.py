"""The `hushcc` entry point: help at every level, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, check=False
    )


def test_help_lists_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_unknown_command_is_one_line_and_exit_2() -> None:
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "error" in result.stderr


def test_no_command_shows_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "commands" in capsys.readouterr().err


def test_missing_file_is_one_line_naming_it_and_exit_1(tmp_path):
    missing = tmp_path / "no-such.pub"
    result = run_cli("ohttp", "show-config", str(missing))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_group_without_subcommand_shows_its_help_and_exits_2():
    result = run_cli("log")
    assert result.returncode == 2
    assert "keygen" in result.stderr
