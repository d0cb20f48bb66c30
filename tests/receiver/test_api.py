from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from typing import Any

import anyio
import pytest

from storage import JobStatus
from tests.receiver.conftest import AUTH, Harness, ttapi_callback

pytestmark = pytest.mark.anyio

GENERATE = {"provider": "ttapi", "action": "generate", "prompt": "a cat", "image_url": "https://img.example/a.png"}


async def wait_for_requests(harness: Harness, count: int) -> None:
    with anyio.fail_after(5):
        while len(harness.provider.requests) < count:
            await anyio.sleep(0.01)


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/jobs"), ("POST", "/api/jobs"), ("GET", "/api/jobs/x")])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "test-api-token"}])
async def test_the_api_needs_the_token(harness: Harness, method: str, path: str, headers: dict[str, str]) -> None:
    before = harness.snapshot()
    response = await harness.client.request(method, path, headers=headers, json=GENERATE)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert harness.snapshot() == before


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
