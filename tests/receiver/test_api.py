from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from receiver.app import create_app
from receiver.rules import RuleSet
from receiver.settings import ProviderSettings, Secret
from storage import JobStatus, NewJob, Store
from tests.receiver.conftest import AUTH, FakeTTAPI, Harness, make_settings, ttapi_callback

pytestmark = pytest.mark.anyio

GENERATE = {"provider": "ttapi", "action": "generate", "prompt": "a cat", "image_url": "https://img.example/a.png"}


async def wait_for_requests(harness: Harness, count: int) -> None:
    with anyio.fail_after(5):
        while len(harness.provider.requests) < count:
            await anyio.sleep(0.01)


async def test_generate_records_and_submits_a_job(harness: Harness) -> None:
    response = await harness.client.post("/api/jobs", headers=AUTH, json=GENERATE | {"motion": "high"})
    assert response.status_code == 201
    job = response.json()
    assert {k: job[k] for k in ("provider", "action", "status", "depth", "prompt")} == {
        "provider": "ttapi", "action": "generate", "status": "queued", "depth": 0, "prompt": "a cat",
    }  # fmt: skip
    assert job["root_id"] == job["id"] and job["videos"] == []
    await wait_for_requests(harness, 1)
    sent = json.loads(harness.provider.requests[0].content)
    assert (
        sent["prompt"] == "a cat"
        and sent["manual"] == "high"
        and sent["hookUrl"].startswith("http://testserver/hooks/ttapi/")
    )
    assert harness.provider.requests[0].headers["TT-API-KEY"] == "tt-key"
    with anyio.fail_after(5):
        while (stored := await harness.store.get_job(job["id"])) is None or stored.provider_job_id is None:
            await anyio.sleep(0.01)
    shown = (await harness.client.get(f"/api/jobs/{job['id']}", headers=AUTH)).json()
    assert shown["status"] == "submitted" and shown["provider_job_id"] == "tt-1"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({k: v for k, v in GENERATE.items() if k != "prompt"}, 400, "prompt is required"),
        (GENERATE | {"image_url": "file:///etc/passwd"}, 400, "image_url must be an http(s) URL"),
        (GENERATE | {"colour": "red"}, 400, "unknown field(s) colour"),
        (GENERATE | {"motion": "fast"}, 400, "motion must be 'low' or 'high'"),
        (GENERATE | {"batch_size": 3}, 400, "batch_size must be 1, 2 or 4"),
        (GENERATE | {"provider": "nosuch"}, 400, "provider must be one of ttapi"),
        (GENERATE | {"action": "dance"}, 400, "action 'dance' follows up a job and needs parent_id"),
        ({"action": "extend", "parent_id": "nosuch", "index": 0}, 404, "no job nosuch"),
    ],
)
async def test_bad_requests_get_a_clear_error_and_record_nothing(
    harness: Harness, body: dict[str, Any], status: int, needle: str
) -> None:
    before = harness.snapshot()
    response = await harness.client.post("/api/jobs", headers=AUTH, json=body)
    assert response.status_code == status
    assert needle in response.json()["detail"]
    assert harness.snapshot() == before


@pytest.mark.parametrize("raw", [b"{oops", b"[]", b"x" * 70000])
async def test_unreadable_bodies_are_refused(harness: Harness, raw: bytes) -> None:
    before = harness.snapshot()
    response = await harness.client.post("/api/jobs", headers=AUTH, content=raw)
    assert response.status_code in (400, 413) and set(response.json()) == {"error", "detail"}
    assert harness.snapshot() == before


async def test_extend_needs_a_succeeded_parent_and_a_valid_index(harness: Harness) -> None:
    parent = await harness.submitted_job("tt-1")
    early = await harness.client.post(
        "/api/jobs", headers=AUTH, json={"action": "extend", "parent_id": parent, "index": 0}
    )
    assert early.status_code == 409
    await harness.client.post(harness.hook_path(parent), content=ttapi_callback("tt-1"))
    bad = await harness.client.post(
        "/api/jobs", headers=AUTH, json={"action": "extend", "parent_id": parent, "index": 4}
    )
    assert bad.status_code == 400 and "index must be 0-3" in bad.json()["detail"]
    good = await harness.client.post(
        "/api/jobs", headers=AUTH, json={"action": "extend", "parent_id": parent, "index": 2, "motion": "low"}
    )
    assert good.status_code == 201
    child = good.json()
    assert (child["parent_id"], child["root_id"], child["depth"], child["provider"]) == (parent, parent, 1, "ttapi")
    await wait_for_requests(harness, 1)
    sent = json.loads(harness.provider.requests[-1].content)
    assert harness.provider.requests[-1].url.path == "/midjourney/video/extend"
    assert (sent["jobId"], sent["index"], sent["manual"]) == ("tt-1", 2, "low")


