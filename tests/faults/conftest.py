"""Crash-and-restart scenarios: `reelhook serve` in a subprocess, killed with SIGKILL at a named point, restarted.

The simulators run in the test process; the server is a real process on a socket the test bound, so a restart keeps
the address and providers' retries find it again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from receiver.serving import socket_url
from submitter.simulators.base import Simulator
from tests.e2e.conftest import API_TOKEN, SECRET, TT_KEY, assert_videos_on_disk, server, sock, wait_until

__all__ = ["sock"]  # the e2e fixture: a listening socket the test owns

EXTEND_ONCE = """
[limits]
max_depth = 1

[[rule]]
name = "extend-first"
on = "job.succeeded"
extend.index = 0
"""


@dataclass
class Crash:
    env: dict[str, str]
    data: Path
    log: Path
    sock_fd: int
    api: httpx.AsyncClient

    @asynccontextmanager
    async def serving(self, fault: str | None = None) -> AsyncIterator[Any]:
        env = self.env | ({"REELHOOK_FAULTS": fault} if fault else {})
        with server(env, self.sock_fd, self.log) as process:
            yield process

    async def killed(self, process: Any) -> None:
        """Wait until the fault point kills the server."""
        with anyio.fail_after(20):
            while process.poll() is None:
                await anyio.sleep(0.02)
        assert process.returncode == -signal.SIGKILL, self.log.read_text()[-3000:]

    async def jobs(self) -> list[dict[str, Any]]:
        return list((await self.api.get("/api/jobs")).json()["jobs"])

    async def settle(self, count: int) -> dict[int, dict[str, Any]]:
        """Wait until `count` jobs have ended and every file of theirs is settled; the jobs by depth."""

        async def done() -> bool:
            jobs = await self.jobs()
            return len(jobs) == count and all(
                j["status"] in ("succeeded", "failed") and all(v["status"] != "pending" for v in j["videos"])
                for j in jobs
            )

        await wait_until(done, timeout=30)
        return {job["depth"]: job for job in await self.jobs()}

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.data / "reelhook.sqlite3")) as db:
            return db.execute(sql).fetchall()

    def assert_whole(self, jobs: dict[int, dict[str, Any]]) -> None:
        """Every job succeeded with every file whole; nothing half-written is left in media/."""
        for job in jobs.values():
            assert job["status"] == "succeeded", job
            assert_videos_on_disk(job, self.data)
        assert not list((self.data / "media").rglob("*.part"))
        assert not list((self.data / "media").rglob("*.tmp"))


@asynccontextmanager
async def crash_rig(
    tmp_path: Path, sock: Any, sims: dict[str, Simulator], sim_urls: dict[str, str], rules: str = EXTEND_ONCE
) -> AsyncIterator[Crash]:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(rules)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REELHOOK_DATA_DIR": str(tmp_path / "data"),
        "REELHOOK_PUBLIC_URL": socket_url(sock),
        "REELHOOK_SECRET": SECRET,
        "REELHOOK_API_TOKEN": API_TOKEN,
        "REELHOOK_ALLOW_PRIVATE_URLS": "1",  # the simulators' CDNs are on loopback
        "REELHOOK_RULES": str(rules_file),
    }
    for name, url in sim_urls.items():
        env |= {f"REELHOOK_{name.upper()}_API_KEY": TT_KEY, f"REELHOOK_{name.upper()}_BASE_URL": url}
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(base_url=socket_url(sock), headers=headers, timeout=30) as api:
        yield Crash(env, tmp_path / "data", tmp_path / "server.log", sock.fileno(), api)
