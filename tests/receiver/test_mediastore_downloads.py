"""The download worker writing through each MediaStore: a folder, and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from receiver.downloads import Downloader
from receiver.posterqueue import PosterQueue
from receiver.posters import poster_key
from receiver.serving import running
from storage import Store, VideoStatus
from storage.media import MediaStore, get_sidecar
from storage.media.local import LocalMediaStore
from tests.receiver.test_downloads import CDN, finished_job, video
from tests.seaweed import S3Server

pytestmark = pytest.mark.anyio

SAMPLE = (Path(__file__).parents[2] / "submitter" / "simulators" / "sample.mp4").read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
def media(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MediaStore]:
    if request.param == "local":
        yield LocalMediaStore(tmp_path / "media")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        yield server.store()


@pytest.fixture
def cdn() -> CDN:
    return CDN()


@pytest.fixture
async def cdn_url(cdn: CDN) -> AsyncIterator[str]:
    async with running(cdn) as base_url:  # type: ignore[arg-type]
        yield base_url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


async def stored(media: MediaStore, key: str) -> bytes:
    return b"".join([piece async for piece in media.read(key)])


async def test_a_video_lands_in_the_store_with_its_sidecar_and_poster(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, media: MediaStore
) -> None:
    cdn.files["/v.mp4"] = SAMPLE
    job = await finished_job(store, [f"{cdn_url}/v.mp4"])
    posters = PosterQueue(media)

    assert await Downloader(store, http, media, allowed_origins={cdn_url}, posters=posters).run_once() == 1
    assert await posters.run_once() == 1  # the posters worker, after the download

    key = f"{job.root_id}/{job.id}/0.mp4"
    row = await video(store, job)
    assert (row.status, row.path, row.sha256, row.bytes) == (VideoStatus.DOWNLOADED, key, sha(SAMPLE), len(SAMPLE))
    assert await stored(media, key) == SAMPLE
    sidecar = json.loads(await get_sidecar(media, key) or b"null")
    assert (sidecar["sha256"], sidecar["bytes"], sidecar["job_id"]) == (sha(SAMPLE), len(SAMPLE), job.id)
    poster = await media.get_bytes(poster_key(key))  # for a bucket, made from a temporary copy
    assert poster is not None and poster[:2] == b"\xff\xd8"


async def test_an_object_already_at_the_key_is_adopted_and_never_overwritten(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, media: MediaStore
) -> None:
    """What a crash after the write, or another instance that fetched the same video first, leaves: the object is
    whole (only whole, checked bodies are ever committed), so it is recorded as it is and not fetched again."""
    cdn.files["/v.mp4"] = SAMPLE
    job = await finished_job(store, [f"{cdn_url}/v.mp4"])
    key = f"{job.root_id}/{job.id}/0.mp4"
    earlier = SAMPLE + b"written by the first delivery"

    async def once() -> AsyncIterator[bytes]:
        yield earlier

    await media.write(key, once())

    assert await Downloader(store, http, media, allowed_origins={cdn_url}).run_once() == 1
    row = await video(store, job)
    assert (row.status, row.sha256, row.bytes) == (VideoStatus.DOWNLOADED, sha(earlier), len(earlier))
    assert await stored(media, key) == earlier
    assert cdn.hits["/v.mp4"] == 0


async def test_a_refused_body_leaves_nothing_in_the_store(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, media: MediaStore
) -> None:
    cdn.files["/v.mp4"] = b"<html>" + bytes(300 * 1024)  # no MP4 signature: refused as it streams
    cdn.chunked.add("/v.mp4")
    job = await finished_job(store, [f"{cdn_url}/v.mp4"])

    assert await Downloader(store, http, media, allowed_origins={cdn_url}).run_once() == 1
    row = await video(store, job)
    assert row.status is VideoStatus.FAILED and "refusing" in (row.error or "")
    assert not await media.exists(f"{job.root_id}/{job.id}/0.mp4")


async def test_a_part_left_beside_a_whole_file_is_removed_when_the_file_is_adopted(
    store: Store, http: httpx.AsyncClient, cdn: CDN, cdn_url: str, tmp_path: Path
) -> None:
    """A crash between the link that commits a local file and the unlink of its `.part` leaves both; the next
    attempt adopts the file and removes the leftover (tests/faults/test_crashes.py caught this once)."""
    cdn.files["/v.mp4"] = SAMPLE
    job = await finished_job(store, [f"{cdn_url}/v.mp4"])
    media = LocalMediaStore(tmp_path / "media")
    target = media.path(f"{job.root_id}/{job.id}/0.mp4")
    target.parent.mkdir(parents=True)
    target.write_bytes(SAMPLE)
    target.with_name("0.mp4.part").write_bytes(SAMPLE)

    assert await Downloader(store, http, media, allowed_origins={cdn_url}).run_once() == 1
    assert (await video(store, job)).sha256 == sha(SAMPLE)
    assert sorted(p.name for p in target.parent.iterdir()) == ["0.json", "0.mp4"]
