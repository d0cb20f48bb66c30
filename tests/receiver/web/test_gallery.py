"""The gallery's filters: by chain, provider, rule and day, over downloaded files only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from storage import CallbackResult, JobStatus
from tests.receiver.conftest import Harness
from tests.receiver.web.test_dashboard import sign_in

pytestmark = pytest.mark.anyio


async def downloaded_job(harness: Harness, provider_job_id: str) -> str:
    job_id = await harness.submitted_job(provider_job_id)
    result = CallbackResult(provider_job_id, JobStatus.SUCCEEDED, 100, ("https://cdn.example/0.mp4",))
    await harness.store.record_callback(job_id, "ttapi", body=provider_job_id.encode(), headers=[], result=result)
    path = harness.settings.media_dir / job_id / job_id / "0.mp4"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    await harness.store.record_download(job_id, 0, path=str(path), sha256="0" * 64, size=12)
    return job_id


async def test_the_gallery_filters_by_chain_provider_and_day(harness: Harness) -> None:
    await sign_in(harness)
    first, second = await downloaded_job(harness, "tt-1"), await downloaded_job(harness, "tt-2")
    everything = (await harness.client.get("/gallery")).text
    assert f'figure data-job-id="{first}"' in everything and f'figure data-job-id="{second}"' in everything
    chain = (await harness.client.get("/gallery", params={"root": first})).text
    assert f'figure data-job-id="{first}"' in chain and f'figure data-job-id="{second}"' not in chain
    assert "figure data-job-id" not in (await harness.client.get("/gallery", params={"provider": "acedata"})).text
    today = datetime.now(UTC).date().isoformat()
    assert f'figure data-job-id="{first}"' in (await harness.client.get("/gallery", params={"day": today})).text
    assert "figure data-job-id" not in (await harness.client.get("/gallery", params={"day": "1999-01-01"})).text
    refused = await harness.client.get("/gallery", params={"day": "yesterday<script>"})
    assert refused.status_code == 400 and "day must be YYYY-MM-DD" in refused.text and "<script>" not in refused.text
