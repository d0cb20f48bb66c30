"""`reelhook serve` applies the slow-client limits its settings name (head and body deadlines), not only the
servers the tests build in-process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import anyio
import httpx
import pytest

from receiver.serving import socket_url
from tests.e2e.conftest import server, wait_until
from tests.receiver.test_slow_clients import closed, response_of

pytestmark = pytest.mark.anyio


async def test_serve_closes_a_silent_connection_and_answers_a_stalled_body_408(
    tmp_path: Path, sock: socket.socket
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REELHOOK_DATA_DIR": str(tmp_path / "data"),
        "REELHOOK_API_TOKEN": "serve-api-token",
        "REELHOOK_HEADER_TIMEOUT": "0.5",
        "REELHOOK_BODY_TIMEOUT": "0.5",
    }
    url = socket_url(sock)
    host, port = sock.getsockname()[:2]
    with server(env, sock.fileno(), tmp_path / "server.log", cwd=tmp_path):
        async with httpx.AsyncClient(base_url=url) as client:

            async def up() -> bool:
                return (await client.get("/healthz")).status_code == 200

            await wait_until(up)
            async with await anyio.connect_tcp(host, port) as silent, await anyio.connect_tcp(host, port) as stalled:
                started = anyio.current_time()
                head = f"POST /api/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer serve-api-token\r\n"
                await stalled.send(f"{head}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{".encode())
                answer = await response_of(stalled, 3)
                assert answer is not None and answer[0] == 408, answer
                assert await closed(stalled, 2) and await closed(silent, 3)
                assert anyio.current_time() - started < 3
            assert (await client.get("/healthz")).status_code == 200
            jobs = await client.get("/api/jobs", headers={"Authorization": "Bearer serve-api-token"})
            assert jobs.json()["jobs"] == []  # the stalled request created nothing
