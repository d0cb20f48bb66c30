"""`reelhook serve` as `make run` starts it: embedded defaults, the simulator in-process, secrets generated."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import httpx
import pytest

from receiver.serving import socket_url
from tests.e2e.conftest import server, wait_until

pytestmark = pytest.mark.anyio


async def test_embedded_defaults_run_a_job_to_downloaded_videos(tmp_path: Path, sock: socket.socket) -> None:
    log = tmp_path / "server.log"
    env = {"PATH": os.environ.get("PATH", ""), "REELHOOK_SIMULATOR_DELAY": "0.05"}  # nothing else configured
    with server(env | {"PWD": str(tmp_path)}, sock.fileno(), log, cwd=tmp_path):
        data = tmp_path / "data"
        api = httpx.AsyncClient(base_url=socket_url(sock), timeout=30)
        async with api:
            assert (await api.get("/healthz")).json() == {"ok": True}
            token = (data / "api-token").read_text().strip()  # generated once, on first start
            assert (await api.get("/api/jobs")).status_code == 401
            api.headers["Authorization"] = f"Bearer {token}"
            job = (await api.post("/api/jobs", json={"prompt": "p", "image_url": "https://img.example/a.png"})).json()

            async def downloaded() -> bool:
                shown = (await api.get(f"/api/jobs/{job['id']}")).json()
                return [v["status"] for v in shown["videos"]] == ["downloaded"] * 4

            await wait_until(downloaded)
    assert len(list((data / "media" / job["id"] / job["id"]).glob("*.mp4"))) == 4
    assert (data / "reelhook.sqlite3").exists() and len((data / "secret").read_text().strip()) >= 32
    text = log.read_text()
    assert "built-in TTAPI simulator" in text
    # The hook token is a credential: no log line may carry it.
    assert "/hooks/ttapi/" not in text and not re.search(r"/hooks/\w+/[\w.-]{40,}", text)
