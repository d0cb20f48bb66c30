"""`reelhook serve` runs on uvloop and httptools (runtime dependencies), and says so when it starts."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx
import pytest

from receiver.serving import socket_url
from tests.e2e.conftest import server, wait_until

pytestmark = pytest.mark.anyio


async def test_serve_runs_on_uvloop_and_httptools(tmp_path: Path, sock: socket.socket) -> None:
    log = tmp_path / "server.log"
    env = {"PATH": os.environ.get("PATH", ""), "REELHOOK_DATA_DIR": str(tmp_path / "data")}
    with server(env, sock.fileno(), log, cwd=tmp_path):
        async with httpx.AsyncClient(base_url=socket_url(sock)) as client:

            async def up() -> bool:
                return (await client.get("/healthz")).status_code == 200

            await wait_until(up)
    assert "event loop and HTTP parser: uvloop + httptools" in log.read_text()
