"""Issue 11: `reelhook serve` says at start-up which tunnel its public URL came from, or that paid jobs wait for one.

`reelhook serve` runs in its own process; the ngrok agent is a fake on real uvicorn in the test's, on loopback.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from receiver.serving import running, socket_url
from tests.e2e.conftest import server
from tests.e2e.test_process import listening
from tests.receiver.test_tunnel import FakeNgrok, ngrok_endpoint, refused_address

pytestmark = pytest.mark.anyio


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "REELHOOK_DATA_DIR": str(tmp_path / "data"), **extra}


async def test_serve_with_auto_names_the_tunnel_it_found(tmp_path: Path, sock: socket.socket) -> None:
    port = sock.getsockname()[1]
    agent = FakeNgrok([
        ngrok_endpoint("https://someone-else.ngrok-free.app", "http://localhost:1"),
        ngrok_endpoint("https://reelhook-42.ngrok-free.app", f"http://127.0.0.1:{port}"),
    ])  # fmt: skip
    log = tmp_path / "server.log"
    async with running(agent.app()) as agent_url:
        env = environment(tmp_path, REELHOOK_PUBLIC_URL="auto", REELHOOK_NGROK_API=agent_url)
        with server(env, sock.fileno(), log):
            await listening(sock)  # the start-up lines come before the socket is served
    text = log.read_text()
    assert (
        f"INFO reelhook: public URL https://reelhook-42.ngrok-free.app (from ngrok's agent API at {agent_url};"
        " REELHOOK_PUBLIC_URL=auto: asked again as paid jobs leave)"
    ) in text, text


async def test_serve_with_a_real_key_and_no_tunnel_says_paid_jobs_wait(tmp_path: Path, sock: socket.socket) -> None:
    ngrok, cloudflared = f"http://{refused_address()}", refused_address()
    env = environment(
        tmp_path, REELHOOK_TTAPI_API_KEY="tt-key", REELHOOK_NGROK_API=ngrok, REELHOOK_CLOUDFLARED_METRICS=cloudflared
    )  # no REELHOOK_PUBLIC_URL: auto, since TTAPI is real (its default base URL)
    log = tmp_path / "server.log"
    with server(env, sock.fileno(), log):
        await listening(sock)
    text = log.read_text()
    assert (
        "INFO reelhook: public URL: none yet (REELHOOK_PUBLIC_URL=auto: no ngrok/cloudflared tunnel found at ngrok"
        f" at {ngrok} or cloudflared at {cloudflared}): paid jobs wait for one; simulators call back on"
        f" {socket_url(sock)}"
    ) in text, text
    assert "ttapi: key from REELHOOK_TTAPI_API_KEY, sending to https://" in text
