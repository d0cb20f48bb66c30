"""The download worker against a real CDN: a tiny ASGI app under uvicorn on 127.0.0.1, a real Store, real files."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import random
import re
import sys
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

from receiver.downloads import Downloader
from receiver.guarded_http import guarded_client
from receiver.mediafiles import media_extension
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
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> headers instead of video/mp4
    chunked: set[str] = field(default_factory=set)  # paths sent in pieces without a Content-Length
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
        extra = tuple(
            (k.encode(), v.encode()) for k, v in self.headers.get(path, {"content-type": "video/mp4"}).items()
        )
        if path in self.chunked:
            await send({"type": "http.response.start", "status": 200, "headers": list(extra)})
            for start in range(0, len(body), 16 * 1024):
                await send({"type": "http.response.body", "body": body[start : start + 16 * 1024], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await self._send(send, 200, body, extra)

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
        key = f"{job.root_id}/{job.id}/{i}.mp4"  # the row holds the media key, not where this machine keeps it
        assert (row.path, row.sha256, row.bytes, row.attempts) == (key, sha(body), len(body), 1)
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
    # More slots than videos, so only the in-progress set (not a full limiter, nor the per-origin limit) can keep
    # the second run off them.
    downloader = Downloader(store, http, tmp_path / "media", allowed_origins={cdn_url}, concurrency=8, per_origin=8)
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


async def test_the_guarded_client_refuses_at_connect_time_what_check_url_let_through(
    store: Store, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    # The Downloader trusts http://localhost:PORT, so check_url lets it pass: as if DNS had answered a public address
    # at check time. The client does not trust it, and refuses when it resolves the name again to connect.
    cdn.files["/v.mp4"] = SAMPLE
    local = cdn_url.replace("127.0.0.1", "localhost")
    job = await finished_job(store, [f"{local}/v.mp4"])
    media = tmp_path / "media"
    async with guarded_client(allow_private=False, allowed_origins=(), timeout=httpx.Timeout(5)) as http:
        assert await Downloader(store, http, media, allowed_origins={local}).run_once() == 1

    row = await video(store, job)
    assert (row.status, row.attempts) == (VideoStatus.FAILED, 1)
    port = cdn_url.rsplit(":", 1)[1]
    assert re.fullmatch(
        rf"refusing to connect to localhost:{port}: localhost resolves to (127\.0\.0\.1|::1), which is a loopback"
        r" address \(set REELHOOK_ALLOW_PRIVATE_URLS=1 to allow\)",
        row.error or "",
    )
    assert cdn.hits == {} and not media.exists()


async def test_the_guarded_client_downloads_from_an_allowed_origin(
    store: Store, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.files["/v.mp4"] = SAMPLE
    job = await finished_job(store, [f"{cdn_url}/v.mp4"])
    async with guarded_client(allow_private=False, allowed_origins={cdn_url}, timeout=httpx.Timeout(5)) as http:
        assert await Downloader(store, http, tmp_path / "media", allowed_origins={cdn_url}).run_once() == 1
    row = await video(store, job)
    assert (row.status, row.sha256) == (VideoStatus.DOWNLOADED, sha(SAMPLE))
    assert cdn.hits == {"/v.mp4": 1}


async def test_a_content_length_over_the_cap_fails_before_the_body_is_read(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.files["/big.mp4"] = SAMPLE + bytes(5000)
    job = await finished_job(store, [f"{cdn_url}/big.mp4"])
    media = tmp_path / "media"
    downloader = Downloader(store, http, media, allowed_origins={cdn_url}, max_bytes=len(SAMPLE) + 4999)

    assert await downloader.run_once() == 1
    row = await video(store, job)
    assert (row.status, row.attempts, row.next_attempt_at) == (VideoStatus.FAILED, 1, None)
    assert row.error == (
        f"refusing {cdn_url}/big.mp4: its Content-Length, {len(SAMPLE) + 5000}, is over the download cap of"
        f" {len(SAMPLE) + 4999} bytes (REELHOOK_MAX_DOWNLOAD_BYTES raises it)"
    )
    assert not media.exists()  # judged on the headers: not even the job's directory was made
    assert await downloader.run_once() == 0 and cdn.hits == {"/big.mp4": 1}


async def test_a_body_that_streams_past_the_cap_is_cut_off_and_removed(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cdn.files["/endless.mp4"] = SAMPLE + bytes(300 * 1024)  # no Content-Length: only counting can stop it
    cdn.chunked.add("/endless.mp4")
    job = await finished_job(store, [f"{cdn_url}/endless.mp4"])
    media = tmp_path / "media"
    part = media / job.root_id / job.id / "0.mp4.part"
    part_seen: list[int] = []
    downloader = Downloader(
        store,
        http,
        media,
        allowed_origins={cdn_url},
        max_bytes=200 * 1024,
        fault=lambda point: part_seen.append(part.stat().st_size),  # called once the first chunk is on disk
    )

    assert await downloader.run_once() == 1
    row = await video(store, job)
    assert (row.status, row.attempts, row.path) == (VideoStatus.FAILED, 1, None)
    assert row.error == (
        f"refusing {cdn_url}/endless.mp4: its body is over the download cap of {200 * 1024} bytes"
        " (REELHOOK_MAX_DOWNLOAD_BYTES raises it)"
    )
    assert len(part_seen) == 1 and 0 < part_seen[0] <= 200 * 1024  # it was being written (its first block)...
    assert leftovers(media) == [] and list((media / job.root_id / job.id).iterdir()) == []  # ...and is gone


async def test_the_cap_counts_decoded_bytes_not_compressed_ones(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    body = SAMPLE + bytes(1024 * 1024)
    cdn.files["/bomb.mp4"] = gzip.compress(body)  # a few kB on the wire, a MiB on disk
    cdn.headers["/bomb.mp4"] = {"content-type": "video/mp4", "content-encoding": "gzip"}
    job = await finished_job(store, [f"{cdn_url}/bomb.mp4"])
    media = tmp_path / "media"
    assert await Downloader(store, http, media, allowed_origins={cdn_url}, max_bytes=512 * 1024).run_once() == 1
    row = await video(store, job)
    assert row.status is VideoStatus.FAILED and "its body is over the download cap of 524288 bytes" in (row.error or "")
    assert leftovers(media) == [] and not list(media.rglob("*.mp4"))


async def test_a_response_that_says_it_is_not_media_is_refused_before_its_body(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    types = ["text/html; charset=utf-8", "text/plain", "application/json", "text/csv", "application/xml"]
    for i, content_type in enumerate(types):
        cdn.files[f"/{i}.mp4"] = SAMPLE  # a real video body: a CDN that labels it so is still not serving media
        cdn.headers[f"/{i}.mp4"] = {"content-type": content_type}
    job = await finished_job(store, [f"{cdn_url}/{i}.mp4" for i in range(len(types))])
    media = tmp_path / "media"
    assert await Downloader(store, http, media, allowed_origins={cdn_url}).run_once() == len(types)
    rows = await store.get_videos(job.id)
    assert [(row.status, row.attempts, row.error) for row in rows] == [
        (
            VideoStatus.FAILED,
            1,
            f"refusing {cdn_url}/{i}.mp4: the server sent {t.split(';')[0]}, not a video or an image",
        )
        for i, t in enumerate(types)
    ]
    assert not media.exists()  # judged on the headers: not even the job's directory was made


async def test_media_and_raw_bytes_are_kept_whatever_their_label(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    labels: list[dict[str, str]] = [
        {"content-type": "video/mp4"},
        {"content-type": "application/octet-stream"},
        {"content-type": "binary/octet-stream"},
        {"content-type": "Video/QuickTime"},
        {},  # no Content-Type at all
    ]
    for i, headers in enumerate(labels):
        cdn.files[f"/{i}.mp4"] = SAMPLE + bytes([i])
        cdn.headers[f"/{i}.mp4"] = headers
    job = await finished_job(store, [f"{cdn_url}/{i}.mp4" for i in range(len(labels))])
    assert await Downloader(store, http, tmp_path / "media", allowed_origins={cdn_url}).run_once() == len(labels)
    assert [row.sha256 for row in await store.get_videos(job.id)] == [sha(SAMPLE + bytes([i])) for i in range(5)]


async def test_a_body_that_is_not_the_kind_its_url_names_is_never_kept(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cases = [
        ("page.mp4", b"<!DOCTYPE html><html>Access denied</html>", "an MP4 video ('ftyp' at byte 4)"),
        ("tile.png", SAMPLE, "a PNG image"),
        ("clip.webm", SAMPLE, "a WebM video (1A 45 DF A3)"),
        ("tiny.gif", b"GIF8", "a GIF image (GIF87a or GIF89a)"),  # shorter than the head a check reads
    ]
    for name, body, _ in cases:
        cdn.files[f"/{name}"] = body
        cdn.headers[f"/{name}"] = {"content-type": "application/octet-stream"}
    job = await finished_job(store, [f"{cdn_url}/{name}" for name, _, _ in cases])
    media = tmp_path / "media"
    assert await Downloader(store, http, media, allowed_origins={cdn_url}).run_once() == len(cases)
    rows = await store.get_videos(job.id)
    assert [(row.status, row.attempts, row.path, row.error) for row in rows] == [
        (
            VideoStatus.FAILED,
            1,
            None,
            f"refusing {cdn_url}/{name}: the body is not {kind}: it starts with {body[:12]!r}",
        )
        for name, body, kind in cases
    ]
    assert [p for p in media.rglob("*") if p.is_file()] == []  # never at its final path, and no .part either


async def test_each_kind_with_its_signature_is_kept(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    cases = [
        ("tile.png", (Path(__file__).parents[2] / "submitter" / "simulators" / "sample.png").read_bytes()),
        ("a.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100)),
        ("a.webp", b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(100)),
        ("a.gif", b"GIF89a" + bytes(100)),
        ("a.webm", b"\x1a\x45\xdf\xa3" + bytes(100)),
        ("a.mov", b"\x00\x00\x00\x14ftypqt  " + bytes(100)),
        ("a.jpeg", b"\xff\xd8\xff"),  # as short as a signature
    ]
    for name, body in cases:
        cdn.files[f"/{name}"] = body
    job = await finished_job(store, [f"{cdn_url}/{name}" for name, _ in cases])
    media = tmp_path / "media"
    assert await Downloader(store, http, media, allowed_origins={cdn_url}).run_once() == len(cases)
    rows = await store.get_videos(job.id)
    assert [(row.status, row.sha256) for row in rows] == [(VideoStatus.DOWNLOADED, sha(body)) for _, body in cases]
    for i, (name, body) in enumerate(cases):
        assert (media / job.root_id / job.id / f"{i}.{name.rsplit('.', 1)[1]}").read_bytes() == body


# Runs one Downloader.run_once in a process that may not write files past `limit` bytes: the kernel answers a write
# beyond it with EFBIG, as a full disk answers with ENOSPC, and no mock stands between the write and the error.
FILE_SIZE_LIMITED = """
import resource, signal, sys
import anyio, httpx
from pathlib import Path
from receiver.downloads import Downloader
from storage import Store

