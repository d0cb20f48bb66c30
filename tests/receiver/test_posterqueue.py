"""The posters worker: downloads never wait on a poster, and posters a crash lost are made at the next start."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from receiver.downloads import Downloader
from receiver.posterqueue import PosterQueue
from receiver.posters import make_poster
from receiver.serving import running
from storage import CallbackResult, JobStatus, NewJob, Store, VideoStatus
from storage.media import MediaStore
from storage.media.local import LocalMediaStore
from tests.receiver.test_posters import BROKEN, CDN, SAMPLE, decoded_size

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cdn_url() -> AsyncIterator[str]:
    async with running(CDN({"/a.mp4": SAMPLE, "/b.mp4": SAMPLE})) as base_url:  # type: ignore[arg-type]
        yield base_url


class HeldPosters:
    """Makes real posters, but each only once `release` is set; records the keys it was asked for."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.asked: list[str] = []

    async def __call__(self, media: MediaStore, key: str) -> str | None:
        self.asked.append(key)
        await self.release.wait()
        return await make_poster(media, key)


async def test_downloads_are_recorded_one_after_another_while_the_first_poster_is_still_being_made(
    store: Store, cdn_url: str, tmp_path: Path
) -> None:
    job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "a fox"}))
    await store.claim_submission(job.id)
    result = CallbackResult("p-1", JobStatus.SUCCEEDED, media_urls=(f"{cdn_url}/a.mp4", f"{cdn_url}/b.mp4"))
    await store.record_callback(job.id, "ttapi", body=b"{}", headers=[], result=result)
    media = LocalMediaStore(tmp_path / "media")
    held = HeldPosters()
    offered, made = anyio.Event(), []
    posters = PosterQueue(media, on_offered=offered.set, on_made=lambda: made.append(1), make=held)

    async def posters_worker() -> None:
        await offered.wait()
        await posters.run_once()

    async with httpx.AsyncClient(trust_env=False) as http, anyio.create_task_group() as tg:
        tg.start_soon(posters_worker)
        downloader = Downloader(store, http, media, allowed_origins={cdn_url}, concurrency=1, posters=posters)
        with anyio.fail_after(30):  # a bound on a hang (one slot waiting on a poster that waits on it), not a timing
            assert await downloader.run_once() == 2
        # One slot: the second video was fetched and recorded while the first one's poster was held.
        rows = await store.get_videos(job.id)
        assert [row.status for row in rows] == [VideoStatus.DOWNLOADED, VideoStatus.DOWNLOADED]
        folder = tmp_path / "media" / job.root_id / job.id
        assert not list(folder.glob("*.poster.jpg")) and set(held.asked) <= {f"{job.root_id}/{job.id}/0.mp4"}
        held.release.set()
    assert sorted(p.name for p in folder.glob("*.poster.jpg")) == ["0.poster.jpg", "1.poster.jpg"]
    assert decoded_size((folder / "1.poster.jpg").read_bytes()) == (64, 64) and made == [1, 1]


async def test_posters_a_crash_lost_are_made_at_the_next_start_and_only_those(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What a crash between a download's record and its poster leaves: the file and its sidecar, no poster.
    folder = tmp_path / "media" / "root" / "job"
    folder.mkdir(parents=True)
    for name, data in {
        "0.mp4": SAMPLE, "0.json": b"{}",  # lost its poster: made at the start
        "1.mp4": SAMPLE, "1.json": b"{}", "1.poster.jpg": b"\xff\xd8 kept",  # has its poster: left alone
        "2.mp4": SAMPLE,  # no sidecar: not stored whole yet, a download's to finish
        "3.mp4.part": SAMPLE, "4.json.tmp": b"{}", "notes.txt": b"",  # never media
        "5.mp4": BROKEN, "5.json": b"{}",  # FFmpeg cannot read it: tried, logged, no poster
    }.items():  # fmt: skip
        (folder / name).write_bytes(data)
    posters = PosterQueue(LocalMediaStore(tmp_path / "media"))

    with caplog.at_level(logging.INFO, logger="reelhook.posters"):
        assert await posters.run_once() == 2
    assert sorted(p.name for p in folder.glob("*.poster.jpg")) == ["0.poster.jpg", "1.poster.jpg"]
    assert decoded_size((folder / "0.poster.jpg").read_bytes()) == (64, 64)
    assert (folder / "1.poster.jpg").read_bytes() == b"\xff\xd8 kept"
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "2 stored files have no poster (a crash or a shutdown came first)",
        f"no poster for {folder / '5.mp4'}",
    ]
    assert await posters.run_once() == 0  # the folder is looked through once per start


async def test_an_offer_past_the_limit_is_dropped_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    media = LocalMediaStore(tmp_path)
    asked: list[str] = []

    async def make(media: MediaStore, key: str) -> str | None:
        asked.append(key)
        return None

    posters = PosterQueue(media, limit=2, make=make)
    with caplog.at_level(logging.WARNING, logger="reelhook.posters"):
        for key in ("r/j/0.mp4", "r/j/1.mp4", "r/j/0.mp4", "r/j/2.mp4"):  # the repeated key waits once
            posters.offer(key)
    assert await posters.run_once() == 2 and asked == ["r/j/0.mp4", "r/j/1.mp4"]
    assert [r.getMessage() for r in caplog.records] == [
        f"no poster for {tmp_path / 'r/j/2.mp4'} yet: 2 posters already wait; it is made at the next start"
    ]
