"""deploy/: the systemd unit starts the CLI as it is, reloads and stops with the signals the service handles, and its
environment file names only settings reelhook reads."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from receiver.cli import _parser
from receiver.startup import known_variables

DEPLOY = Path(__file__).parent.parent / "deploy"
INSTALLED = "/opt/reelhook/.venv/bin/reelhook"


def _unit() -> dict[str, str]:
    entries = {}
    for line in DEPLOY.joinpath("reelhook.service").read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            name, _, value = line.partition("=")
            entries[name] = value
    return entries


def test_the_unit_runs_the_serve_command_the_cli_takes() -> None:
    argv = shlex.split(_unit()["ExecStart"])
    assert argv[0] == INSTALLED
    args = _parser().parse_args(argv[1:])  # an option the CLI does not take exits here
    assert args.run.__name__ == "_serve"


def test_the_unit_reloads_with_sighup_and_stops_with_sigterm() -> None:
    # receiver/process.py: SIGHUP re-reads the rules, SIGTERM stops cleanly (tests/receiver/test_process.py)
    unit = _unit()
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["KillSignal"] == "SIGTERM"
    assert unit["Restart"] == "on-failure"


def test_the_environment_file_names_only_known_settings() -> None:
    named = re.findall(r"^#?(REELHOOK_[A-Z_]+)=", DEPLOY.joinpath("reelhook.env").read_text(), re.MULTILINE)
    assert named and set(named) <= known_variables(), sorted(set(named) - known_variables())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # The unit as installed, with its paths pointed at this checkout and no service user (which needs root to create).
    text = (
        DEPLOY.joinpath("reelhook.service")
        .read_text()
        .replace(INSTALLED, str(Path(sys.executable).parent / "reelhook"))
    )
    text = re.sub(r"^(User|Group)=.*$", "", text, flags=re.MULTILINE)
    unit = tmp_path / "reelhook.service"
    unit.write_text(text)
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
