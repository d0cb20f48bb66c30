"""`GET /media/{path}` through the app: Range, content types, caching, who may read, and what is never served."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from starlette.applications import Starlette
from starlette.requests import Request

from receiver.app import create_app
from receiver.media import MediaLinks
from receiver.rules import RuleSet
from receiver.settings import Secret, Settings
from storage import CallbackResult, JobStatus, NewJob, Store
from tests.receiver.conftest import AUTH, SECRET, Harness, make_settings

pytestmark = pytest.mark.anyio

SIMULATORS = Path(__file__).parents[2] / "submitter" / "simulators"
SAMPLE = (SIMULATORS / "sample.mp4").read_bytes()
PNG = (SIMULATORS / "sample.png").read_bytes()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64)
REL = "root1/job1/0.mp4"


def put(harness: Harness, relative: str, data: bytes) -> Path:
    path = harness.settings.media_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def get(harness: Harness, url: str, **headers: str) -> httpx.Response:
    return await harness.client.get(url, headers=AUTH | headers)


async def test_a_full_get_serves_the_file_as_video_mp4_cached_privately(harness: Harness) -> None:
    put(harness, REL, SAMPLE)
    response = await get(harness, f"/media/{REL}")
    assert response.status_code == 200
    assert response.content == SAMPLE
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-length"] == str(len(SAMPLE))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["cache-control"] == "private, max-age=86400, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_head_answers_the_headers_without_the_body(harness: Harness) -> None:
    put(harness, REL, SAMPLE)
    response = await harness.client.head(f"/media/{REL}", headers=AUTH)
    assert (response.status_code, response.headers["content-length"], response.content) == (200, str(len(SAMPLE)), b"")


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 100),  # the first bytes, as a player asks for the moov/ftyp
        ("bytes=1000-1999", 1000, 2000),  # the middle, as a seek asks
        ("bytes=-100", len(SAMPLE) - 100, len(SAMPLE)),  # the suffix
        (f"bytes=2000-{len(SAMPLE) + 500}", 2000, len(SAMPLE)),  # an end past the file is clamped
    ],
)
async def test_a_range_answers_206_with_exactly_those_bytes(
    harness: Harness, header: str, start: int, end: int
) -> None:
    put(harness, REL, SAMPLE)
    response = await get(harness, f"/media/{REL}", range=header)
    assert response.status_code == 206
    assert response.content == SAMPLE[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(SAMPLE)}"
    assert response.headers["content-type"] == "video/mp4"


async def test_an_unsatisfiable_range_answers_416_with_the_size(harness: Harness) -> None:
    put(harness, REL, SAMPLE)
    response = await get(harness, f"/media/{REL}", range=f"bytes={len(SAMPLE)}-{len(SAMPLE) + 10}")
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(SAMPLE)}"


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [("0.mp4", SAMPLE, "video/mp4"), ("1.png", PNG, "image/png"), ("0.poster.jpg", JPEG, "image/jpeg")],
)
async def test_each_kind_has_its_content_type(harness: Harness, name: str, data: bytes, content_type: str) -> None:
    put(harness, f"root1/job1/{name}", data)
    response = await get(harness, f"/media/root1/job1/{name}")
    assert (response.status_code, response.headers["content-type"], response.content) == (200, content_type, data)


def expired_sig(relative: str, secret: str = SECRET) -> str:
    class TwoHoursAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 7200

    return URLSafeTimedSerializer(secret, salt="reelhook.media", signer=TwoHoursAgo).dumps(relative)


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", {}),
        ("", {"Authorization": "Bearer wrong-token"}),
        ("?sig=" + MediaLinks(["another-secret"]).sign(REL), {}),  # forged: signed with a key we do not hold
        ("?sig=" + MediaLinks([SECRET]).sign("root1/job1/1.mp4"), {}),  # genuine, but for another file
        ("?sig=" + URLSafeTimedSerializer(SECRET, salt="reelhook.hook").dumps(REL), {}),  # another purpose's salt
        ("?sig=" + expired_sig(REL), {}),  # genuine and for this file, but two hours old
        ("?sig=garbage", {}),
        ("?sig=%C3%A9", {}),  # not ASCII
    ],
)
async def test_without_a_valid_pass_the_answer_is_401(harness: Harness, query: str, headers: dict[str, str]) -> None:
    put(harness, REL, SAMPLE)
    response = await harness.client.get(f"/media/{REL}{query}", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert SAMPLE[:16] not in response.content


async def test_the_token_or_a_fresh_signature_for_this_path_opens_the_file(harness: Harness) -> None:
    put(harness, REL, SAMPLE)
    by_token = await harness.client.get(f"/media/{REL}", headers=AUTH)
    by_sig = await harness.client.get(f"/media/{REL}?sig={MediaLinks([SECRET]).sign(REL)}")
    assert (by_token.status_code, by_token.content) == (200, SAMPLE)
    assert (by_sig.status_code, by_sig.content) == (200, SAMPLE)


async def test_a_signature_made_with_an_older_secret_still_opens_the_file(tmp_path: Path, store: Store) -> None:
    settings = make_settings(tmp_path, secrets=(Secret("new-secret"), Secret(SECRET)))
    (settings.media_dir / "r/j").mkdir(parents=True)
    (settings.media_dir / "r/j/0.mp4").write_bytes(SAMPLE)
    async with serving(settings, store) as client:
        old = await client.get(f"/media/r/j/0.mp4?sig={MediaLinks([SECRET]).sign('r/j/0.mp4')}")
        new = await client.get(f"/media/r/j/0.mp4?sig={MediaLinks(['new-secret']).sign('r/j/0.mp4')}")
    assert (old.status_code, new.status_code) == (200, 200)
    # New links are signed with the first secret.
    assert MediaLinks.from_settings(settings).sign("x") == MediaLinks(["new-secret"]).sign("x")


async def test_the_session_hook_opens_the_file_only_when_it_says_so(tmp_path: Path, store: Store) -> None:
    settings = make_settings(tmp_path)
    (settings.media_dir / "r/j").mkdir(parents=True)
    (settings.media_dir / "r/j/0.mp4").write_bytes(SAMPLE)
    asked: list[str] = []

    def session_ok(request: Request) -> bool:
        asked.append(request.url.path)
        return request.cookies.get("reelhook_session") == "good"

    async with serving(settings, store, session_ok=session_ok) as client:
        with_session = await client.get("/media/r/j/0.mp4", headers={"Cookie": "reelhook_session=good"})
        bad_session = await client.get("/media/r/j/0.mp4", headers={"Cookie": "reelhook_session=bad"})
    assert (with_session.status_code, with_session.content) == (200, SAMPLE)
    assert bad_session.status_code == 401
    assert asked == ["/media/r/j/0.mp4", "/media/r/j/0.mp4"]


@asynccontextmanager
async def serving(settings: Settings, store: Store, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app of its own: for settings or a session hook the shared harness does not have."""
    async with httpx.AsyncClient() as http:
        app = create_app(settings, store=store, http=http, rules=RuleSet.empty(), **options)
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


