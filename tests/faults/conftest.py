"""Crash-and-restart scenarios: `reelhook serve` in a subprocess, killed with SIGKILL at a named point, restarted.

The simulators run in the test process; the server is a real process on a socket the test bound, so a restart keeps
the address and providers' retries find it again.

Every test that takes `database_url` runs on both engines: on SQLite the service keeps its default file in its data
dir; on PostgreSQL it is handed `REELHOOK_DATABASE_URL`, a fresh database of its own per test (tests/postgres.py).
What is durable after a crash is read through `storage.open_store`, the store the service itself uses, so the same
assertion holds on either engine. A shared database makes the service refuse secrets it would generate into its data
dir, so on PostgreSQL all three are given.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from receiver.serving import socket_url
from storage import Job, open_store
from submitter.simulators.base import Simulator
from tests.e2e.conftest import (
    API_TOKEN,
    NOTIFY_SECRET,
    SECRET,
    TT_KEY,
    assert_videos_on_disk,
    server,
    sock,
    wait_until,
)
from tests.postgres import PostgresServer

__all__ = ["sock"]  # the e2e fixture: a listening socket the test owns

ENGINES = ("sqlite", "postgres")

EXTEND_ONCE = """
[limits]
max_depth = 1

[[rule]]
name = "extend-first"
on = "job.succeeded"
extend.index = 0
"""


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(engine: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The service's REELHOOK_DATABASE_URL: none on SQLite (its file in the data dir), else a PostgreSQL database of
    this test's own, dropped afterwards."""
    if engine == "sqlite":
        yield None
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.new_database()
    yield server.url(name)
    # A service that quietly kept its SQLite file would pass every assertion made through its API: the PostgreSQL
    # leg counts only if the jobs are in this database.
    [(jobs,)] = server.admin_in(name, "SELECT count(*) FROM jobs")
    left = server.drop_database(name)
    assert jobs, "the service never wrote to its REELHOOK_DATABASE_URL"
    if left:
        pytest.fail(f"{left} PostgreSQL connection(s) outlived the test: the service or a store left them open")


@dataclass
class Crash:
    env: dict[str, str]
    database: str  # what `open_store` opens: the service's SQLite file or its PostgreSQL database
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

    async def stored_jobs(self) -> list[Job]:
        """Every job (with its videos) as the database holds it: read through the store, not the service's API,
        so it can be asked while the service is down."""
        async with await open_store(self.database) as store:
            return await store.list_jobs(limit=500)

    @property
    def notify_secret(self) -> str:
        """The key that signs notifications: given (PostgreSQL), or generated into the data dir (SQLite)."""
        return self.env.get("REELHOOK_NOTIFY_SECRET") or (self.data / "notify-secret").read_text().strip()

    def assert_whole(self, jobs: dict[int, dict[str, Any]]) -> None:
        """Every job succeeded with every file whole; nothing half-written is left in media/."""
        for job in jobs.values():
            assert job["status"] == "succeeded", job
            assert_videos_on_disk(job, self.data)
        assert not list((self.data / "media").rglob("*.part"))
        assert not list((self.data / "media").rglob("*.tmp"))


@asynccontextmanager
async def crash_rig(
    tmp_path: Path,
    sock: Any,
    sims: dict[str, Simulator],
    sim_urls: dict[str, str],
    rules: str = EXTEND_ONCE,
    *,
    database_url: str | None = None,  # None: the SQLite file in the data dir
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
    if database_url is not None:
        env |= {"REELHOOK_DATABASE_URL": database_url, "REELHOOK_NOTIFY_SECRET": NOTIFY_SECRET}
    for name, url in sim_urls.items():
        env |= {f"REELHOOK_{name.upper()}_API_KEY": TT_KEY, f"REELHOOK_{name.upper()}_BASE_URL": url}
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    data = tmp_path / "data"
    database = database_url or str(data / "reelhook.sqlite3")
    async with httpx.AsyncClient(base_url=socket_url(sock), headers=headers, timeout=30) as api:
        yield Crash(env, database, data, tmp_path / "server.log", sock.fileno(), api)
