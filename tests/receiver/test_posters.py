"""Poster frames: real JPEGs from the real H.264 sample of the simulators; none, but the download kept, when broken."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from receiver.downloads import Downloader
from receiver.posterqueue import PosterQueue
from receiver.posters import make_poster, poster_key
from receiver.serving import running
from storage import CallbackResult, JobStatus, NewJob, Store, VideoStatus
from storage.media.local import LocalMediaStore

pytestmark = pytest.mark.anyio

SIMULATORS = Path(__file__).parents[2] / "submitter" / "simulators"
SAMPLE = (SIMULATORS / "sample.mp4").read_bytes()
PNG = (SIMULATORS / "sample.png").read_bytes()
BROKEN = SAMPLE[:40] + bytes(range(256)) * 8  # an MP4's signature, then nothing FFmpeg can decode


def decoded_size(jpeg: bytes) -> tuple[int, int]:
    """Decode the JPEG for real (FFmpeg's MJPEG decoder) and return its width and height."""
    with av.open(io.BytesIO(jpeg)) as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


def wide_video(path: Path, width: int = 960, height: int = 540) -> Path:
    """A short H.264 clip larger than a poster, so the scaling shows."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for i in range(3):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(i * 40 + 16) % 256]) * plane.buffer_size)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


async def test_the_sample_video_gets_a_jpeg_poster_beside_it(tmp_path: Path) -> None:
    video = tmp_path / "0.mp4"
    video.write_bytes(SAMPLE)
    made = await make_poster(LocalMediaStore(tmp_path), "0.mp4")
    assert made == "0.poster.jpg" == poster_key("0.mp4")
    jpeg = (tmp_path / made).read_bytes()
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    assert decoded_size(jpeg) == (64, 64)  # the sample is smaller than a poster: kept at its size
    assert video.read_bytes() == SAMPLE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.mp4", "0.poster.jpg"]  # no .tmp left behind


async def test_a_wide_video_is_scaled_to_480_pixels_keeping_its_shape(tmp_path: Path) -> None:
    wide_video(tmp_path / "1.mp4")
    made = await make_poster(LocalMediaStore(tmp_path), "1.mp4")
    assert made is not None
    assert decoded_size((tmp_path / made).read_bytes()) == (480, 270)


async def test_an_image_tile_gets_a_jpeg_thumbnail(tmp_path: Path) -> None:
    tile = tmp_path / "2.png"
    tile.write_bytes(PNG)
    made = await make_poster(LocalMediaStore(tmp_path), "2.png")
    assert made == "2.poster.jpg"
    assert (tmp_path / made).read_bytes()[:2] == b"\xff\xd8"
    assert decoded_size((tmp_path / made).read_bytes()) == (64, 64)


@pytest.mark.parametrize("body", [BROKEN, b"", SAMPLE[: len(SAMPLE) // 3]], ids=["garbage", "empty", "truncated"])
async def test_a_broken_file_gets_no_poster_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    video = tmp_path / "0.mp4"
    video.write_bytes(body)
    with caplog.at_level(logging.WARNING, logger="reelhook.posters"):
        assert await make_poster(LocalMediaStore(tmp_path), "0.mp4") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.mp4"]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"no poster for {video}"]


class CDN:
    """Serves fixed bodies as video/mp4 on 127.0.0.1."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = self.files[scope["path"]]
        head = [(b"content-type", b"video/mp4"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def cdn_url() -> AsyncIterator[str]:
    async with running(CDN({"/good.mp4": SAMPLE, "/broken.mp4": BROKEN})) as base_url:  # type: ignore[arg-type]
        yield base_url


async def test_a_download_makes_a_poster_and_a_broken_video_stays_downloaded_without_one(
    store: Store, cdn_url: str, tmp_path: Path
) -> None:
    job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "a fox", "image_url": "https://i/x.png"}))
    await store.claim_submission(job.id)
    urls = (f"{cdn_url}/good.mp4", f"{cdn_url}/broken.mp4")
    result = CallbackResult(provider_job_id="p-1", status=JobStatus.SUCCEEDED, media_urls=urls)
    await store.record_callback(job.id, "ttapi", body=b"{}", headers=[], result=result)
    media = tmp_path / "media"
    posters = PosterQueue(LocalMediaStore(media))
    async with httpx.AsyncClient(trust_env=False) as http:
        assert await Downloader(store, http, media, allowed_origins={cdn_url}, posters=posters).run_once() == 2
    assert await posters.run_once() == 2  # the posters worker: both tried, one made

    rows = await store.get_videos(job.id)
    assert [(row.status, row.bytes) for row in rows] == [
        (VideoStatus.DOWNLOADED, len(SAMPLE)),
        (VideoStatus.DOWNLOADED, len(BROKEN)),
    ]
    folder = media / job.root_id / job.id
    assert sorted(p.name for p in folder.iterdir()) == ["0.json", "0.mp4", "0.poster.jpg", "1.json", "1.mp4"]
    assert decoded_size((folder / "0.poster.jpg").read_bytes()) == (64, 64)
    assert (folder / "1.mp4").read_bytes() == BROKEN
