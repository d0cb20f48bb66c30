"""The download worker against origins that attack it: bombs and drips, served by raw sockets on 127.0.0.1.

A framework would tidy the attack away (uvicorn would not send `gzip, gzip` over a tiny body with a straight face), so
each origin here is an asyncio stream server that writes its answer byte by byte, as a hostile one would. The
Downloader runs on `guarded_client`, as the service builds it, with a real Store and real files.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import hashlib
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest

from receiver.downloads import Downloader
from receiver.guarded_http import guarded_client
from receiver.settings import Settings, SettingsError
from storage import CallbackResult, Job, JobStatus, NewJob, Store, Video, VideoStatus

pytestmark = pytest.mark.anyio

SAMPLE = (Path(__file__).parents[2] / "submitter" / "simulators" / "sample.mp4").read_bytes()
FTYP = b"\x00\x00\x00\x18ftypisom"  # the head of an MP4: a bomb behind it passes the content check
MiB = 1024 * 1024
RSS_GROWTH_MIB = 48  # "flat": the download's own buffers are a few MiB; today's code grew by hundreds, or gigabytes

Answer = Callable[[str, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Origin:
    """A raw HTTP/1.1 server: records each request's headers and how many are open, and answers with `answer`."""

    answer: Answer
    requests: list[dict[str, str]] = field(default_factory=list)
    open: int = 0
    most_open: int = 0
    opened: Callable[[], None] = lambda: None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            self.requests.append(
                {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
            )
            self.opened()
            # Stop answering the moment the downloader hangs up, so `open` counts the downloader's slots, not ours.
            answer = asyncio.ensure_future(self.answer(head[0].split(" ")[1], writer))
            hangup = asyncio.ensure_future(reader.read())
            await asyncio.wait((answer, hangup), return_when=asyncio.FIRST_COMPLETED)
            for task in (answer, hangup):
                task.cancel()
            await asyncio.gather(answer, hangup, return_exceptions=True)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the downloader hung up on us, which is the point
        finally:
            self.open -= 1
            writer.close()


@contextlib.asynccontextmanager
async def serving(origin: Origin) -> AsyncIterator[str]:
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await origin.handle(reader, writer)
        except asyncio.CancelledError:
            pass  # we cancelled it, at the end of the block; finishing quietly keeps asyncio from logging it
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in list(tasks):  # a drip still dripping to nobody
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def head(length: int, **headers: str) -> bytes:
    lines = [
        "HTTP/1.1 200 OK",
        "Content-Type: video/mp4",
        f"Content-Length: {length}",
        "Connection: close",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sending(body: bytes, **headers: str) -> Answer:
    async def answer(path: str, writer: asyncio.StreamWriter) -> None:
        writer.write(head(len(body), **headers) + body)
        await writer.drain()

    return answer


@dataclass
class Drip:
    """Answers with SAMPLE one byte every `every` seconds; once `honest`, all of it at once."""

    every: float = 0.2
    honest: bool = False

    async def __call__(self, path: str, writer: asyncio.StreamWriter) -> None:
        writer.write(head(len(SAMPLE)))
        if self.honest:
            writer.write(SAMPLE)
        else:
            for i in range(len(SAMPLE)):
                writer.write(SAMPLE[i : i + 1])
                await writer.drain()
                await asyncio.sleep(self.every)
        await writer.drain()


@functools.cache
def bomb(decoded_mib: int) -> bytes:
    """A gzip member of FTYP and `decoded_mib` MiB of zeros, ~1 kB per MiB, built without deflating a GiB: after a
    full flush the compressor starts afresh, so every further MiB of zeros compresses to the same bytes."""
    zeros = bytes(MiB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(FTYP + zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush()
    crc = zlib.crc32(FTYP)
    for _ in range(decoded_mib):
        crc = zlib.crc32(zeros, crc)
    size = (len(FTYP) + decoded_mib * MiB) & 0xFFFFFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + first + again * (decoded_mib - 1) + end + struct.pack("<II", crc, size)


def status_kib(field_name: str) -> int:
    match = re.search(rf"^{field_name}:\s+(\d+) kB$", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match is not None, f"/proc/self/status has no {field_name}"
    return int(match.group(1))


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[list[float]]:
    """Yields a list that holds, after the block, how far this process's peak RSS rose above its RSS before it.

    Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS, so whatever earlier tests used does not hide
    what this block uses."""
    clear_refs = Path("/proc/self/clear_refs")
    if not clear_refs.exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    clear_refs.write_text("5")
    before = status_kib("VmRSS")
    growth: list[float] = []
    yield growth
    growth.append((status_kib("VmHWM") - before) / 1024)


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def build(*origins: str) -> httpx.AsyncClient:
        client = guarded_client(allow_private=False, allowed_origins=origins, timeout=httpx.Timeout(30.0, connect=10.0))
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def timed_store(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "timed.sqlite3", clock=clock) as opened:
        yield opened


async def finished_job(store: Store, urls: list[str]) -> Job:
    job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "a fox", "image_url": "https://i/x.png"}))
    await store.claim_submission(job.id)
    result = CallbackResult(provider_job_id=f"p-{job.id}", status=JobStatus.SUCCEEDED, media_urls=tuple(urls))
    await store.record_callback(job.id, "ttapi", body=b"{}", headers=[], result=result)
    return job


async def only_video(store: Store, job: Job) -> Video:
    (row,) = await store.get_videos(job.id)
    return row


def leftovers(media: Path) -> list[Path]:
    return [p for p in media.rglob("*") if p.is_file()]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Decompression bombs


async def test_stacked_encodings_are_refused_before_decoding_and_memory_stays_flat(
    store: Store, guarded: Callable[..., httpx.AsyncClient], tmp_path: Path
) -> None:
    body = gzip.compress(bomb(1024), 9)  # 1 GiB decoded, a few kB on the wire
    assert len(body) < 4096
    origin = Origin(sending(body, Content_Encoding="gzip, gzip"))
    media = tmp_path / "media"
    async with serving(origin) as url:
        job = await finished_job(store, [f"{url}/bomb.mp4"])
        downloader = Downloader(store, guarded(url), media, allowed_origins={url})
        with anyio.fail_after(30), peak_rss_growth() as growth:
            assert await downloader.run_once() == 1

    row = await only_video(store, job)
    assert (row.status, row.attempts, row.path) == (VideoStatus.FAILED, 1, None)
    assert row.error == (
        f"refusing {url}/bomb.mp4: its body is encoded 2 times (gzip, gzip); reelhook asks for identity and decodes"
        " at most one gzip or deflate layer"
    )
    assert origin.requests[0]["accept-encoding"] == "identity"
    assert growth[0] < RSS_GROWTH_MIB, f"peak RSS grew by {growth[0]:.0f} MiB"
    assert leftovers(media) == []


async def test_a_gzip_bomb_is_decoded_a_piece_at_a_time_and_refused_at_the_cap(
    store: Store, guarded: Callable[..., httpx.AsyncClient], tmp_path: Path
) -> None:
    body = bomb(1024)  # 1 GiB decoded, ~1 MiB on the wire, and an MP4's head, so only the cap can stop it
    origin = Origin(sending(body, Content_Encoding="gzip"))
    media = tmp_path / "media"
    async with serving(origin) as url:
        job = await finished_job(store, [f"{url}/bomb.mp4"])
        downloader = Downloader(store, guarded(url), media, allowed_origins={url}, max_bytes=16 * MiB)
        with anyio.fail_after(30), peak_rss_growth() as growth:
            assert await downloader.run_once() == 1

    row = await only_video(store, job)
    assert (row.status, row.attempts, row.path) == (VideoStatus.FAILED, 1, None)
    assert row.error == (
        f"refusing {url}/bomb.mp4 (sent as gzip): its body is over the download cap of {16 * MiB} bytes"
        " (REELHOOK_MAX_DOWNLOAD_BYTES raises it)"
    )
    assert origin.requests[0]["accept-encoding"] == "identity"
    assert growth[0] < RSS_GROWTH_MIB, f"peak RSS grew by {growth[0]:.0f} MiB"
    assert leftovers(media) == []


async def test_an_encoding_reelhook_cannot_bound_is_refused(
    store: Store, guarded: Callable[..., httpx.AsyncClient], tmp_path: Path
) -> None:
    origin = Origin(sending(SAMPLE, Content_Encoding="br"))
    async with serving(origin) as url:
        job = await finished_job(store, [f"{url}/v.mp4"])
        assert await Downloader(store, guarded(url), tmp_path / "media", allowed_origins={url}).run_once() == 1
    row = await only_video(store, job)
    assert (row.status, row.error) == (
        VideoStatus.FAILED,
        f"refusing {url}/v.mp4: its Content-Encoding is br, which reelhook did not ask for (it asks for identity)"
        " and does not decode",
    )


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", lambda data: gzip.compress(data)),
        ("deflate", zlib.compress),  # as the RFC says: zlib-wrapped
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # as some servers send it: raw
    ],
)
async def test_one_honest_encoding_is_still_decoded(
    store: Store,
    guarded: Callable[..., httpx.AsyncClient],
    tmp_path: Path,
    coding: str,
    encode: Callable[[bytes], bytes],
) -> None:
    video = SAMPLE + bytes(300 * 1024)  # decodes to several pieces
    origin = Origin(sending(encode(video), Content_Encoding=coding))
    media = tmp_path / "media"
    async with serving(origin) as url:
        job = await finished_job(store, [f"{url}/v.mp4"])
        assert await Downloader(store, guarded(url), media, allowed_origins={url}).run_once() == 1
    row = await only_video(store, job)
    assert (row.status, row.sha256, row.bytes) == (VideoStatus.DOWNLOADED, sha(video), len(video))
    assert sha((media / job.root_id / job.id / "0.mp4").read_bytes()) == sha(video)