@pytest.mark.parametrize(
    "relative",
    [
        "root1/job1/9.mp4",  # missing
        "root1/job9/0.mp4",  # missing folder
        "root1/job1/0.mp4.part",  # a download in progress
        "root1/job1/0.json",  # the sidecar
        "root1/job1/0.poster.jpg.tmp",  # a poster being written
        "root1/job1/notes.txt",  # not a media kind
        "root1/job1",  # a folder
    ],
)
async def test_what_is_not_a_finished_media_file_is_404(harness: Harness, relative: str) -> None:
    put(harness, REL, SAMPLE)
    for name in ("0.mp4.part", "0.json", "0.poster.jpg.tmp", "notes.txt"):
        put(harness, f"root1/job1/{name}", SAMPLE)
    response = await get(harness, f"/media/{relative}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def raw_get(app: Starlette, raw_path: bytes, path: str) -> int:
    """One GET with exactly this path: httpx would remove a literal `..` before the app saw it."""
    statuses: list[int] = []

    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:  # the client stays connected until the response is sent
            await anyio.sleep_forever()
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": raw_path, "root_path": "", "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"authorization", AUTH["Authorization"].encode())],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    return statuses[0]


def outside_files(harness: Harness) -> Path:
    """A servable-looking file beside the media folder, and symlinks inside it that lead out or to a sidecar."""
    secret = harness.settings.data_dir / "secret.mp4"
    secret.write_bytes(SAMPLE)
    put(harness, REL, SAMPLE)
    put(harness, "root1/job1/0.json", b"{}")
    (harness.settings.media_dir / "root1/job1/link.mp4").symlink_to(secret)
    (harness.settings.media_dir / "root1/job1/json.mp4").symlink_to(harness.settings.media_dir / "root1/job1/0.json")
    (harness.settings.media_dir / "escape").symlink_to(harness.settings.data_dir)
    return secret


