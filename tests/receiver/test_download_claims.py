"""How often the downloader asks the store for work: a claim per batch of videos, not one per video that ends, and
no read of the next retry time for every slot that goes idle. Real SQLite, real refusals (private addresses)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from receiver.downloads import Downloader
from storage import CallbackResult, JobStatus, NewJob, Store, Video, VideoStatus

pytestmark = pytest.mark.anyio

JOBS = 10


class CountingStore(Store):
    claims = 0
    due_reads = 0

    async def claim_downloads(self, *, limit: int, lease: float) -> list[Video]:
        self.claims += 1
        return await super().claim_downloads(limit=limit, lease=lease)

    async def next_download_at(self) -> float | None:
        self.due_reads += 1
        return await super().next_download_at()


async def test_the_downloader_claims_in_batches_and_does_not_ask_again_for_each_video_that_ends(tmp_path: Path) -> None:
    async with await CountingStore.open(tmp_path / "db.sqlite3") as store:
        for number in range(JOBS):
            job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": f"p{number}"}))
            await store.claim_submission(job.id)
            urls = tuple(f"http://127.0.0.1:9/{number}/{i}.mp4" for i in range(4))  # refused: a private address
            await store.record_callback(
                job.id,
                "ttapi",
                body=b"",
                headers=[],
                result=CallbackResult(f"p-{number}", JobStatus.SUCCEEDED, 100, urls),
            )
        async with httpx.AsyncClient() as http:
            downloader = Downloader(store, http, tmp_path / "media", concurrency=4)
            assert await downloader.run_once() == 4 * JOBS
        videos = [video for job in await store.list_jobs(limit=JOBS) for video in job.videos]
        assert len(videos) == 4 * JOBS and {video.status for video in videos} == {VideoStatus.FAILED}
        # 40 videos, 4 a claim: 10 claims that found work, and the one that found the queue empty
        assert store.claims <= 4 * JOBS // 4 + 1, store.claims
        assert store.due_reads <= 1, store.due_reads


async def test_a_failed_download_wakes_the_rules(tmp_path: Path) -> None:
    # A video that fails for good records a video.failed event, which rules act on as they act on video.downloaded:
    # the event worker must hear of it, else it waits for whatever wakes it next.
    async with await CountingStore.open(tmp_path / "db.sqlite3") as store:
        job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "p"}))
        await store.claim_submission(job.id)
        result = CallbackResult("p-1", JobStatus.SUCCEEDED, 100, ("http://127.0.0.1:9/0.mp4",))
        await store.record_callback(job.id, "ttapi", body=b"", headers=[], result=result)
        woken: list[None] = []
        async with httpx.AsyncClient() as http:
            downloader = Downloader(store, http, tmp_path / "media", on_recorded=lambda: woken.append(None))
            assert await downloader.run_once() == 1
        assert [e.type for e in await store.pending_events()][-1] == "video.failed" and len(woken) == 1
