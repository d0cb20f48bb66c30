"""The README's CLI table and the CLI's parser say the same thing: every command and option in one is in the other."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.cli import _parser

README = Path(__file__).parent.parent / "README.md"
# Options every command takes, described once under the table rather than in every row.
SHARED = {"--help", "--json", "--server", "--token", "--wait", "--interval", "--timeout", "--version"}


def _commands(parser: argparse.ArgumentParser, prefix: str = "reelhook") -> Iterator[tuple[str, set[str]]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}")
            return
    options = {option for action in parser._actions for option in action.option_strings if option.startswith("--")}
    yield prefix, options - SHARED


def _table_rows() -> list[str]:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| command | what it does |") :].split("\n\n", 1)[0]
    return [line.split(" | ", 1)[0] for line in table.splitlines()[2:]]


def test_every_command_and_option_of_the_cli_is_in_the_readme_table() -> None:
    rows = _table_rows()
    for command, options in _commands(_parser()):
        row = next((row for row in rows if re.search(rf"`{re.escape(command)}( |`)", row)), None)
        assert row is not None, f"README's CLI table has no row for `{command}`"
        missing = sorted(option for option in options if not re.search(rf"{re.escape(option)}(?![\w-])", row))
        assert not missing, f"README's row for `{command}` does not name {missing}"


def test_every_command_and_option_in_the_readme_table_exists() -> None:
    known = dict(_commands(_parser()))
    for row in _table_rows():
        for cell in re.findall(r"`(reelhook [^`]*)`", row):
            words = cell.split()
            if words[1].startswith("--"):
                assert words[1] in SHARED, cell
                continue
            command = next((name for name in sorted(known, key=len, reverse=True) if cell.startswith(name)), None)
            assert command is not None, f"README names `{cell}`, which is not a command"
            for option in re.findall(r"--[a-z][a-z-]*", cell.removeprefix(command)):
                assert option in known[command] | SHARED, f"README's `{cell}` names {option}, which it does not take"


@pytest.mark.anyio
async def test_the_backup_command_copies_a_database_in_use(tmp_path: Path) -> None:
    # "Running it for weeks" gives a one-line online backup; it must copy a database the service has open (WAL).
    from storage import NewJob, Store

    text = README.read_text(encoding="utf-8")
    command = re.search(r'`\.venv/bin/python -c "(import sqlite3;.*?)"`', text, re.S)
    assert command is not None, "README's backup command is gone"
    (tmp_path / "data").mkdir()
    async with await Store.open(tmp_path / "data" / "reelhook.sqlite3") as store:
        job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "a cat"}))
        code = " ".join(command.group(1).split())
        subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
        async with await Store.open(tmp_path / "backup.sqlite3") as copy:
            assert await copy.get_job(job.id) == await store.get_job(job.id)