# Drips: a deadline per attempt, and a share of the slots per origin


async def test_a_head_past_100_kib_is_refused_and_retried(
    store: Store, guarded: Callable[..., httpx.AsyncClient], tmp_path: Path
) -> None:
    # 90 header lines of 2 KiB: fewer lines than http.client's limit of 100, over httpcore's 100 KiB for a head.
    padding = {f"X_Pad_{number}": "a" * 2048 for number in range(90)}
    origin = Origin(sending(SAMPLE, **padding))
    media = tmp_path / "media"
    async with serving(origin) as url:
        job = await finished_job(store, [f"{url}/v.mp4"])
        assert await Downloader(store, guarded(url), media, allowed_origins={url}).run_once() == 1

    row = await only_video(store, job)
    assert (row.status, row.attempts, row.path) == (VideoStatus.PENDING, 1, None)
    assert (row.error or "").startswith(f"RemoteProtocolError fetching {url}/v.mp4: ")
    assert leftovers(media) == []


async def test_a_drip_origin_holds_only_its_share_and_other_jobs_keep_arriving(
    timed_store: Store, clock: Clock, guarded: Callable[..., httpx.AsyncClient], tmp_path: Path
) -> None:
    store = timed_store
    dripping = anyio.Event()
    drip = Drip()
    slow = Origin(drip, opened=lambda: dripping.set() if slow.open == 2 else None)
    fast = Origin(sending(SAMPLE))
    media = tmp_path / "media"
    arrived = anyio.Event()
    recorded: list[int] = []

    def on_recorded() -> None:
        recorded.append(1)
        if len(recorded) == 4:
            arrived.set()

    async with serving(slow) as slow_url, serving(fast) as fast_url:
        dripped = await finished_job(store, [f"{slow_url}/{i}.mp4" for i in range(4)])
        downloader = Downloader(
            store,
            guarded(slow_url, fast_url),
            media,
            allowed_origins={slow_url, fast_url},
            per_origin=2,
            min_rate=1000,  # bytes/s; a drip sends 5
            head_start=1.5,  # long enough for the honest job to arrive and be fetched while the drips hold
            on_recorded=on_recorded,
        )
        counts: list[int] = []

        async def run() -> None:
            counts.append(await downloader.run_once())

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await dripping.wait()
                # The run has two slots left and nothing it may take: the drips' other videos wait for their origin.
                honest = await finished_job(store, [f"{fast_url}/{i}.mp4" for i in range(4)])
                downloader.wake()  # as a callback does (Service.wake_all)
                await arrived.wait()
                holding = slow.open
                attempted_meanwhile = [row.attempts for row in await store.get_videos(dripped.id)]

        assert holding == 2 and slow.most_open == 2  # the drips never had more than their origin's share
        assert attempted_meanwhile == [0, 0, 0, 0]  # and were all still holding on when the honest files were in
        for row in await store.get_videos(honest.id):
            assert (row.status, row.sha256) == (VideoStatus.DOWNLOADED, sha(SAMPLE))
        # Each drip attempt ended at its deadline, and is due again later, like any transient failure.
        assert counts == [8]
        rows = await store.get_videos(dripped.id)
        for row in rows:
            assert (row.status, row.attempts) == (VideoStatus.PENDING, 1)
            assert row.error is not None and re.fullmatch(
                rf"{slow_url}/{row.index}\.mp4 sent \d+ bytes in \d+\.\d s, slower than the minimum average of 1000"
                r" bytes/s \(REELHOOK_DOWNLOAD_MIN_RATE\)",
                row.error,
            ), row.error
            assert row.next_attempt_at is not None and row.next_attempt_at > clock.now
        assert not [p for p in leftovers(media) if p.suffix == ".part"]

        # Later the origin behaves, and the retries fetch every file.
        drip.honest = True
        clock.now = max(row.next_attempt_at or 0 for row in rows) + 1
        with anyio.fail_after(20):
            assert await downloader.run_once() == 4
        for row in await store.get_videos(dripped.id):
            assert (row.status, row.attempts, row.sha256) == (VideoStatus.DOWNLOADED, 2, sha(SAMPLE))