async def test_list_filters_by_status_and_pages_newest_first(harness: Harness) -> None:
    ids = [await harness.submitted_job(f"tt-{n}") for n in range(5)]
    await harness.client.post(harness.hook_path(ids[0]), content=ttapi_callback("tt-0"))
    page = (await harness.client.get("/api/jobs", headers=AUTH, params={"limit": 2})).json()
    assert [job["id"] for job in page["jobs"]] == ids[::-1][:2]
    rest = (
        await harness.client.get("/api/jobs", headers=AUTH, params={"limit": 2, "cursor": page["next_cursor"]})
    ).json()
    assert [job["id"] for job in rest["jobs"]] == ids[::-1][2:4]
    done = (await harness.client.get("/api/jobs", headers=AUTH, params={"status": "succeeded"})).json()
    assert [job["id"] for job in done["jobs"]] == [ids[0]] and done["next_cursor"] is None
    assert done["jobs"][0]["status"] == JobStatus.SUCCEEDED.value and len(done["jobs"][0]["videos"]) == 4
    bad = await harness.client.get("/api/jobs", headers=AUTH, params={"status": "nope"})
    assert bad.status_code == 400


async def test_unknown_job_is_404(harness: Harness) -> None:
    response = await harness.client.get("/api/jobs/nosuch", headers=AUTH)
    assert response.status_code == 404 and response.json()["error"] == "not_found"


