"""What makes the simulators speak the providers rather than our code: progress reports, state kept across a
restart, and the fault switches a test turns on (constructor or `POST /_simulator/faults`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from storage import JobStatus
from submitter.providers import acedata, ttapi, wavespeed
from submitter.simulators.acedata import AceDataSimulator
from submitter.simulators.apimart import APIMartSimulator
from submitter.simulators.base import Faults
from submitter.simulators.ttapi import TTAPISimulator
from submitter.simulators.wavespeed import WaveSpeedSimulator
from tests.submitter.support import Recorder, serving, until

pytestmark = pytest.mark.anyio

KEY = "sim-key"
TT = {"TT-API-KEY": KEY}
BEARER = {"Authorization": f"Bearer {KEY}"}
IMAGE = "https://example.com/first-frame.png"


async def tt_submit(client: httpx.AsyncClient, hook: str | None, prompt: str = "a lighthouse at dusk") -> str:
    body: dict[str, Any] = {"prompt": prompt, "imageUrl": IMAGE}
    if hook is not None:
        body["hookUrl"] = hook
    response = await client.post("/midjourney/video/submit", json=body)
    return ttapi.parse_submit_response(response.status_code, response.content)


async def test_ttapi_reports_progress_as_a_string_before_the_result() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, delay=0.02), Recorder()
    async with serving(sim, recorder, TT) as (client, hook):
        job_id = await tt_submit(client, hook)
        await until(lambda: sim.idle and len(recorder.bodies) == 2)
        progress, result = recorder.payloads()
        assert progress["status"] == "ON_QUEUE" and progress["jobId"] == job_id
        assert progress["data"]["progress"] == "50" and progress["data"]["videos"] == []  # a string, as "100" is
        assert ttapi.parse_callback(recorder.bodies[0], {}).status is JobStatus.RUNNING
        assert result["status"] == "SUCCESS" and result["data"]["progress"] == "100"


async def test_acedata_and_wavespeed_report_progress_and_apimart_does_not() -> None:
    ace, recorder = AceDataSimulator(api_key=KEY, delay=0.02), Recorder()
    async with serving(ace, recorder, BEARER) as (client, hook):
        body = {"action": "generate", "prompt": "p", "image_url": IMAGE, "callback_url": hook}
        task_id = (await client.post("/midjourney/videos", json=body)).json()["task_id"]
        await until(lambda: ace.idle and len(recorder.bodies) == 2)
        progress = recorder.payloads()[0]
        assert "success" not in progress and progress["task_id"] == task_id and progress["progress"] == 50
        assert acedata.parse_callback(recorder.bodies[0], {}).status is JobStatus.RUNNING
        assert recorder.payloads()[1]["success"] is True

    ws, recorder = WaveSpeedSimulator(api_key=KEY, delay=0.02), Recorder()
    async with serving(ws, recorder, BEARER) as (client, hook):
        await client.post(
            "/api/v3/midjourney/image-to-video", params={"webhook": hook}, json={"image": IMAGE, "prompt": "p"}
        )
        await until(lambda: ws.idle and len(recorder.bodies) == 2)
        assert [p["status"] for p in recorder.payloads()] == ["processing", "completed"]
        ids = [headers["webhook-id"] for headers in recorder.headers]
        assert ids[0] != ids[1]  # two messages
        for body, headers in zip(recorder.bodies, recorder.headers, strict=True):
            wavespeed.verify_signature(body, headers, ws.webhook_secret, time.time())

    mart, recorder = APIMartSimulator(api_key=KEY, delay=0.02), Recorder()
    async with serving(mart, recorder, BEARER) as (client, hook):
        body = {"prompt": "p", "image_urls": [IMAGE], "webhook": hook}
        assert (await client.post("/v1/midjourney/generations/video", json=body)).status_code == 200
        await until(lambda: mart.idle and len(recorder.bodies) == 1)
        await anyio.sleep(0.05)
        assert [p["status"] for p in recorder.payloads()] == ["completed"]  # "only terminal states pushed"


async def test_a_restarted_simulator_still_knows_its_jobs(tmp_path: Path) -> None:
    state = tmp_path / "simulators"
    first, recorder = TTAPISimulator(api_key=KEY, delay=0.01, state_dir=state), Recorder()
    async with serving(first, recorder, TT) as (client, hook):
        job_id = await tt_submit(client, hook)
        await until(lambda: first.idle and first.job(job_id).status == "succeeded")
        old_base = str(client.base_url).rstrip("/")
    assert (state / "ttapi.json").exists()

    again, recorder = TTAPISimulator(api_key=KEY, delay=0.01, state_dir=state), Recorder()
    async with serving(again, recorder, TT) as (client, hook):
        fetched = await client.get("/midjourney/video/fetch", params={"jobId": job_id})
        assert fetched.status_code == 200 and fetched.json()["status"] == "SUCCESS"
        media = ttapi.parse_callback(fetched.content, {}).media_urls
        base = str(client.base_url).rstrip("/")
        assert base != old_base and media == tuple(f"{base}/cdn/{job_id}/{i}.mp4" for i in range(4))
        assert (await client.get(media[0])).status_code == 200  # served from its new address
        extend = await client.post("/midjourney/video/extend", json={"jobId": job_id, "index": 2, "hookUrl": hook})
        assert extend.status_code == 200 and extend.json()["status"] == "SUCCESS"


async def test_a_restarted_simulator_finishes_the_jobs_it_had_taken(tmp_path: Path) -> None:
    state = tmp_path / "simulators"
    first = AceDataSimulator(api_key=KEY, delay=0.01, auto_deliver=False, state_dir=state)
    async with serving(first, Recorder(), BEARER) as (client, hook):
        body = {"action": "generate", "prompt": "p", "image_url": IMAGE, "callback_url": hook}
        task_id = (await client.post("/midjourney/videos", json=body)).json()["task_id"]
    again, recorder = AceDataSimulator(api_key=KEY, delay=0.01, state_dir=state), Recorder()
    async with serving(again, recorder, BEARER) as (client, _hook):
        # Its callback waits to learn the simulator's new address (any request tells it), or its URLs would be stale.
        retrieved = await client.post("/midjourney/tasks", json={"action": "retrieve", "id": task_id})
        assert retrieved.status_code == 200
        await until(lambda: again.idle and again.job(task_id).status == "succeeded")
        assert again.job(task_id).media[0].startswith(str(client.base_url).rstrip("/"))


async def test_taken_then_5xx_answers_504_but_the_job_runs_and_calls_back() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, delay=0.01, progress_callbacks=False), Recorder()
    async with serving(sim, recorder, TT) as (client, hook):
        switched = await client.post("/_simulator/faults", json={"taken_then_status": 504})
        assert switched.status_code == 200 and switched.json()["taken_then_status"] == 504
        response = await client.post(
            "/midjourney/video/submit", json={"prompt": "p", "imageUrl": IMAGE, "hookUrl": hook}
        )
        assert response.status_code == 504 and response.json()["status"] == "FAILED"  # TTAPI's envelope
        [taken] = sim.submissions
        assert taken.status_code == 504 and taken.job_id is not None
        await until(lambda: sim.idle and len(recorder.bodies) == 1)
        assert recorder.payloads()[0]["jobId"] == taken.job_id and recorder.payloads()[0]["status"] == "SUCCESS"
        assert (await client.delete("/_simulator/faults")).json()["taken_then_status"] is None
        assert (
            await client.post("/midjourney/video/submit", json={"prompt": "p", "imageUrl": IMAGE})
        ).status_code == 200


async def test_no_callback_ends_the_job_silently_and_a_late_one_comes_later() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, delay=0.01, faults=Faults(no_callback=True)), Recorder()
    async with serving(sim, recorder, TT) as (client, hook):
        silent = await tt_submit(client, hook)
        await until(lambda: sim.idle)
        assert sim.job(silent).status == "succeeded" and recorder.bodies == [] and sim.in_flight == 0
        fetched = await client.get("/midjourney/video/fetch", params={"jobId": silent})
        assert fetched.json()["status"] == "SUCCESS"

        await client.post("/_simulator/faults", json={"no_callback": False, "callback_delay": 0.4})
        late = await tt_submit(client, hook)
        await until(lambda: sim.job(late).status == "succeeded")
        ended = time.monotonic()
        await until(lambda: sim.idle)
        assert time.monotonic() - ended >= 0.3
        assert [p["status"] for p in recorder.payloads()] == ["ON_QUEUE", "SUCCESS"]


async def test_fail_and_repeat_switches() -> None:
    faults = Faults(fail="insufficient quota", repeat=2)
    sim, recorder = TTAPISimulator(api_key=KEY, delay=0.01, faults=faults, progress_callbacks=False), Recorder()
    async with serving(sim, recorder, TT) as (client, hook):
        await tt_submit(client, hook)
        await until(lambda: sim.idle and len(recorder.bodies) == 2)
        assert recorder.payloads() == [{"status": "FAILED", "message": "insufficient quota", "data": None}] * 2
        assert [d.status_code for d in sim.deliveries] == [200, 200]  # sent twice though the first was answered 200


async def test_the_fault_route_refuses_what_it_does_not_know() -> None:
    sim = TTAPISimulator(api_key=KEY)
    async with serving(sim, Recorder(), TT) as (client, _hook):
        for body, words in (({"explode": True}, "unknown switch"), ({"repeat": 0}, "repeat must be")):
            refused = await client.post("/_simulator/faults", json=body)
            assert refused.status_code == 400 and words in refused.json()["error"]
        assert (await client.get("/_simulator/faults")).json() == Faults().as_dict()
