"""Cancel a queued job, retry a job's failed downloads: the same code path from the API, the CLI's endpoint and the
dashboard's buttons, each refused with the API's words when the job cannot take it."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from storage import JobStatus, NewJob
from tests.receiver.conftest import AUTH, Harness, ttapi_callback
from tests.receiver.web.test_dashboard import ORIGIN, sign_in

pytestmark = pytest.mark.anyio


async def queued(harness: Harness) -> str:
    new = NewJob("ttapi", "generate", {"prompt": "p", "image_url": "https://img.example/a.png"})
    job, _ = await harness.store.create_job(new)
    return job.id


async def test_a_queued_job_is_cancelled_and_never_sent(harness: Harness) -> None:
    job_id = await queued(harness)
    response = await harness.client.post(f"/api/jobs/{job_id}/cancel", headers=AUTH)
    assert response.status_code == 200 and response.json() == {"cancelled": job_id}
    job = await harness.store.get_job(job_id)
    assert job is not None and job.status is JobStatus.FAILED and job.error == "cancelled before it was sent"
    harness.app.state.service.wake_submitter()
    await harness.app.state.service.wait_idle()
    assert harness.provider.requests == []
    again = await harness.client.post(f"/api/jobs/{job_id}/cancel", headers=AUTH)
    assert again.status_code == 409 and "only a queued job can be cancelled" in again.json()["detail"]


async def test_a_job_that_left_cannot_be_cancelled_and_an_unknown_one_is_404(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    before = harness.snapshot()
    refused = await harness.client.post(f"/api/jobs/{job_id}/cancel", headers=AUTH)
    assert refused.status_code == 409 and "is submitted" in refused.json()["detail"]
    assert (await harness.client.post("/api/jobs/nosuch/cancel", headers=AUTH)).status_code == 404
    assert harness.snapshot() == before


async def test_failed_downloads_are_retried_from_scratch(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    # The in-process harness's video URLs sit on a loopback port the download guard refuses: they fail at once.
    await harness.client.post(harness.hook_path(job_id), content=ttapi_callback("tt-1"))
    await harness.app.state.service.wait_idle()
    job = await harness.store.get_job(job_id)
    assert job is not None and {v.status for v in job.videos} == {"failed"}
    with closing(sqlite3.connect(harness.db_path)) as db:  # what the retry resets: tries and error
        assert db.execute("SELECT min(attempts) FROM videos WHERE job_id = ?", (job_id,)).fetchone()[0] >= 1
    response = await harness.client.post(f"/api/jobs/{job_id}/retry", headers=AUTH)
    assert response.status_code == 200 and response.json() == {"retried": 4}
    await harness.app.state.service.wait_idle()
    job = await harness.store.get_job(job_id)
    assert job is not None and all(v.status == "failed" and v.attempts == 1 for v in job.videos)  # tried again, once
    none_failed = await harness.client.post(f"/api/jobs/{(await queued(harness))}/retry", headers=AUTH)
    assert none_failed.status_code == 409


async def test_the_dashboard_shows_cancel_only_for_a_queued_job_and_it_does_what_the_api_does(
    harness: Harness,
) -> None:
    await sign_in(harness)
    job_id = await queued(harness)
    page = (await harness.client.get(f"/jobs/{job_id}")).text
    assert 'data-action="cancel"' in page and 'data-action="retry"' not in page
    response = await harness.client.post(f"/jobs/{job_id}/cancel", headers=ORIGIN)
    assert response.status_code == 303
    page = (await harness.client.get(f"/jobs/{job_id}")).text
    assert 'data-action="cancel"' not in page and "cancelled before it was sent" in page
    refused = await harness.client.post(f"/jobs/{job_id}/cancel", headers=ORIGIN)
    assert refused.status_code == 409 and "only a queued job can be cancelled" in refused.text
