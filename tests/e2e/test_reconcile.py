"""Missed callbacks, recovered: the provider finishes a job but its callback never arrives (`auto_deliver=False`,
and the job is finished without a delivery); `reelhook reconcile` looks it up once at the fetch endpoint, and from
there the job goes the way a callback takes it: it succeeds, its videos download, a rule's follow-up fires."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from receiver.cli import main
from submitter.simulators.base import Simulator
from tests.e2e.conftest import API_TOKEN, Deployment, assert_videos_on_disk, deployment, wait_until

pytestmark = pytest.mark.anyio

EXTEND_ONCE = """
[limits]
max_depth = 1

[[rule]]
name = "extend-first"
on = "job.succeeded"
extend.index = 0
"""

FETCH = {
    "ttapi": ("GET", "/midjourney/video/fetch"),
    "acedata": ("POST", "/midjourney/tasks"),
    "wavespeed": ("GET", "/api/v3/predictions/{id}/result"),
    "apimart": ("GET", "/v1/tasks/{id}"),
}


def fetches(sim: Simulator, provider: str, *provider_job_ids: str) -> int:
    """How many times reelhook asked the simulator's fetch endpoint about these jobs (TTAPI's and AceData's fetch
    paths do not name the job: there, about any job)."""
    method, path = FETCH[provider]
    return sum(sim.requests.count((method, asked)) for asked in {path.format(id=i) for i in provider_job_ids})


async def taken(deployed: Deployment, job_id: str) -> str:
    """Wait until the provider has taken the job; its provider id."""

    async def has_id() -> bool:
        return bool((await deployed.job(job_id))["provider_job_id"])

    await wait_until(has_id)
    return str((await deployed.job(job_id))["provider_job_id"])


async def two_jobs(deployed: Deployment, provider: str) -> tuple[str, str, str, str]:
    """One job the provider finished whose callback was lost, and one it is still working on (so its lookup answers
    "running", and a second reconcile would ask it again if "once" were not kept): ids and provider ids of both."""
    sim = deployed.sims[provider]
    lost = (await deployed.submit("a lighthouse at dusk", provider=provider))["id"]
    slow = (await deployed.submit("a slow tide", provider=provider))["id"]
    lost_pid, slow_pid = await taken(deployed, lost), await taken(deployed, slow)
    assert await sim.deliver(lost_pid, times=0) == []  # finished at the provider; no callback ever sent
    assert sim.deliveries == []
    return lost, lost_pid, slow, slow_pid


async def downloaded(deployed: Deployment, job_id: str) -> bool:
    job = await deployed.job(job_id)
    return job["status"] == "succeeded" and bool(job["videos"]) and all(
        v["status"] == "downloaded" for v in job["videos"]
    )  # fmt: skip


def inbox(deployed: Deployment, job_id: str) -> list[tuple[str, str]]:
    """(first header, status) of each callback stored for the job."""
    with closing(sqlite3.connect(deployed.data_dir / "reelhook.sqlite3")) as db:
        rows = db.execute("SELECT headers, status FROM callbacks WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
    return [(json.loads(headers)[0][1], status) for headers, status in rows]


async def follow_up(deployed: Deployment, parent_id: str) -> dict[str, Any]:
    async def fired() -> bool:
        return any(job["parent_id"] == parent_id for job in await deployed.jobs())

    await wait_until(fired)
    [child] = [job for job in await deployed.jobs() if job["parent_id"] == parent_id]
    return child


async def test_ttapi_missed_callback_recovered_through_the_api(tmp_path: Path) -> None:
    async with deployment(tmp_path, rules=EXTEND_ONCE, callback_grace=0, auto_deliver=False) as deployed:
        sim = deployed.sim
        root_id, root_pid, slow_id, slow_pid = await two_jobs(deployed, "ttapi")

        response = await deployed.api.post("/api/reconcile")
        assert response.status_code == 200 and response.json() == {"looked_up": 2, "settled": 1, "lost": 0}
        assert fetches(sim, "ttapi", root_pid, slow_pid) == 2

        await wait_until(lambda: downloaded(deployed, root_id))
        job = await deployed.job(root_id)
        assert len(job["videos"]) == 4
        assert_videos_on_disk(job, deployed.data_dir)
        assert inbox(deployed, root_id) == [("fetch", "succeeded")]
        assert (await deployed.job(slow_id))["status"] == "submitted" and inbox(deployed, slow_id) == []

        # The rule fired on the fetched result: an extend of the root's TTAPI job, index 0.
        child = await follow_up(deployed, root_id)
        assert child["rule"] == "extend-first"
        child_pid = await taken(deployed, child["id"])
        assert [(e["jobId"], e["index"]) for e in deployed.extends()] == [(root_pid, 0)]
        assert await sim.deliver(child_pid) == [200]  # this one's callback arrives
        await wait_until(lambda: downloaded(deployed, child["id"]))

        # Looked up once: the slow job is still overdue, but it was asked about already.
        asked = len(sim.requests)
        response = await deployed.api.post("/api/reconcile")
        assert response.json() == {"looked_up": 0, "settled": 0, "lost": 0}
        assert len(sim.requests) == asked and fetches(sim, "ttapi", root_pid, slow_pid) == 2

        assert (await deployed.api.post("/api/reconcile", headers={"Authorization": "Bearer wrong"})).status_code == 401


async def test_acedata_missed_callback_recovered_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = {"acedata": {"auto_deliver": False}}
    async with deployment(tmp_path, rules=EXTEND_ONCE, callback_grace=0, options=options) as deployed:
        sim = deployed.sims["acedata"]
        env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}

        async def reconcile(*flags: str) -> str:
            code = await anyio.to_thread.run_sync(main, ["reconcile", *flags], env)  # the CLI blocks: not on the loop
            out, err = capsys.readouterr()
            assert code == 0, err
            return out

        root_id, root_pid, slow_id, slow_pid = await two_jobs(deployed, "acedata")

        assert json.loads(await reconcile("--json")) == {"looked_up": 2, "settled": 1, "lost": 0}
        assert fetches(sim, "acedata", root_pid, slow_pid) == 2
        await wait_until(lambda: downloaded(deployed, root_id))
        assert_videos_on_disk(await deployed.job(root_id), deployed.data_dir)
        assert (await deployed.job(slow_id))["status"] == "submitted"

        # AceData extends by the result's video_id, which only the fetched answer carried.
        child = await follow_up(deployed, root_id)
        child_pid = await taken(deployed, child["id"])
        [extend] = [s.body for s in sim.submissions if s.status_code == 200 and s.body["action"] == "extend"]
        assert extend["video_id"] == sim.job(root_pid).extra["video_id"]
        assert await sim.deliver(child_pid) == [200]
        await wait_until(lambda: downloaded(deployed, child["id"]))

        asked = len(sim.requests)
        assert await reconcile() == "looked up 0 overdue jobs; 0 settled\n"
        assert len(sim.requests) == asked and fetches(sim, "acedata", root_pid, slow_pid) == 2


@pytest.mark.parametrize("provider", ["wavespeed", "apimart"])
async def test_missed_callbacks_of_the_other_providers(tmp_path: Path, provider: str) -> None:
    options = {provider: {"auto_deliver": False}}
    async with deployment(tmp_path, callback_grace=0, options=options) as deployed:
        sim = deployed.sims[provider]
        root_id, root_pid, slow_id, slow_pid = await two_jobs(deployed, provider)

        assert (await deployed.api.post("/api/reconcile")).json() == {"looked_up": 2, "settled": 1, "lost": 0}
        await wait_until(lambda: downloaded(deployed, root_id))
        assert_videos_on_disk(await deployed.job(root_id), deployed.data_dir)
        assert inbox(deployed, root_id) == [("fetch", "succeeded")]

        assert (await deployed.api.post("/api/reconcile")).json() == {"looked_up": 0, "settled": 0, "lost": 0}
        assert fetches(sim, provider, root_pid) == fetches(sim, provider, slow_pid) == 1
        assert (await deployed.job(slow_id))["status"] == "submitted"
