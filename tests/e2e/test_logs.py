"""`reelhook serve` with REELHOOK_LOG_FORMAT=json at DEBUG, through submit, callback, download and a rule's follow-up:
every line is one JSON object, each line about a job carries that job's ids, and no secret or hook token is in any
of them (DEBUG turns on uvicorn's access log and httpx's request lines, both of which name hook URLs)."""

from __future__ import annotations

import json
import socket
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from receiver.serving import running
from submitter.simulators.ttapi import TTAPISimulator
from submitter.simulators.wavespeed import WaveSpeedSimulator
from tests.e2e.conftest import API_TOKEN, SECRET, TT_KEY
from tests.faults.conftest import EXTEND_ONCE, crash_rig
from tests.faults.test_secrets import leaks

pytestmark = pytest.mark.anyio

FIELDS = {"ts", "level", "logger", "message", "event", "job_id", "provider", "provider_job_id"}  # in every line


async def test_json_lines_carry_each_jobs_ids_and_no_secret(tmp_path: Path, sock: socket.socket) -> None:
    sims = {"ttapi": TTAPISimulator(api_key=TT_KEY, delay=0.05), "wavespeed": WaveSpeedSimulator(api_key=TT_KEY)}
    async with AsyncExitStack() as stack:
        urls = {name: await stack.enter_async_context(running(sim.app)) for name, sim in sims.items()}
        rig = await stack.enter_async_context(crash_rig(tmp_path, sock, sims, urls, rules=EXTEND_ONCE))  # type: ignore[arg-type]
        rig.env |= {"REELHOOK_LOG_FORMAT": "json", "REELHOOK_LOG_LEVEL": "debug"}
        async with rig.serving():
            for provider in sims:
                body = {"provider": provider, "prompt": "p", "image_url": "https://img.example/a.png"}
                assert (await rig.api.post("/api/jobs", json=body)).status_code == 201
            await rig.settle(3)  # a rule extends the TTAPI job once; WaveSpeed cannot extend
            jobs = {job["id"]: job for job in await rig.jobs()}
            [refused_url] = [job.hook_url for job in sims["ttapi"].jobs() if job.hook_url][:1]
            async with httpx.AsyncClient() as client:  # a body TTAPI never sends: refused, and logged as such
                assert (await client.post(refused_url, content=b"[]")).status_code == 400
    lines = [json.loads(line) for line in rig.log.read_text().splitlines() if line.strip()]

    assert all(FIELDS <= line.keys() for line in lines)
    by_event: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in lines:
        if line["job_id"] in jobs:
            job = jobs[line["job_id"]]
            assert line["provider"] == job["provider"], line
            assert line["provider_job_id"] in (None, job["provider_job_id"]), line  # null before it was sent
            by_event.setdefault((job["id"], line["event"]), []).append(line)
        if line["logger"].startswith("reelhook"):  # a line that names a job says so in its fields too
            for job_id in jobs:
                assert job_id not in line["message"] or job_id in line.values(), line
    for job in jobs.values():
        for event in ("job.sent", "callback.applied", "download.done"):
            assert by_event.get((job["id"], event)), (job["id"], event)
            assert all(line["provider_job_id"] == job["provider_job_id"] for line in by_event[(job["id"], event)])
    [root] = [job for job in jobs.values() if job["provider"] == "ttapi" and job["depth"] == 0]
    [child] = [job for job in jobs.values() if job["parent_id"] == root["id"]]
    [recorded] = by_event[(root["id"], "followup.recorded")]
    assert recorded["followup_id"] == child["id"]
    assert any(event == "callback.refused" and job_id in (root["id"], child["id"]) for job_id, event in by_event)
    [wavespeed] = [job for job in jobs.values() if job["provider"] == "wavespeed"]
    assert by_event[(wavespeed["id"], "followup.skipped")]  # WaveSpeed cannot extend: said, with the job's ids

    # DEBUG put the requests in and out in the log; each is JSON too, and its hook URL lost its token.
    access = [line for line in lines if line["event"] == "http.request" and "/hooks/" in line["path"]]
    assert any(line["path"] == "/hooks/ttapi/…" and line["status"] == 400 for line in access), access
    assert any("webhook=" in line["message"] and "%2Fhooks%2Fwavespeed%2F…" in line["message"] for line in lines)
    secrets = {
        "REELHOOK_SECRET": SECRET,
        "REELHOOK_API_TOKEN": API_TOKEN,
        "provider API key": TT_KEY,
        "notify secret": (rig.data / "notify-secret").read_text().strip(),
        "wavespeed webhook secret": sims["wavespeed"].webhook_secret,  # type: ignore[attr-defined]
    }
    for name, sim in sims.items():
        for number, job in enumerate(job for job in sim.jobs() if job.hook_url):
            assert job.hook_url is not None
            secrets[f"{name} hook URL {number}"] = job.hook_url
            secrets[f"{name} hook token {number}"] = urlsplit(job.hook_url).path.split("/")[3]
    assert len(secrets) == 5 + 2 * 3
    assert leaks(secrets, rig.log.read_text()) == []
