"""SIGTERM while a video is downloading: the server stops within a bounded time, leaves nothing half-written, and
the next start finishes the download."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from receiver.serving import running
from submitter.simulators import video_bytes
from submitter.simulators.ttapi import TTAPISimulator
from tests.e2e.conftest import TT_KEY, wait_until
from tests.faults.conftest import crash_rig

pytestmark = pytest.mark.anyio

SHUTDOWN_BOUND = 15  # seconds: uvicorn's graceful timeout (5 s) plus start-up slack; a hang would never end


class StallingCDN(TTAPISimulator):
    """Serves the first bytes of each video, then stalls until `flowing` is set."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.flowing = False

    async def _cdn(self, request: Request) -> Response:
        if self.flowing:
            return await super()._cdn(request)
        self.cdn_hits[request.url.path] += 1
        job_id, name = request.path_params["job_id"], request.path_params["filename"]
        content = video_bytes(job_id, int(name.split(".")[0]))

        async def stall() -> AsyncIterator[bytes]:
            yield content[:1000]
            await anyio.sleep_forever()

        headers = {"content-length": str(len(content))}
        return StreamingResponse(stall(), media_type="video/mp4", headers=headers)


async def test_sigterm_mid_download_stops_cleanly_and_resumes(
    tmp_path: Path, sock: socket.socket, database_url: str | None
) -> None:
    sim = StallingCDN(api_key=TT_KEY, delay=0.05)
    async with (
        running(sim.app) as sim_url,
        crash_rig(tmp_path, sock, {"ttapi": sim}, {"ttapi": sim_url}, "", database_url=database_url) as rig,
    ):
        async with rig.serving() as first:
            job = (await rig.api.post("/api/jobs", json={"prompt": "p", "image_url": "https://i.example/a"})).json()

            async def mid_download() -> bool:
                # One CDN, so two at once: the service's per-origin share of its four slots.
                return len(list((rig.data / "media").rglob("*.part"))) == 2

            await wait_until(mid_download)
            first.send_signal(signal.SIGTERM)
            try:
                code = await anyio.to_thread.run_sync(lambda: first.wait(timeout=SHUTDOWN_BOUND))
            except subprocess.TimeoutExpired:
                pytest.fail(f"the server did not stop within {SHUTDOWN_BOUND}s of SIGTERM")
            # uvicorn re-raises the signal once its shutdown is done, so the process ends "by" SIGTERM, cleanly.
            assert code in (0, -signal.SIGTERM), rig.log.read_text()[-2000:]
            assert "Application shutdown complete" in rig.log.read_text()

        assert not list((rig.data / "media").rglob("*.part"))  # abandoned safely, nothing half-written
        stored = await rig.stored_jobs()
        assert [video.status for job in stored for video in job.videos] == ["pending"] * 4  # still owed, not failed
        sim.flowing = True
        async with rig.serving():
            jobs = await rig.settle(1)
    assert jobs[0]["id"] == job["id"]
    rig.assert_whole(jobs)
