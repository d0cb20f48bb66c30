"""Uploaded frames: `POST /api/frames`, the signed `GET /frames/<name>`, what `POST /api/jobs` takes as a frame, the
URL the submitter puts in the provider request, and `reelhook submit --image FILE` against a running server."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import anyio
import httpx
import pytest

from receiver.cli import main
from receiver.frames import FrameLinks, frame_dir
from storage import JobStatus, NewJob
from tests.e2e.conftest import API_TOKEN, deployment, wait_until
from tests.receiver.conftest import AUTH, SECRET, Harness

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + b"JFIF end frame" * 50
WEBP = b"RIFF\x00\x01\x00\x00WEBPVP8 " + b"\x01" * 300


def stored(harness: Harness) -> list[str]:
    folder = frame_dir(harness.settings.data_dir)
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


async def upload(client: httpx.AsyncClient, data: bytes) -> httpx.Response:
    return await client.post("/api/frames", content=data, headers=AUTH)


async def test_an_upload_is_stored_once_under_its_sha256(harness: Harness) -> None:
    digest = hashlib.sha256(PNG).hexdigest()
    first = await upload(harness.client, PNG)
    assert first.status_code == 201, first.text
    assert first.json() == {
        "frame": f"frame:{digest}",
        "sha256": digest,
        "bytes": len(PNG),
        "content_type": "image/png",
    }
    again = await upload(harness.client, PNG)
    assert (again.status_code, again.json()["frame"]) == (200, f"frame:{digest}")
    assert stored(harness) == [f"{digest}.png"]  # once, and no .part left behind
    assert (frame_dir(harness.settings.data_dir) / f"{digest}.png").read_bytes() == PNG
    for data, kind in ((JPEG, "jpg"), (WEBP, "webp")):
        response = await upload(harness.client, data)
        assert response.status_code == 201 and f"{hashlib.sha256(data).hexdigest()}.{kind}" in stored(harness)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"<html>not an image</html>", 415),
        (b"GIF89a" + b"\x00" * 100, 415),
        (b"", 400),
        (PNG[:8] + b"\x00" * (10 * 1024 * 1024), 413),  # one byte over 10 MiB
    ],
)
async def test_an_upload_that_is_no_frame_is_refused_and_stores_nothing(
    harness: Harness, data: bytes, status: int
) -> None:
    response = await upload(harness.client, data)
    assert response.status_code == status, response.text
    assert stored(harness) == []


async def test_an_upload_needs_the_token(harness: Harness) -> None:
    response = await harness.client.post("/api/frames", content=PNG)
    assert response.status_code == 401 and stored(harness) == []


async def test_a_signed_frame_url_serves_exactly_that_frame(harness: Harness) -> None:
    reference = (await upload(harness.client, PNG)).json()["frame"]
    other = (await upload(harness.client, JPEG)).json()["frame"]
    folder = frame_dir(harness.settings.data_dir)
    link = FrameLinks([SECRET]).link(folder, reference)
    assert link is not None and link.startswith(f"/frames/{reference[6:]}.png?sig=")
    got = await harness.client.get(link)  # no token: the signature is the pass
    assert (got.status_code, got.content, got.headers["content-type"]) == (200, PNG, "image/png")
    head = await harness.client.head(link)
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(PNG)))

    other_link = FrameLinks([SECRET]).link(folder, other)
    assert other_link is not None
    path, sig = link.split("?sig=")
    stolen = await harness.client.get(f"{path}?sig={other_link.split('?sig=')[1]}")  # another frame's signature
    assert stolen.status_code == 403
    assert (await harness.client.get(path)).status_code == 403
    assert (await harness.client.get(f"{path}?sig={sig[:-2]}xx")).status_code == 403
    old = FrameLinks([SECRET], clock=lambda: time.time() - 2 * 86400).link(folder, reference)
    assert old is not None and (await harness.client.get(old)).status_code == 403  # expired
    missing = "0" * 64 + ".png"
    assert (await harness.client.get(f"/frames/{missing}?sig={FrameLinks([SECRET]).sign(missing)}")).status_code == 404


@pytest.mark.parametrize("name", ["image_url", "end_image_url"])
@pytest.mark.parametrize("value", ["./frame.png", "/home/me/frame.png", "file:///home/me/frame.png", "frame.png"])
async def test_a_local_path_is_refused_naming_the_field_and_the_upload(harness: Harness, name: str, value: str) -> None:
    body = {"prompt": "a cat", "image_url": "https://img.example/a.png", name: value}
    before = harness.snapshot()
    response = await harness.client.post("/api/jobs", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"{name} must be an http(s) URL: {value!r} is a local file")
    assert "--image FILE" in detail and "POST /api/frames" in detail
    assert harness.snapshot() == before


@pytest.mark.parametrize("value", ["frame:" + "0" * 64, "frame:not-a-sha"])
async def test_a_frame_never_uploaded_is_refused(harness: Harness, value: str) -> None:
    response = await harness.client.post("/api/jobs", json={"prompt": "a cat", "image_url": value}, headers=AUTH)
    assert response.status_code == 400 and response.json()["detail"].startswith(f"image_url: no frame {value!r}")


async def test_a_data_url_is_refused_by_a_provider_that_fetches_urls(harness: Harness) -> None:
    body = {"prompt": "a cat", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    response = await harness.client.post("/api/jobs", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("image_url: ttapi takes frames by http(s) URL, not data: URLs")


async def test_the_provider_request_carries_a_signed_url_of_the_frame(harness: Harness) -> None:
    start = (await upload(harness.client, PNG)).json()["frame"]
    end = (await upload(harness.client, JPEG)).json()["frame"]
    body = {"prompt": "a cat", "image_url": start, "end_image_url": end}
    created = await harness.client.post("/api/jobs", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.json()["params"]["image_url"] == start  # the job records the reference, not a URL
    with anyio.fail_after(5):
        while not harness.provider.requests:
            await anyio.sleep(0.01)
    sent = json.loads(harness.provider.requests[0].content)
    for field, data, kind in (("imageUrl", PNG, "png"), ("endingUrl", JPEG, "jpg")):
        url = httpx.URL(sent[field])
        assert str(url).startswith(f"http://testserver/frames/{hashlib.sha256(data).hexdigest()}.{kind}?sig=")
        fetched = await harness.client.get(url)
        assert (fetched.status_code, fetched.content) == (200, data)


async def test_a_job_whose_frame_is_gone_fails_without_being_sent(harness: Harness) -> None:
    params = {"prompt": "a cat", "image_url": "frame:" + "a" * 64}  # recorded, then the frame was removed
    job, _ = await harness.store.create_job(NewJob("ttapi", "generate", params))
    harness.app.state.service.wake_submitter()
    with anyio.fail_after(5):
        while (current := await harness.store.get_job(job.id)) is not None and current.status is JobStatus.QUEUED:
            await anyio.sleep(0.01)
    assert current is not None and current.status is JobStatus.FAILED
    assert current.error == f"ttapi: image_url: frame:{'a' * 64} is no longer stored; upload it again (--image FILE)"
    assert harness.provider.requests == []


async def test_cli_submit_uploads_local_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start, end = tmp_path / "start.png", tmp_path / "end.jpg"
    start.write_bytes(PNG)
    end.write_bytes(JPEG)
    async with deployment(tmp_path) as deployed:
        env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}
        argv = ["submit", "--prompt", "a fox", "--image", str(start), "--end-image", str(end), "--json"]
        code = await anyio.to_thread.run_sync(main, argv, env)
        out, err = capsys.readouterr()
        assert code == 0, err
        job = json.loads(out)
        assert job["params"]["image_url"] == f"frame:{hashlib.sha256(PNG).hexdigest()}"

        async def sent() -> bool:
            return any(s.job_id and s.status_code == 200 for s in deployed.sim.submissions)

        await wait_until(sent)
        body = next(s.body for s in deployed.sim.submissions if s.status_code == 200)
        async with httpx.AsyncClient() as stranger:  # what TTAPI does: a plain GET of the URL, no token
            assert (await stranger.get(body["imageUrl"])).content == PNG
            assert (await stranger.get(body["endingUrl"])).content == JPEG

        missing = await anyio.to_thread.run_sync(main, ["submit", "--prompt", "x", "--image", "nope.png"], env)
        assert missing == 2 and "cannot read nope.png" in capsys.readouterr().err
