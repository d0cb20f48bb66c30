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
            jobs = {}
            for provider in ("ttapi", "acedata", "wavespeed", "apimart"):
                body = {"provider": provider, "prompt": "p", "image_url": "https://img.example/a.png"}
                response = await api.post("/api/jobs", json=body)
                assert response.status_code == 201, response.text
                jobs[provider] = response.json()["id"]

            async def downloaded() -> bool:
                for job_id in jobs.values():
                    videos = (await api.get(f"/api/jobs/{job_id}")).json()["videos"]
                    if not videos or any(v["status"] != "downloaded" for v in videos):
                        return False
                return True

            await wait_until(downloaded)
    for job_id in jobs.values():
        assert list((data / "media" / job_id / job_id).glob("*.mp4"))
    assert (data / "reelhook.sqlite3").exists() and len((data / "secret").read_text().strip()) >= 32
    text = log.read_text()
    for provider in ("ttapi", "acedata", "wavespeed", "apimart"):
        assert f"the built-in {provider} simulator answers" in text
    assert "fetched the wavespeed webhook secret" in text  # signed callbacks verified with the provider's secret
    # The hook token is a credential: no log line may carry it.
    assert "/hooks/" not in text and not re.search(r"[\w-]{20,}\.[\w-]{6}\.[\w-]{20,}", text)  # no token
