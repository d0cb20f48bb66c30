"""Issue 11.2: `reelhook serve`'s life as a person sees it. Ctrl-C and SIGTERM stop it in one line with exit 0;
SIGHUP re-reads the rules file (a broken one is refused and the old rules stay); a port in use, an unusable data dir
and a second server on one data dir each get one line naming the fix."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from receiver.serving import socket_url
from tests.e2e.conftest import server, wait_until

pytestmark = pytest.mark.anyio

RULES = """
[[rule]]
name = "extend-first"
on = "job.succeeded"
extend.index = 0
"""


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "REELHOOK_DATA_DIR": str(tmp_path / "data"), **extra}


async def listening(sock: socket.socket) -> None:
    async with httpx.AsyncClient(base_url=socket_url(sock)) as api:

        async def up() -> bool:
            try:
                return (await api.get("/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(up)


def serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`reelhook serve` that is expected to refuse to start."""
    command = [sys.executable, "-m", "receiver.cli", "serve", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_ctrl_c_and_sigterm_stop_cleanly_in_one_line(tmp_path: Path, sock: socket.socket, signum: int) -> None:
    log = tmp_path / "server.log"
    with server(env_for(tmp_path), sock.fileno(), log) as process:
        await listening(sock)
        process.send_signal(signum)
        assert process.wait(timeout=15) == 0
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text and "CancelledError" not in text, text
    assert f"stopping ({signal.Signals(signum).name})" in text and text.rstrip().endswith("reelhook: stopped")


async def test_sighup_rereads_the_rules_and_keeps_them_when_the_file_is_broken(
    tmp_path: Path, sock: socket.socket
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    log = tmp_path / "server.log"
    with server(env_for(tmp_path, REELHOOK_RULES=str(rules)), sock.fileno(), log) as process:
        await listening(sock)
        rules.write_text(RULES + RULES.replace("extend-first", "extend-again"))
        process.send_signal(signal.SIGHUP)
        await wait_until(lambda: _logged(log, "rules re-read from"))
        assert f"rules re-read from {rules}: 2 rules" in log.read_text()
        rules.write_text(RULES.replace("extend.index = 0", "extend.index = 7"))
        process.send_signal(signal.SIGHUP)
        await wait_until(lambda: _logged(log, "kept the rules in use"))
        assert "extend.index must be 0-3" in log.read_text()
        await listening(sock)  # still serving
        assert process.poll() is None


async def _logged(log: Path, text: str) -> bool:
    return text in log.read_text()


async def test_a_port_in_use_is_one_line_naming_it(tmp_path: Path, sock: socket.socket) -> None:
    port = sock.getsockname()[1]  # held by the test
    result = serve(env_for(tmp_path), "--port", str(port))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"reelhook: port {port} on 127.0.0.1 is in use (another reelhook?): stop it, or serve on --port N\n"
    )


async def test_an_unusable_data_dir_is_one_line_naming_it(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("")
    result = serve(env_for(tmp_path), "--port", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (
        f"reelhook: REELHOOK_DATA_DIR {not_a_folder} is a file, not a folder: point it at a folder you can write\n"
    )


async def test_a_second_server_on_one_data_dir_refuses_to_start(tmp_path: Path, sock: socket.socket) -> None:
    with server(env_for(tmp_path), sock.fileno(), tmp_path / "server.log") as process:
        await listening(sock)
        result = serve(env_for(tmp_path), "--port", "0")
        assert result.returncode == 2
        assert result.stderr == (
            f"reelhook: another reelhook (pid {process.pid}) is serving {tmp_path / 'data'}: stop it first, or give"
            " this one its own REELHOOK_DATA_DIR\n"
        )
