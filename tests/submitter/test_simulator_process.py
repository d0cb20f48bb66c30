"""A simulator in a process of its own (`python -m submitter.simulators`), and what it reports having seen at
`GET /_simulator/observed`: the test of several instances reads the provider's view of them there."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from receiver.serving import bind_socket, socket_url
from submitter.simulators.ttapi import TTAPISimulator

pytestmark = pytest.mark.anyio

KEY = "sim-key"
BODY = {"prompt": "a lighthouse", "imageUrl": "https://img.example/frame.png"}


async def test_observed_reports_the_peak_of_slots_in_use_and_every_submission() -> None:
    sim = TTAPISimulator(api_key=KEY, auto_deliver=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app), base_url="http://sim") as client:
        taken = []
        for _ in range(3):
            response = await client.post("/midjourney/video/submit", json=BODY, headers={"TT-API-KEY": KEY})
            taken.append(response.json()["data"]["jobId"])
        await client.post("/midjourney/video/submit", json=BODY)  # no key: 401, recorded with no job
        for job_id in taken[:2]:
            await sim.deliver(job_id)  # it ends (no hook URL to call): its slot is free
        await client.post("/midjourney/video/submit", json=BODY, headers={"TT-API-KEY": KEY})
        observed = (await client.get("/_simulator/observed")).json()
    assert (observed["provider"], observed["in_flight"], observed["peak_in_flight"]) == ("ttapi", 2, 3)
    assert [s["status_code"] for s in observed["submissions"]] == [200, 200, 200, 401, 200]
    assert [s["job_id"] for s in observed["submissions"]][:3] == taken
    assert observed["submissions"][3]["job_id"] is None and observed["submissions"][0]["body"] == BODY


async def test_a_simulator_runs_as_its_own_process_on_a_given_socket() -> None:
    sock = bind_socket()
    url = socket_url(sock)
    with sock:
        command = [sys.executable, "-m", "submitter.simulators", "ttapi", "--fd", str(sock.fileno()), "--api-key", KEY]
        process = subprocess.Popen(command, pass_fds=[sock.fileno()], stdout=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            # The socket listens already: the first request waits in its backlog until the process serves it.
            refused = await client.post("/midjourney/video/submit", json=BODY, headers={"TT-API-KEY": "wrong"})
            taken = await client.post("/midjourney/video/submit", json=BODY, headers={"TT-API-KEY": KEY})
            observed = (await client.get("/_simulator/observed")).json()
        assert (refused.status_code, taken.status_code) == (401, 200)
        assert [s["job_id"] for s in observed["submissions"]] == [None, taken.json()["data"]["jobId"]]
    finally:
        process.terminate()
        process.wait(timeout=10)