async def test_an_attempt_ends_at_the_ceiling_however_steadily_it_goes(
    timed_store: Store, clock: Clock, guarded: Callable[..., httpx.AsyncClient], tmp_path: Path
) -> None:
    origin = Origin(Drip())  # 5 bytes/s: above this test's minimum rate, so only the ceiling can end it
    media = tmp_path / "media"
    async with serving(origin) as url:
        job = await finished_job(timed_store, [f"{url}/v.mp4"])
        downloader = Downloader(
            timed_store, guarded(url), media, allowed_origins={url}, min_rate=1, head_start=0.2, deadline=1.0
        )
        with anyio.fail_after(10):
            assert await downloader.run_once() == 1
    row = await only_video(timed_store, job)
    assert (row.status, row.attempts, row.error) == (
        VideoStatus.PENDING,
        1,
        f"{url}/v.mp4 took longer than 1 s, the most a download may take (REELHOOK_DOWNLOAD_DEADLINE)",
    )
    assert row.next_attempt_at is not None and row.next_attempt_at > clock.now
    assert leftovers(media) == []


async def test_a_slow_download_that_keeps_its_average_is_not_cut_off(
    store: Store, guarded: Callable[..., httpx.AsyncClient], tmp_path: Path
) -> None:
    async def steady(path: str, writer: asyncio.StreamWriter) -> None:
        writer.write(head(len(SAMPLE)))
        for start in range(0, len(SAMPLE), 400):  # ~4 kB/s for ~0.7 s, far past the head start
            writer.write(SAMPLE[start : start + 400])
            await writer.drain()
            await asyncio.sleep(0.1)

    media = tmp_path / "media"
    async with serving(Origin(steady)) as url:
        job = await finished_job(store, [f"{url}/v.mp4"])
        downloader = Downloader(store, guarded(url), media, allowed_origins={url}, min_rate=1000, head_start=0.2)
        with anyio.fail_after(10):
            assert await downloader.run_once() == 1
    row = await only_video(store, job)
    assert (row.status, row.attempts, row.sha256) == (VideoStatus.DOWNLOADED, 1, sha(SAMPLE))


def test_the_download_pacing_and_share_are_settings() -> None:
    assert Settings.from_env({}).download_min_rate == 32 * 1024
    assert (Settings.from_env({}).download_deadline, Settings.from_env({}).download_per_origin) == (600.0, 2)
    settings = Settings.from_env(
        {"REELHOOK_DOWNLOAD_MIN_RATE": "1000", "REELHOOK_DOWNLOAD_DEADLINE": "90", "REELHOOK_DOWNLOAD_PER_ORIGIN": "3"}
    )
    assert (settings.download_min_rate, settings.download_deadline, settings.download_per_origin) == (1000, 90.0, 3)
    with pytest.raises(SettingsError, match="REELHOOK_DOWNLOAD_DEADLINE must be a number of seconds above 0"):
        Settings.from_env({"REELHOOK_DOWNLOAD_DEADLINE": "0"})
    with pytest.raises(SettingsError, match="REELHOOK_DOWNLOAD_PER_ORIGIN must be a whole number above 0"):
        Settings.from_env({"REELHOOK_DOWNLOAD_PER_ORIGIN": "0"})
