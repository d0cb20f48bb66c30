"""End to end with media in a bucket: reelhook on real uvicorn with REELHOOK_MEDIA_URL=s3://… on a real S3 server
(SeaweedFS), the TTAPI simulator calling back over real HTTP, and its CDN's files landing in the bucket, served back
through `/media/` with Range. Nothing is written to the local media folder."""

from __future__ import annotations

import hashlib
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from receiver.app import create_app
from receiver.posters import poster_key
from receiver.rules import RuleSet
from receiver.serving import bind_socket, running, socket_url
from receiver.settings import Settings
from storage.media import get_sidecar
from submitter.simulators.registry import SIMULATORS
from tests.e2e.conftest import API_TOKEN, TT_KEY, expected_sha256, settings_for, wait_until
from tests.seaweed import S3Server

pytestmark = pytest.mark.anyio


async def test_a_callbacks_videos_land_in_the_bucket_and_media_serves_them_with_range(
    tmp_path: Path, s3_server: S3Server
) -> None:
    url = s3_server.fresh_url()
    from_env = Settings.from_env(s3_server.env(url) | {"REELHOOK_DATA_DIR": str(tmp_path / "data")})
    assert from_env.media_s3 is not None and from_env.media_s3.url == url
    bucket = s3_server.store(url)
    sims = {name: SIMULATORS[name](api_key=TT_KEY, delay=0.02) for name in SIMULATORS}
    async with AsyncExitStack() as stack:
        sim_urls = {name: await stack.enter_async_context(running(sim.app)) for name, sim in sims.items()}
        sock = bind_socket()
        stack.callback(sock.close)
        settings = settings_for(tmp_path / "data", socket_url(sock), sim_urls, media_s3=from_env.media_s3)
        app = create_app(settings, rules=RuleSet.empty(), trusted_origins=set(sim_urls.values()))
        base = await stack.enter_async_context(running(app, sock))
        api = await stack.enter_async_context(
            httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {API_TOKEN}"})
        )
        body = {"provider": "ttapi", "prompt": "a lighthouse at dusk", "image_url": "https://img.example/f.png"}
        created = (await api.post("/api/jobs", json=body)).json()

        async def downloaded() -> bool:
            job = (await api.get(f"/api/jobs/{created['id']}")).json()
            return job["status"] == "succeeded" and all(v["status"] == "downloaded" for v in job["videos"])

        await wait_until(downloaded, timeout=30)
        job = (await api.get(f"/api/jobs/{created['id']}")).json()
        assert len(job["videos"]) == 4
        anyone = await stack.enter_async_context(httpx.AsyncClient(base_url=base))  # no token: links are the pass
        for video in job["videos"]:
            key = video["key"]
            assert key == f"{job['root_id']}/{job['id']}/{video['index']}.mp4"
            cdn_id = video["url"].split("/cdn/", 1)[1].split("/", 1)[0]
            expected = expected_sha256(cdn_id, video["index"])
            in_bucket = b"".join([piece async for piece in bucket.read(key)])
            assert hashlib.sha256(in_bucket).hexdigest() == video["sha256"] == expected
            assert b'"sha256": "' + expected.encode() in (await get_sidecar(bucket, key) or b"")

            # Through reelhook, with the job JSON's signed link and no token: whole, then a range.
            whole = await anyone.get(video["media_url"])
            assert (whole.status_code, whole.content, whole.headers["content-type"]) == (200, in_bucket, "video/mp4")
            part = await anyone.get(video["media_url"], headers={"Range": "bytes=4-11"})
            assert (part.status_code, part.content) == (206, in_bucket[4:12])
            assert part.headers["content-range"] == f"bytes 4-11/{len(in_bucket)}"
            assert (await anyone.get(video["media_url"], headers={"Range": "bytes=999999-"})).status_code == 416

        # Posters are made from a temporary copy and stored in the bucket too, and the API links them.
        first = job["videos"][0]

        async def poster_stored() -> bool:
            return await bucket.exists(poster_key(first["key"]))

        await wait_until(poster_stored)
        poster = await api.get((await api.get(f"/api/jobs/{created['id']}")).json()["videos"][0]["poster_url"])
        assert (poster.status_code, poster.headers["content-type"], poster.content[:2]) == (
            200,
            "image/jpeg",
            b"\xff\xd8",
        )
    assert not (tmp_path / "data" / "media").exists() or not any((tmp_path / "data" / "media").rglob("*"))
