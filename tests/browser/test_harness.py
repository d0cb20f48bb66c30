"""The harness proves itself on what reelhook serves today: JSON pages seen by chromium, and a video that plays."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from submitter import simulators
from tests.browser.support import ENABLE, screenshot

sync_api = pytest.importorskip("playwright.sync_api", reason=ENABLE)
expect = sync_api.expect

SAMPLE_MP4 = simulators.__file__.replace("__init__.py", "sample.mp4")


def downloaded(job):
    return job["status"] == "succeeded" and all(video["status"] == "downloaded" for video in job["videos"])


def test_chromium_shows_healthz_and_a_job_the_api_took(api_page, new_page, reelhook):
    response = api_page.goto("/healthz")
    assert response is not None and response.status == 200
    assert json.loads(api_page.locator("body").inner_text()) == {"ok": True}

    submitted = reelhook.submit("a harbour in fog")
    done = reelhook.wait_for_job(submitted["id"], downloaded)

    response = api_page.goto(f"/api/jobs/{submitted['id']}")
    assert response is not None and response.status == 200
    shown = json.loads(api_page.locator("body").inner_text())
    assert (shown["id"], shown["prompt"], shown["status"]) == (submitted["id"], "a harbour in fog", "succeeded")
    assert [v["sha256"] for v in shown["videos"]] == [v["sha256"] for v in done["videos"]]
    assert len(shown["videos"]) == 4 and None not in [v["sha256"] for v in shown["videos"]]
    screenshot(api_page, "api-job")

    # The header came from the context: a page without it is refused.
    anonymous = new_page(reelhook.url)
    response = anonymous.goto(f"/api/jobs/{submitted['id']}")
    assert response is not None and response.status == 401


def test_chromium_plays_the_simulators_h264_sample(new_page, serve):
    """What the gallery test relies on: headless chromium decodes and plays the simulators' H.264 sample, served
    with Range support (Starlette's FileResponse), muted so autoplay rules allow play() without a gesture."""
    ranges: list[str | None] = []

    async def video(request: Request) -> Response:
        ranges.append(request.headers.get("range"))
        return FileResponse(SAMPLE_MP4, media_type="video/mp4")

    async def index(request: Request) -> Response:
        return HTMLResponse('<video id="v" src="/sample.mp4" muted playsinline preload="auto"></video>')

    url = serve(Starlette(routes=[Route("/", index), Route("/sample.mp4", video)]))
    page = new_page(url)
    page.goto("/")
    video_element = page.locator("video#v")

    page.evaluate("() => document.querySelector('video#v').play()")
    page.wait_for_function("() => document.querySelector('video#v').currentTime > 0.2")

    assert video_element.evaluate("v => v.error") is None
    assert video_element.evaluate("v => [v.videoWidth, v.videoHeight]") == [64, 64]  # frames were decoded
    assert "bytes=0-" in ranges  # chromium asked for a range, as it does for any media it may seek in
    screenshot(page, "video")
