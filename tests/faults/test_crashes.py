"""SIGKILL at each step of the loop, then a restart: every job ends right, every file is whole, nothing is doubled.

| point               | what is durable when the process dies                                     |
|---------------------|---------------------------------------------------------------------------|
| callback.stored     | the callback is committed; the provider never saw our 200 (it re-delivers) |
| download.streaming  | a `.part` file holds the start of a video                                 |
| followup.recorded   | a rule's extend is committed as a queued job; nothing was sent            |
| submit.sent         | the provider accepted the extend; we never recorded its id                |
"""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import httpx
import pytest

from receiver.serving import running
from submitter.simulators.ttapi import TTAPISimulator
from tests.e2e.conftest import TT_KEY
from tests.faults.conftest import crash_rig

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("point", ["callback.stored", "download.streaming", "followup.recorded", "submit.sent"])
async def test_killed_at_each_step_the_chain_still_completes_exactly_once(
    tmp_path: Path, sock: socket.socket, point: str, database_url: str | None
) -> None:
    # A delay long enough that a killed server is back before the provider's third and last delivery.
    sim = TTAPISimulator(api_key=TT_KEY, delay=0.6)
    async with (
        running(sim.app) as sim_url,
        crash_rig(tmp_path, sock, {"ttapi": sim}, {"ttapi": sim_url}, database_url=database_url) as rig,
    ):
        async with rig.serving(fault=point) as first:
            if point == "download.streaming":
                # Rules' follow-ups wait (the kill switch) until after the restart: else the extend, recorded as the
                # root's videos start, may be claimed in the instant before the kill and is then never sent again
                # (it may have been paid for), which is right, and not what this point is about.
                assert (await rig.api.post("/api/pause", json={"reason": "a crash test"})).status_code == 200
            try:
                response = await rig.api.post(
                    "/api/jobs", json={"prompt": "p", "image_url": "https://img.example/a.png"}
                )
                assert response.status_code == 201
            except httpx.RemoteProtocolError:
                # The submitter claims and sends at once, so the kill as the job leaves can beat the 201 out; the
                # job was committed before the submitter was woken, and the restart below settles it all the same.
                assert point == "submit.sent"
            await rig.killed(first)
        async with rig.serving():
            if point == "download.streaming":
                assert (await rig.api.post("/api/resume")).status_code == 200
            jobs = await rig.settle(2)

    rig.assert_whole(jobs)
    assert sorted(jobs) == [0, 1] and jobs[1]["parent_id"] == jobs[0]["id"]
    submits = [s for s in sim.submissions if s.status_code == 200]
    assert Counter(s.path.rsplit("/", 1)[1] for s in submits) == {"submit": 1, "extend": 1}  # nothing sent twice
    extend = next(s for s in submits if s.path.endswith("/extend"))
    assert (extend.body["jobId"], extend.body["index"]) == (jobs[0]["provider_job_id"], 0)
    # One job per provider job: the restart bound the answer it never recorded to the job it had claimed.
    stored = await rig.stored_jobs()
    assert len(stored) == 2 and len({job.provider_job_id for job in stored} - {None}) == 2
    # A download the crash cut short is fetched again, in full (its file is whole, above); no file is fetched more
    # than that. Before the first callback is answered nothing has started, so then each is fetched exactly once.
    assert len(sim.cdn_hits) == 8 and max(sim.cdn_hits.values()) <= 2
    if point == "callback.stored":
        assert set(sim.cdn_hits.values()) == {1}
