"""The server killed (SIGKILL) right after acknowledging a callback, then started again: nothing is lost or doubled."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import anyio
import httpx
import pytest

from receiver.serving import running, socket_url
from submitter.simulators.ttapi import TTAPISimulator
from tests.e2e.conftest import API_TOKEN, SECRET, TT_KEY, assert_videos_on_disk, server, wait_until

pytestmark = pytest.mark.anyio

RULES = """
[limits]
max_depth = 1

[[rule]]
name = "extend-first"
on = "job.succeeded"
extend.index = 0
"""


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


async def test_killed_after_acknowledging_a_callback(tmp_path: Path, sock: socket.socket) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    data = tmp_path / "data"
    log = tmp_path / "server.log"
    # A delay long enough that the submit's own bookkeeping is over before the callback arrives; no progress report,
    # so the first callback acknowledged (and killed after) is the result.
    sim = TTAPISimulator(api_key=TT_KEY, delay=0.3, progress_callbacks=False)
    async with running(sim.app) as sim_url:
        url = socket_url(sock)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "REELHOOK_DATA_DIR": str(data),
            "REELHOOK_PUBLIC_URL": url,
            "REELHOOK_SECRET": SECRET,
            "REELHOOK_API_TOKEN": API_TOKEN,
            "REELHOOK_TTAPI_API_KEY": TT_KEY,
            "REELHOOK_TTAPI_BASE_URL": sim_url,
            "REELHOOK_ALLOW_PRIVATE_URLS": "1",  # the simulator's CDN is on loopback
            "REELHOOK_RULES": str(rules),
        }
        api = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)
        async with api:
            with server(env | {"REELHOOK_FAULTS": "callback.acked"}, sock.fileno(), log) as first:
                response = await api.post("/api/jobs", json={"prompt": "p", "image_url": "https://img.example/a.png"})
                assert response.status_code == 201
                root_id = response.json()["id"]
                with anyio.fail_after(15):
                    while first.poll() is None:
                        await anyio.sleep(0.02)
                assert first.returncode == -signal.SIGKILL, log.read_text()

            # It died after the 200, before acting on it: the callback is stored, nothing downloaded or extended.
            assert [d.status_code for d in sim.deliveries] == [200]
            db = data / "reelhook.sqlite3"
            assert rows(db, f"SELECT status FROM jobs WHERE id = '{root_id}'") == [("succeeded",)]
            assert rows(db, "SELECT count(*) FROM videos WHERE status = 'pending'") == [(4,)]
            assert sum(sim.cdn_hits.values()) == 0

            with server(env, sock.fileno(), log):

                async def chain_done() -> bool:
                    jobs = (await api.get("/api/jobs")).json()["jobs"]
                    return len(jobs) == 2 and all(
                        j["status"] == "succeeded" and all(v["status"] == "downloaded" for v in j["videos"])
                        for j in jobs
                    )

                await wait_until(chain_done, timeout=20)
                jobs = {j["depth"]: j for j in (await api.get("/api/jobs")).json()["jobs"]}

    extends = [s for s in sim.submissions if s.path.endswith("/extend")]
    assert [(s.body["jobId"], s.body["index"]) for s in extends] == [(jobs[0]["provider_job_id"], 0)]
    for job in jobs.values():
        assert_videos_on_disk(job, data)
    assert set(sim.cdn_hits.values()) == {1} and len(sim.cdn_hits) == 8
    assert not list((data / "media").rglob("*.part"))
