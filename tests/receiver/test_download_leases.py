"""A download is claimed with a lease: while it runs, no other instance takes it; a worker that stops renewing
loses it to another once the lease is over, and what the stalled worker then reports is refused. Two Downloaders
on two stores of one database stand for two instances; a real origin on loopback answers each request only when
the test opens its gate, and the stores share a clock the test moves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from receiver.downloads import Downloader
from receiver.serving import running
from storage import EventType, StoreProtocol, VideoStatus, open_store
from tests.receiver.test_downloads import SAMPLE, Clock, finished_job
from tests.receiver.test_instances import database  # noqa: F401  (the fixture: a SQLite file, then a PostgreSQL db)

pytestmark = pytest.mark.anyio

LEASE = 60.0


class GatedOrigin:
    """Answers its n-th request with `answers[n]`, once `gates[n]` is set; `arrived[n]` is set when it comes in."""

    def __init__(self, answers: list[tuple[int, bytes]]) -> None:
        self.answers = answers
        self.gates = [anyio.Event() for _ in answers]
        self.arrived = [anyio.Event() for _ in answers]
        self.hits = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        n = self.hits
        self.hits += 1
        self.arrived[n].set()
        await self.gates[n].wait()
        status, body = self.answers[n]
        head = [(b"content-length", str(len(body)).encode()), (b"content-type", b"video/mp4")]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def two_stores(database: str) -> AsyncIterator[tuple[StoreProtocol, StoreProtocol, Clock]]:  # noqa: F811
    clock = Clock()
    async with await open_store(database, clock=clock) as a, await open_store(database, clock=clock) as b:
        yield a, b, clock


async def test_a_stalled_download_is_taken_over_after_its_lease_and_its_stale_failure_refused(
    two_stores: tuple[StoreProtocol, StoreProtocol, Clock], tmp_path: Path
) -> None:
    store_a, store_b, clock = two_stores
    # The stalled worker's request ends in a 404 (a permanent failure it would record), the new claimer's in the file.
    origin = GatedOrigin([(404, b"gone"), (200, SAMPLE)])
    async with running(origin) as origin_url, httpx.AsyncClient(trust_env=False) as http:  # type: ignore[arg-type]
        job = await finished_job(store_a, [f"{origin_url}/v/0.mp4"])  # type: ignore[arg-type]
        media = tmp_path / "media"
        # One slot for `a`: its busy slot is the stalled one, so no idle slot of its own re-claims the video when the
        # lease runs out (which a real instance may do: then it, not b, takes it over; here b must).
        a = Downloader(store_a, http, media, allowed_origins={origin_url}, lease=LEASE, concurrency=1)
        b = Downloader(store_b, http, media, allowed_origins={origin_url}, lease=LEASE)
        a_done = anyio.Event()

        async def run_a() -> None:
            await a.run_once()
            a_done.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_a)
                await origin.arrived[0].wait()  # a holds the video and is mid-request
                assert await b.run_once() == 0  # its lease is live: b leaves it alone
                clock.now += LEASE + 1  # a stalled and did not renew (its renewals come every LEASE/3 real seconds)
                tg.start_soon(b.run_once)
                await origin.arrived[1].wait()  # b took it over and is fetching it
                origin.gates[0].set()  # a's request ends now, with a 404: a permanent failure a would record
                await a_done.wait()
                [video] = await store_b.get_videos(job.id)
                assert video.status is VideoStatus.PENDING and video.attempts == 0  # a's outcome changed nothing
                origin.gates[1].set()
        [video] = await store_b.get_videos(job.id)
        assert video.status is VideoStatus.DOWNLOADED and video.error is None
        events = [event.type for event in await store_b.pending_events(limit=100) if event.job_id == job.id]
        assert EventType.VIDEO_FAILED not in events and events.count(EventType.VIDEO_DOWNLOADED) == 1


async def test_a_video_claimed_again_while_its_last_attempt_winds_down_waits_for_it(
    two_stores: tuple[StoreProtocol, StoreProtocol, Clock], tmp_path: Path
) -> None:
    # Seen in CI: one instance's idle slot re-claimed a video whose lease had run out while that instance's own stalled
    # attempt at it was still running; both attempts ran at once and the run crashed on its bookkeeping (KeyError).
    store, _, clock = two_stores
    origin = GatedOrigin([(404, b"gone"), (200, SAMPLE)])
    async with running(origin) as origin_url, httpx.AsyncClient(trust_env=False, timeout=30) as http:  # type: ignore[arg-type]
        job = await finished_job(store, [f"{origin_url}/v/0.mp4"])  # type: ignore[arg-type]
        downloader = Downloader(store, http, tmp_path / "media", allowed_origins={origin_url}, lease=LEASE)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(downloader.run_once)
                await origin.arrived[0].wait()  # the first attempt hangs at the origin
                [first] = await store.get_videos(job.id)
                clock.now += LEASE + 1  # its lease runs out (no renewal comes within the test's real seconds)
                downloader.wake()  # an idle slot looks again: the video is due, and this instance claims it again
                while (await store.get_videos(job.id))[0].next_attempt_at == first.next_attempt_at:  # claimed anew
                    await anyio.sleep(0.01)
                assert origin.hits == 1  # claimed again, but not started while the first attempt runs
                origin.gates[0].set()  # the first attempt ends (its 404 is refused: its claim is gone)
                await origin.arrived[1].wait()  # now the second attempt starts
                origin.gates[1].set()
        [video] = await store.get_videos(job.id)
        assert video.status is VideoStatus.DOWNLOADED and video.error is None and origin.hits == 2
