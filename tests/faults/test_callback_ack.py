"""The server killed (SIGKILL) right after acknowledging a callback, then started again: nothing is lost or doubled."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from receiver.serving import running
from submitter.simulators.ttapi import TTAPISimulator
from tests.e2e.conftest import TT_KEY
from tests.faults.conftest import crash_rig

pytestmark = pytest.mark.anyio


async def test_killed_after_acknowledging_a_callback(
    tmp_path: Path, sock: socket.socket, database_url: str | None
) -> None:
    # A delay long enough that the submit's own bookkeeping is over before the callback arrives; no progress report,
    # so the first callback acknowledged (and killed after) is the result.
    sim = TTAPISimulator(api_key=TT_KEY, delay=0.3, progress_callbacks=False)
    async with (
        running(sim.app) as sim_url,
        crash_rig(tmp_path, sock, {"ttapi": sim}, {"ttapi": sim_url}, database_url=database_url) as rig,
    ):
        async with rig.serving(fault="callback.acked") as first:
            response = await rig.api.post("/api/jobs", json={"prompt": "p", "image_url": "https://img.example/a.png"})
            assert response.status_code == 201
            root_id = response.json()["id"]
            await rig.killed(first)

        # It died after the 200, before acting on it: the callback is stored, nothing downloaded or extended.
        assert [d.status_code for d in sim.deliveries] == [200]
        stored = await rig.stored_jobs()
        assert [job.status for job in stored if job.id == root_id] == ["succeeded"]
        assert [video.status for job in stored for video in job.videos] == ["pending"] * 4
        assert sum(sim.cdn_hits.values()) == 0

        async with rig.serving():
            jobs = await rig.settle(2)

    rig.assert_whole(jobs)
    extends = [s for s in sim.submissions if s.path.endswith("/extend")]
    assert [(s.body["jobId"], s.body["index"]) for s in extends] == [(jobs[0]["provider_job_id"], 0)]
    assert set(sim.cdn_hits.values()) == {1} and len(sim.cdn_hits) == 8