async def test_a_decimal_progress_is_stored_and_shown_as_a_whole_percent(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    body = json.loads(ttapi_callback("tt-1", status="ON_QUEUE", videos=0))
    body["data"]["progress"] = "45.5"
    response = await harness.client.post(harness.hook_path(job_id), content=json.dumps(body).encode())
    assert response.status_code == 200
    shown = (await harness.client.get(f"/api/jobs/{job_id}", headers=AUTH)).json()
    assert (shown["status"], shown["progress"]) == ("running", 45)
    with closing(sqlite3.connect(harness.db_path)) as db:
        stored = db.execute("SELECT progress, typeof(progress) FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert stored == (45, "integer")


# -- extends send what the provider takes, and the job shows what was sent ---------------------------------------------


async def succeeded_parent(harness: Harness, provider_job_id: str = "tt-parent") -> str:
    # Not "tt-1": FakeTTAPI numbers the jobs it is sent from tt-1, and two jobs never share a provider id.
    parent = await harness.submitted_job(provider_job_id)
    response = await harness.client.post(harness.hook_path(parent), content=ttapi_callback(provider_job_id))
    assert response.status_code == 200
    return parent


async def settled(harness: Harness) -> dict[str, list[tuple[Any, ...]]]:
    """The database once the workers are done with the parent: its events handled, its downloads failed (polled,
    as in test_followup_checks: a worker woken again mid-drain can leave Service.wait_idle() waiting for good)."""
    with anyio.fail_after(5):
        while True:
            snapshot = harness.snapshot()
            if all(row[5] is not None for row in snapshot["events"]) and not any(
                "pending" in row for row in snapshot["videos"]
            ):
                return snapshot
            await anyio.sleep(0.01)


async def test_a_ttapi_extend_with_a_prompt_is_refused_before_anything_is_recorded(harness: Harness) -> None:
    parent = await succeeded_parent(harness)
    before = await settled(harness)  # the workers' own writes (claims, then outcomes) are not the request's
    body = {"action": "extend", "parent_id": parent, "index": 0, "prompt": "the camera keeps moving"}
    response = await harness.client.post("/api/jobs", headers=AUTH, json=body)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "detail": "ttapi: TTAPI extends take no prompt; leave prompt out",
    }
    assert harness.snapshot() == before and harness.provider.requests == []


async def test_a_task_id_is_refused_by_a_provider_that_animates_frames_only(harness: Harness) -> None:
    # Found by schemathesis: TTAPI took {"task_id"} (APIMart's way to animate an earlier imagine), recorded the job
    # and failed it when the request could not be built.
    before = harness.snapshot()
    response = await harness.client.post("/api/jobs", headers=AUTH, json={"provider": "ttapi", "task_id": "t-1"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "detail": "task_id: ttapi animates a first frame (image_url), not an earlier task",
    }
    assert harness.snapshot() == before and harness.provider.requests == []


class FakeAceData:
    """AceData's submit endpoint: records the bodies, answers with a task id (seed 002's async answer)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"task_id": f"ad-{len(self.bodies)}"})


ACEDATA_CALLBACK = {
    "image_url": "https://storage.fonedis.cc/upload_1751818513244368774.png",
    "image_width": 560,
    "image_height": 688,
    "progress": 100,
    "video_id": "1751818512924054",
    "video_urls": [f"http://127.0.0.1:9/video/{i}.mp4" for i in range(4)],
    "task_id": "ad-1",
    "success": True,
}


@asynccontextmanager
async def service(
    tmp_path: Path, peer: Callable[[httpx.Request], httpx.Response], rules: str = "", **settings: Any
) -> AsyncIterator[Harness]:
    """The shared harness's app, with these rules and this provider peer."""
    db_path = tmp_path / "reelhook.sqlite3"
    async with (
        await Store.open(db_path) as store,
        httpx.AsyncClient(transport=httpx.MockTransport(peer)) as http,
    ):
        app = create_app(make_settings(tmp_path, **settings), store=store, http=http, rules=RuleSet.parse(rules))
        async with app.router.lifespan_context(app):
            await app.state.service.wait_idle()  # start from rest, as the shared harness does
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                fake = peer if isinstance(peer, FakeTTAPI) else FakeTTAPI()
                yield Harness(app, client, store, app.state.service.settings, fake, db_path)


async def acedata_parent(harness: Harness, peer: FakeAceData, prompt: str = "a lighthouse at dusk") -> str:
    body = {"provider": "acedata", "prompt": prompt, "image_url": "https://img.example/a.png"}
    parent = (await harness.client.post("/api/jobs", headers=AUTH, json=body)).json()["id"]
    await wait_for_provider_id(harness, parent)
    hook = harness.hook_path(parent, "acedata")
    assert (await harness.client.post(hook, content=json.dumps(ACEDATA_CALLBACK).encode())).status_code == 200
    return parent


async def wait_for_provider_id(harness: Harness, job_id: str) -> None:
    # Polled, not Service.wait_idle(): a worker woken again mid-drain can leave a wait_idle() waiting for good.
    with anyio.fail_after(5):
        while (job := await harness.store.get_job(job_id)) is None or job.provider_job_id is None:
            await anyio.sleep(0.01)


async def wait_until(condition: Any) -> None:
    with anyio.fail_after(5):
        while not condition():
            await anyio.sleep(0.01)


async def test_an_acedata_extend_without_a_prompt_carries_its_parents_and_shows_it(tmp_path: Path) -> None:
    peer = FakeAceData()
    acedata = {"acedata": ProviderSettings(Secret("ad-key"), "http://acedata.test")}
    async with service(tmp_path, peer, providers=acedata) as harness:
        parent = await acedata_parent(harness, peer)
        response = await harness.client.post(
            "/api/jobs", headers=AUTH, json={"action": "extend", "parent_id": parent, "index": 2}
        )
        assert response.status_code == 201
        child = response.json()
        assert child["params"] == {"index": 2, "prompt": "a lighthouse at dusk"}
        assert child["prompt"] == "a lighthouse at dusk"
        await wait_until(lambda: len(peer.bodies) == 2)
        sent = peer.bodies[1]
        shown_parent = (await harness.client.get(f"/api/jobs/{parent}", headers=AUTH)).json()
        assert shown_parent["result"] == {
            "seed": None, "prompts": None, "actions": None, "cover_url": ACEDATA_CALLBACK["image_url"],
        }  # fmt: skip
        assert (sent["action"], sent["video_id"], sent["video_index"]) == ("extend", "1751818512924054", 2)
        assert sent["prompt"] == "a lighthouse at dusk"  # seed 002: the extend "must" have a prompt
        # A prompt given is the one sent.
        response = await harness.client.post(
            "/api/jobs", headers=AUTH, json={"action": "extend", "parent_id": parent, "index": 1, "prompt": "zoom"}
        )
        assert response.json()["params"] == {"index": 1, "prompt": "zoom"}
        await wait_until(lambda: len(peer.bodies) == 3)
        assert peer.bodies[2]["prompt"] == "zoom"


EXTEND_WITH_PROMPT = """
[[rule]]
name = "extend-first"
on = "job.succeeded"
when.action = "generate"
extend.index = 0
extend.prompt = "{prompt}, the camera keeps moving"
extend.motion = "high"
"""


async def test_a_rules_prompt_is_not_sent_to_a_ttapi_extend_and_a_note_on_the_extend_says_so(tmp_path: Path) -> None:
    async with service(tmp_path, FakeTTAPI(), EXTEND_WITH_PROMPT) as harness:
        parent = await succeeded_parent(harness)
        await wait_until(lambda: len(harness.provider.requests) == 1)
        request = harness.provider.requests[0]
        sent = json.loads(request.content)
        assert request.url.path == "/midjourney/video/extend"
        assert "prompt" not in sent and (sent["jobId"], sent["index"], sent["manual"]) == ("tt-parent", 0, "high")

        jobs = (await harness.client.get("/api/jobs", headers=AUTH)).json()["jobs"]
        [child] = [job for job in jobs if job["parent_id"] == parent]
        await wait_for_provider_id(harness, child["id"])
        with anyio.fail_after(5):
            while not (shown := (await harness.client.get(f"/api/jobs/{child['id']}", headers=AUTH)).json())["notes"]:
                await anyio.sleep(0.01)
        assert shown["params"] == {"index": 0, "motion": "high"} and shown["prompt"] is None
        assert [(note["rule"], note["message"]) for note in shown["notes"]] == [
            ("extend-first", "TTAPI extends take no prompt; the rule's prompt was not sent")
        ]
        assert (await harness.client.get(f"/api/jobs/{parent}", headers=AUTH)).json()["notes"] == []


# -- the job JSON's `result`: what the provider returned that a user acts on -------------------------------------------


def image_callback(provider_job_id: str, action: str, **data: Any) -> bytes:
    """Seed 001's callback shape; its files on a loopback port the download guard refuses without connecting."""
    base = {"actions": action, "jobId": provider_job_id, "progress": "100", "prompt": "a cat", "hookUrl": "",
            "discordImage": "", "cdnImage": "", "components": [], "seed": "", "images": []}  # fmt: skip
    payload = {"status": "SUCCESS", "jobId": provider_job_id, "message": "success", "data": base | data}
    return json.dumps(payload).encode()


async def accepted(harness: Harness, action: str, provider_job_id: str, **params: Any) -> str:
    """A job TTAPI took. All of a test's jobs are taken before any callback: a callback frees a slot and wakes the
    submitter, which would send a job still queued."""
    job, _ = await harness.store.create_job(NewJob("ttapi", action, params))
    await harness.store.claim_submission(job.id)
    await harness.store.record_submitted(job.id, provider_job_id)
    return job.id


async def test_the_job_json_shows_the_seed_the_described_prompts_the_next_actions_and_the_grid(
    harness: Harness,
) -> None:
    grid, tiles = "http://127.0.0.1:9/grid.png", [f"http://127.0.0.1:9/{i}.png" for i in range(4)]
    buttons = [f"upsample{i}" for i in range(1, 5)] + [f"variation{i}" for i in range(1, 5)]
    imagine = await accepted(harness, "imagine", "tt-i", prompt="a cat")
    seed = await accepted(harness, "seed", "tt-s")
    describe = await accepted(harness, "describe", "tt-d", image_base64="aGk=")
    video = await harness.submitted_job("tt-v")
    described = "\n\n".join(f"{i}\ufe0f\u20e3 a cat on a mat, take {i}" for i in range(1, 5))
    for job_id, body in [
        (imagine, image_callback("tt-i", "imagine", cdnImage=grid, images=tiles, components=buttons)),
        (seed, image_callback("tt-s", "seed", seed="3282937712")),
        (describe, image_callback("tt-d", "describe", prompt=described)),
        (video, ttapi_callback("tt-v")),
    ]:
        assert (await harness.client.post(harness.hook_path(job_id), content=body)).status_code == 200

    async def result(job_id: str) -> dict[str, Any]:
        shown = (await harness.client.get(f"/api/jobs/{job_id}", headers=AUTH)).json()
        return dict(shown["result"])

    nothing = {"seed": None, "prompts": None, "actions": None, "cover_url": None}
    assert await result(imagine) == nothing | {"actions": buttons, "cover_url": grid}  # its seed "" is not known
    assert await result(seed) == nothing | {"seed": "3282937712", "actions": []}
    assert await result(describe) == nothing | {
        "prompts": [f"a cat on a mat, take {i}" for i in range(1, 5)],
        "actions": [],
    }
    assert await result(video) == nothing  # a TTAPI video result names none of them
    waiting, _ = await harness.store.create_job(NewJob("ttapi", "imagine", {"prompt": "later"}))
    assert await result(waiting.id) == nothing
    listed = (await harness.client.get("/api/jobs", headers=AUTH)).json()["jobs"]
    assert {job["id"]: job["result"] for job in listed}[seed]["seed"] == "3282937712"
