"""The download worker against a real CDN: a tiny ASGI app under uvicorn on 127.0.0.1, a real Store, real files."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from receiver.downloads import Downloader, media_extension
from receiver.serving import running
from storage import CallbackResult, EventType, Job, JobStatus, NewJob, Store, Video, VideoStatus

pytestmark = pytest.mark.anyio

SAMPLE = (Path(__file__).parents[2] / "submitter" / "simulators" / "sample.mp4").read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class CDN:
    """Serves `files`, counting hits per path; each other table makes a path misbehave."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    errors: dict[str, int] = field(default_factory=dict)  # path -> how many 500s to answer before the file
    status: dict[str, int] = field(default_factory=dict)  # path -> a status to answer always
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location
    cut_short: dict[str, int] = field(default_factory=dict)  # path -> bytes to send of a longer Content-Length
    hold: anyio.Event | None = None  # first requests wait on this...
    held: list[str] = field(default_factory=list)
    all_held: anyio.Event = field(default_factory=anyio.Event)  # ...and this is set when `hold_count` are waiting
    hold_count: int = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        self.hits[path] += 1
        if self.hold is not None and self.hits[path] == 1:
            self.held.append(path)
            if len(self.held) == self.hold_count:
                self.all_held.set()
            await self.hold.wait()
        if path in self.redirects:
            return await self._send(send, 302, b"", ((b"location", self.redirects[path].encode()),))
        if path in self.status:
            return await self._send(send, self.status[path], b"gone")
        if self.errors.get(path, 0) > 0:
            self.errors[path] -= 1
            return await self._send(send, 500, b"try later")
        if path not in self.files:
            return await self._send(send, 404, b"no such file")
        body = self.files[path]
        if path in self.cut_short:
            head = [(b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            # Returning mid-body makes uvicorn drop the connection: the client sees fewer bytes than promised.
            await send({"type": "http.response.body", "body": body[: self.cut_short[path]], "more_body": True})
            return
        await self._send(send, 200, body, ((b"content-type", b"video/mp4"),))

    async def _send(self, send: Any, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        head = [(b"content-length", str(len(body)).encode()), *headers]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cdn() -> CDN:
    return CDN()


@pytest.fixture
async def cdn_url(cdn: CDN) -> AsyncIterator[str]:
    async with running(cdn) as base_url:  # type: ignore[arg-type]
        yield base_url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:  # no proxy between us and 127.0.0.1
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def timed_store(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    """A real Store on a clock the test moves (the Downloader schedules on the store's clock)."""
    async with await Store.open(tmp_path / "timed.sqlite3", clock=clock) as opened:
        yield opened


async def finished_job(store: Store, urls: list[str], prompt: str = "a red fox running") -> Job:
    job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": prompt, "image_url": "https://i/x.png"}))
    await store.claim_submission(job.id)
    result = CallbackResult(provider_job_id=f"p-{job.id}", status=JobStatus.SUCCEEDED, media_urls=tuple(urls))
    await store.record_callback(job.id, "ttapi", body=b"{}", headers=[], result=result)
    return job


async def video(store: Store, job: Job, index: int = 0) -> Video:
    return (await store.get_videos(job.id))[index]


def leftovers(media: Path) -> list[Path]:
    return [p for p in media.rglob("*") if p.suffix in (".part", ".tmp")]


async def test_downloads_every_video_with_sidecar_and_event(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    bodies = [SAMPLE + f"video {i}".encode() * (i + 1) for i in range(4)]
    for i, body in enumerate(bodies):
        cdn.files[f"/v/{i}.mp4"] = body
    job = await finished_job(store, [f"{cdn_url}/v/{i}.mp4" for i in range(4)])
    media = tmp_path / "media"
    woken: list[int] = []
    downloader = Downloader(store, http, media, allowed_origins={cdn_url}, on_recorded=lambda: woken.append(1))

    assert await downloader.run_once() == 4

    for i, body in enumerate(bodies):
        row = await video(store, job, i)
        path = media / job.root_id / job.id / f"{i}.mp4"
        assert row.status is VideoStatus.DOWNLOADED and row.error is None
        assert (row.path, row.sha256, row.bytes, row.attempts) == (str(path.absolute()), sha(body), len(body), 1)
        assert sha(path.read_bytes()) == sha(body)
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar | {"downloaded_at": None, "created_at": None} == {
            "provider": "ttapi", "job_id": job.id, "provider_job_id": f"p-{job.id}", "root_id": job.root_id,
            "parent_id": None, "rule": None, "action": "generate", "prompt": "a red fox running", "index": i,
            "source_url": f"{cdn_url}/v/{i}.mp4", "sha256": sha(body), "bytes": len(body),
            "downloaded_at": None, "created_at": None,
        }  # fmt: skip
        assert datetime.fromisoformat(sidecar["created_at"]) == datetime.fromtimestamp(int(job.created_at), UTC)
        downloaded_at = datetime.fromisoformat(sidecar["downloaded_at"])
        assert downloaded_at.tzinfo == UTC and abs(downloaded_at.timestamp() - time.time()) < 60
    assert leftovers(media) == []
    assert cdn.hits == {f"/v/{i}.mp4": 1 for i in range(4)}
    downloaded = [
        (e.job_id, e.video_index) for e in await store.pending_events() if e.type is EventType.VIDEO_DOWNLOADED
    ]
    assert sorted(downloaded) == [(job.id, i) for i in range(4)]
    assert len(woken) == 4
    assert await downloader.next_due() is None


async def test_a_second_run_downloads_nothing_again(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    for i in range(3):
        cdn.files[f"/v/{i}.mp4"] = SAMPLE + bytes([i])
    await finished_job(store, [f"{cdn_url}/v/{i}.mp4" for i in range(3)])
    downloader = Downloader(store, http, tmp_path / "media", allowed_origins={cdn_url})

    assert await downloader.run_once() == 3
    assert await downloader.run_once() == 0
    assert cdn.hits == {f"/v/{i}.mp4": 1 for i in range(3)}


async def test_a_run_entered_while_another_downloads_leaves_its_videos_alone(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    for i in range(4):
        cdn.files[f"/v/{i}.mp4"] = SAMPLE + bytes([i])
    job = await finished_job(store, [f"{cdn_url}/v/{i}.mp4" for i in range(4)])
    cdn.hold, cdn.hold_count = anyio.Event(), 4
    # More slots than videos, so only the in-progress set (not a full limiter) can keep the second run off them.
    downloader = Downloader(store, http, tmp_path / "media", allowed_origins={cdn_url}, concurrency=8)
    counts: list[int] = []

    async def first() -> None:
        counts.append(await downloader.run_once())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await cdn.all_held.wait()  # all four are mid-request, their rows still pending
            counts.append(await downloader.run_once())
            cdn.hold.set()
    assert counts == [0, 4]
    assert cdn.hits == {f"/v/{i}.mp4": 1 for i in range(4)}
    assert {v.status for v in await store.get_videos(job.id)} == {VideoStatus.DOWNLOADED}


async def test_two_runs_started_together_fetch_each_video_once(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    for i in range(6):
        cdn.files[f"/v/{i}.mp4"] = SAMPLE + bytes([i])
    await finished_job(store, [f"{cdn_url}/v/{i}.mp4" for i in range(6)])
    downloader = Downloader(store, http, tmp_path / "media", allowed_origins={cdn_url}, concurrency=8)
    counts: list[int] = []

    async def run() -> None:
        counts.append(await downloader.run_once())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        tg.start_soon(run)
    assert sum(counts) == 6
    assert cdn.hits == {f"/v/{i}.mp4": 1 for i in range(6)}


async def test_a_server_error_is_retried_once_the_backoff_has_passed(
    timed_store: Store, clock: Clock, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.files["/v.mp4"] = SAMPLE
    cdn.errors["/v.mp4"] = 1
    job = await finished_job(timed_store, [f"{cdn_url}/v.mp4"])
    media = tmp_path / "media"
    downloader = Downloader(timed_store, http, media, allowed_origins={cdn_url})

    assert await downloader.run_once() == 1
    row = await video(timed_store, job)
    assert row.status is VideoStatus.PENDING and row.attempts == 1 and "HTTP 500" in (row.error or "")
    assert row.next_attempt_at is not None and clock.now < row.next_attempt_at <= clock.now + 2
    assert await downloader.next_due() == row.next_attempt_at
    assert await downloader.run_once() == 0  # not due yet
    assert cdn.hits["/v.mp4"] == 1 and leftovers(media) == []

    clock.now += 5
    assert await downloader.run_once() == 1
    row = await video(timed_store, job)
    assert (row.status, row.attempts, row.sha256) == (VideoStatus.DOWNLOADED, 2, sha(SAMPLE))
    assert cdn.hits["/v.mp4"] == 2


@pytest.mark.parametrize("status", [404, 410, 403])
async def test_a_client_error_fails_the_video_at_once(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path, status: int
) -> None:
    cdn.status["/expired.mp4"] = status
    job = await finished_job(store, [f"{cdn_url}/expired.mp4"])
    downloader = Downloader(store, http, tmp_path / "media", allowed_origins={cdn_url})

    assert await downloader.run_once() == 1
    row = await video(store, job)
    assert (row.status, row.attempts, row.next_attempt_at) == (VideoStatus.FAILED, 1, None)
    assert row.error == f"HTTP {status} from {cdn_url}/expired.mp4"
    assert await downloader.run_once() == 0 and await downloader.next_due() is None
    assert cdn.hits["/expired.mp4"] == 1
    failed = [(e.job_id, e.video_index) for e in await store.pending_events() if e.type is EventType.VIDEO_FAILED]
    assert failed == [(job.id, 0)]
    assert not (tmp_path / "media" / job.root_id / job.id / "0.mp4").exists()


async def test_gives_up_after_max_attempts(
    timed_store: Store, clock: Clock, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.status["/down.mp4"] = 503
    job = await finished_job(timed_store, [f"{cdn_url}/down.mp4"])
    downloader = Downloader(timed_store, http, tmp_path / "media", allowed_origins={cdn_url}, max_attempts=3)

    for attempt in (1, 2):
        assert await downloader.run_once() == 1
        row = await video(timed_store, job)
        assert (row.status, row.attempts) == (VideoStatus.PENDING, attempt)
        clock.now += 1000
    assert await downloader.run_once() == 1
    row = await video(timed_store, job)
    assert (row.status, row.attempts, row.next_attempt_at) == (VideoStatus.FAILED, 3, None)
    assert "HTTP 503" in (row.error or "") and "gave up after 3 attempts" in (row.error or "")
    clock.now += 1000
    assert await downloader.run_once() == 0
    assert cdn.hits["/down.mp4"] == 3
    events = await timed_store.pending_events()
    assert [(e.type, e.video_index) for e in events if e.type is EventType.VIDEO_FAILED] == [
        (EventType.VIDEO_FAILED, 0)
    ]


async def test_follows_redirects_and_checks_every_hop(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.files["/real.mp4"] = SAMPLE + b"real"
    cdn.redirects["/short"] = "/hop"  # relative, resolved against the hop's own URL
    cdn.redirects["/hop"] = f"{cdn_url}/real.mp4"
    port = cdn_url.rsplit(":", 1)[1]
    cdn.redirects["/elsewhere"] = f"http://localhost:{port}/real.mp4"  # the same server, but not an allowed origin
    ok = await finished_job(store, [f"{cdn_url}/short"])
    refused = await finished_job(store, [f"{cdn_url}/elsewhere"], prompt="other")
    downloader = Downloader(store, http, tmp_path / "media", allowed_origins={cdn_url})

    assert await downloader.run_once() == 2
    row = await video(store, ok)
    assert (row.status, row.sha256) == (VideoStatus.DOWNLOADED, sha(SAMPLE + b"real"))
    row = await video(store, refused)
    assert row.status is VideoStatus.FAILED and row.attempts == 1
    assert (row.error or "").startswith(f"refusing http://localhost:{port}/real.mp4: localhost resolves to")
    assert cdn.hits == {"/short": 1, "/hop": 1, "/real.mp4": 1, "/elsewhere": 1}


async def test_refuses_a_redirect_to_a_private_address(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.redirects["/v.mp4"] = "http://10.0.0.1/internal.mp4"
    job = await finished_job(store, [f"{cdn_url}/v.mp4"])
    downloader = Downloader(store, http, tmp_path / "media", allowed_origins={cdn_url})

    assert await downloader.run_once() == 1
    row = await video(store, job)
    assert row.status is VideoStatus.FAILED and row.attempts == 1
    assert row.error == (
        "refusing http://10.0.0.1/internal.mp4: 10.0.0.1 is a private address"
        " (set REELHOOK_ALLOW_PRIVATE_URLS=1 to allow)"
    )
    assert cdn.hits == {"/v.mp4": 1}


async def test_stops_after_five_redirects(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.redirects["/loop"] = "/loop"
    job = await finished_job(store, [f"{cdn_url}/loop"])
    downloader = Downloader(store, http, tmp_path / "media", allowed_origins={cdn_url})

    assert await downloader.run_once() == 1
    row = await video(store, job)
    assert row.status is VideoStatus.FAILED and "more than 5 redirects" in (row.error or "")
    assert cdn.hits == {"/loop": 6}


async def test_refuses_loopback_by_default_without_a_request(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.files["/v.mp4"] = SAMPLE
    job = await finished_job(store, [f"{cdn_url}/v.mp4"])
    downloader = Downloader(store, http, tmp_path / "media")

    assert await downloader.run_once() == 1
    row = await video(store, job)
    assert (row.status, row.attempts) == (VideoStatus.FAILED, 1)
    assert row.error == (
        f"refusing {cdn_url}/v.mp4: 127.0.0.1 is a loopback address (set REELHOOK_ALLOW_PRIVATE_URLS=1 to allow)"
    )
    assert cdn.hits == {}
    assert [e.type for e in await store.pending_events()][-1] is EventType.VIDEO_FAILED


async def test_allow_private_reaches_the_local_cdn(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.files["/v.mp4"] = SAMPLE
    job = await finished_job(store, [f"{cdn_url}/v.mp4"])
    assert await Downloader(store, http, tmp_path / "media", allow_private=True).run_once() == 1
    assert (await video(store, job)).status is VideoStatus.DOWNLOADED


async def test_the_cdn_really_cuts_the_body_short(http: httpx.AsyncClient, cdn: CDN, cdn_url: str) -> None:
    cdn.files["/cut.mp4"] = SAMPLE
    cdn.cut_short["/cut.mp4"] = 1000
    with pytest.raises(httpx.RemoteProtocolError, match="received 1000 bytes, expected 2785"):
        async with http.stream("GET", f"{cdn_url}/cut.mp4") as response:
            async for _ in response.aiter_bytes():
                pass


async def test_a_body_cut_short_is_retried_and_leaves_no_file(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.files["/cut.mp4"] = SAMPLE * 40  # several chunks, so part of it reaches the disk first
    cdn.cut_short["/cut.mp4"] = len(SAMPLE) * 30
    job = await finished_job(store, [f"{cdn_url}/cut.mp4"])
    media = tmp_path / "media"
    downloader = Downloader(store, http, media, allowed_origins={cdn_url})

    assert await downloader.run_once() == 1
    row = await video(store, job)
    assert (row.status, row.attempts, row.path) == (VideoStatus.PENDING, 1, None)
    assert row.next_attempt_at is not None and "RemoteProtocolError" in (row.error or "")
    target = media / job.root_id / job.id / "0.mp4"
    assert not target.exists() and not target.with_suffix(".json").exists()
    assert leftovers(media) == []
    assert cdn.hits["/cut.mp4"] == 1


async def test_an_empty_body_is_retried(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.files["/empty.mp4"] = b""
    job = await finished_job(store, [f"{cdn_url}/empty.mp4"])
    assert await Downloader(store, http, tmp_path / "media", allowed_origins={cdn_url}).run_once() == 1
    row = await video(store, job)
    assert (row.status, row.attempts) == (VideoStatus.PENDING, 1) and "empty body" in (row.error or "")
    assert leftovers(tmp_path / "media") == [] and not list((tmp_path / "media").rglob("*.mp4"))


async def test_a_write_error_is_retried_and_says_so(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.files["/v.mp4"] = SAMPLE
    job = await finished_job(store, [f"{cdn_url}/v.mp4"])
    media = tmp_path / "media"
    media.write_bytes(b"")  # a file where the media directory should be: mkdir fails
    assert await Downloader(store, http, media, allowed_origins={cdn_url}).run_once() == 1
    row = await video(store, job)
    assert (row.status, row.attempts) == (VideoStatus.PENDING, 1)
    assert (row.error or "").startswith(f"cannot write {media / job.root_id / job.id / '0.mp4'}: ")


async def test_a_stale_part_file_is_overwritten(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.files["/v.mp4"] = SAMPLE
    job = await finished_job(store, [f"{cdn_url}/v.mp4"])
    media = tmp_path / "media"
    target = media / job.root_id / job.id / "0.mp4"
    target.parent.mkdir(parents=True)
    target.with_name("0.mp4.part").write_bytes(b"left by a crash" * 1000)  # longer than the real file

    assert await Downloader(store, http, media, allowed_origins={cdn_url}).run_once() == 1
    assert target.read_bytes() == SAMPLE and leftovers(media) == []


async def test_a_large_file_streams_to_disk_intact(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    body = SAMPLE + random.Random(7).randbytes(5 * 1024 * 1024)
    cdn.files["/big.mp4"] = body
    job = await finished_job(store, [f"{cdn_url}/big.mp4"])
    media = tmp_path / "media"

    assert await Downloader(store, http, media, allowed_origins={cdn_url}).run_once() == 1
    row = await video(store, job)
    assert (row.status, row.bytes, row.sha256) == (VideoStatus.DOWNLOADED, len(body), sha(body))
    assert sha((media / job.root_id / job.id / "0.mp4").read_bytes()) == sha(body)


@pytest.mark.parametrize(
    ("url", "ext"),
    [
        ("https://cdnb.ttapi.io/2024-04-02/27024084.png", "png"),
        ("https://cdn.midjourney.com/video/780b1227/0.mp4", "mp4"),
        ("https://x.example/a.JPEG?sig=1", "jpeg"),
        ("https://storage.fonedis.cc//video/1c67/0_0.mp4", "mp4"),
        ("https://x.example/download?id=7", "mp4"),
        ("https://x.example/evil.sh", "mp4"),
    ],
)
def test_the_file_extension_comes_from_the_url(url: str, ext: str) -> None:
    assert media_extension(url) == ext