@pytest.mark.parametrize(
    "url",
    [
        "/media/%2e%2e/secret.mp4",  # percent-encoded dots
        "/media/root1/%2E%2E/%2e%2e/secret.mp4",
        "/media/root1/job1/..%2f..%2f..%2fsecret.mp4",  # an encoded slash
        "/media/%2fsecret.mp4",  # absolute, encoded
        "/media//secret.mp4",  # an empty segment
        "/media/root1/job1/link.mp4",  # a symlink out of the media folder
        "/media/escape/secret.mp4",  # through a symlinked folder
        "/media/root1/job1/json.mp4",  # a symlink to a sidecar
        "/media/root1/job1/0.mp4%00.mp4",  # NUL
        "/media/root1/job1/0.mp4%00",
        "/media/root1%5cjob1%5c0.mp4",  # backslashes
    ],
)
async def test_no_encoded_path_leaves_the_media_folder(harness: Harness, url: str) -> None:
    outside_files(harness)
    response = await harness.client.get(url, headers=AUTH)
    assert response.status_code == 404
    assert SAMPLE[:16] not in response.content


@pytest.mark.parametrize(
    "path",
    [
        "/media/../secret.mp4",
        "/media/root1/../../secret.mp4",
        "/media/root1/job1/../../../secret.mp4",
        "/media/root1/./job1/0.mp4",  # a dot segment, even one that stays inside
    ],
)
async def test_a_literal_dot_dot_is_404(harness: Harness, path: str) -> None:
    outside_files(harness)
    assert await raw_get(harness.app, path.encode(), path) == 404


async def test_the_absolute_path_of_the_secret_is_404(harness: Harness) -> None:
    secret = outside_files(harness)
    response = await harness.client.get("/media/" + quote(str(secret), safe="/"), headers=AUTH)
    assert response.status_code == 404


async def test_the_job_json_gives_a_media_url_that_opens_the_file_and_a_poster_url_once_it_exists(
    harness: Harness,
) -> None:
    job, _ = await harness.store.create_job(
        NewJob("ttapi", "generate", {"prompt": "a cat", "image_url": "https://i/x"})
    )
    await harness.store.claim_submission(job.id)
    result = CallbackResult("tt-1", JobStatus.SUCCEEDED, media_urls=("https://cdn/0.mp4", "https://cdn/1.mp4"))
    await harness.store.record_callback(job.id, "ttapi", body=b"{}", headers=[], result=result)
    key = f"{job.root_id}/{job.id}/0.mp4"
    put(harness, key, SAMPLE)
    await harness.store.record_download(job.id, 0, path=key, sha256="x", size=len(SAMPLE))

    videos = (await get(harness, f"/api/jobs/{job.id}")).json()["videos"]
    assert videos[0]["key"] == key and "path" not in videos[0]  # never a local path the client cannot open
    assert videos[0]["media_url"].startswith(f"/media/{job.root_id}/{job.id}/0.mp4?sig=")
    assert videos[0]["poster_url"] is None
    assert (videos[1]["media_url"], videos[1]["poster_url"]) == (None, None)  # not downloaded
    opened = await harness.client.get(videos[0]["media_url"])  # no token: the signature is the pass
    assert (opened.status_code, opened.content) == (200, SAMPLE)
    # The signature names its file: it does not open the one beside it.
    put(harness, f"{job.root_id}/{job.id}/1.mp4", b"other")
    other = videos[0]["media_url"].replace("/0.mp4?", "/1.mp4?")
    assert (await harness.client.get(other)).status_code == 401

    put(harness, f"{job.root_id}/{job.id}/0.poster.jpg", JPEG)
    listed = (await get(harness, "/api/jobs")).json()["jobs"][0]["videos"][0]
    assert listed["poster_url"].startswith(f"/media/{job.root_id}/{job.id}/0.poster.jpg?sig=")
    poster = await harness.client.get(listed["poster_url"])
    assert (poster.status_code, poster.headers["content-type"], poster.content) == (200, "image/jpeg", JPEG)


async def test_a_signed_url_for_a_name_that_needs_quoting_opens_its_file(harness: Harness) -> None:
    put(harness, "root 1/job#1/0.mp4", SAMPLE)
    url = MediaLinks.from_settings(harness.settings).url("root 1/job#1/0.mp4")
    assert url.startswith("/media/root%201/job%231/0.mp4?sig=")
    opened = await harness.client.get(url)
    assert (opened.status_code, opened.content) == (200, SAMPLE)