db, media, origin, limit = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # or the kernel kills the process instead of failing the write
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

async def main() -> None:
    async with await Store.open(db) as store, httpx.AsyncClient(trust_env=False) as http:
        print(await Downloader(store, http, media, allowed_origins={origin}).run_once())

anyio.run(main)
"""


async def test_a_write_that_fails_for_lack_of_space_is_retried_and_completes_later(
    timed_store: Store, clock: Clock, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    body = SAMPLE + random.Random(3).randbytes(3 * 1024 * 1024)
    limit = 2 * 1024 * 1024  # well above the database and its WAL, well below the video
    cdn.files["/v.mp4"] = body
    job = await finished_job(timed_store, [f"{cdn_url}/v.mp4"])
    db = tmp_path / "timed.sqlite3"
    assert db.stat().st_size < limit // 4 and db.with_name(db.name + "-wal").stat().st_size < limit // 4
    media = tmp_path / "media"
    target = media / job.root_id / job.id / "0.mp4"

    root = Path(__file__).parents[2]
    argv = [sys.executable, "-c", FILE_SIZE_LIMITED, str(db), str(media), cdn_url, str(limit)]
    with anyio.fail_after(20):
        done = await anyio.run_process(argv, cwd=root, env=os.environ | {"PYTHONPATH": str(root)}, check=False)
    assert (done.returncode, done.stdout) == (0, b"1\n"), done.stderr.decode()[-3000:]

    row = await video(timed_store, job)
    assert (row.status, row.attempts, row.path, row.sha256) == (VideoStatus.PENDING, 1, None, None)
    assert row.error == f"cannot write {target}: [Errno {errno.EFBIG}] File too large (is the disk full?)"
    assert row.next_attempt_at is not None and clock.now < row.next_attempt_at < time.time() + 60
    assert leftovers(media) == [] and not target.exists() and not target.with_suffix(".json").exists()
    assert [e.type for e in await timed_store.pending_events() if e.job_id == job.id and e.video_index == 0] == []

    clock.now += 1000  # past the retry time; this process has no limit
    assert await Downloader(timed_store, http, media, allowed_origins={cdn_url}).run_once() == 1
    row = await video(timed_store, job)
    assert (row.status, row.attempts, row.sha256, row.bytes) == (VideoStatus.DOWNLOADED, 2, sha(body), len(body))
    assert sha(target.read_bytes()) == sha(body) and leftovers(media) == []
    assert cdn.hits["/v.mp4"] == 2
