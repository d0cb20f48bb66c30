from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing

import anyio
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from receiver.hooks import MAX_BODY
from storage import EventType, JobStatus
from submitter.tokens import SALT
from tests.receiver.conftest import SECRET, Harness, ttapi_callback

pytestmark = pytest.mark.anyio


async def test_a_valid_callback_is_stored_verbatim_and_applied(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    body = ttapi_callback("tt-1")
    response = await harness.client.post(harness.hook_path(job_id), content=body, headers={"x-trace": "abc"})
    assert response.status_code == 200
    job = await harness.store.get_job(job_id)
    assert job is not None and job.status is JobStatus.SUCCEEDED and len(job.videos) == 4
    rows = harness.snapshot()["callbacks"]
    assert len(rows) == 1 and rows[0][5] == body and ["x-trace", "abc"] in json.loads(rows[0][4])


async def test_progress_callbacks_only_update_progress(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    for status in ("PENDING_QUEUE", "ON_QUEUE"):
        body = json.loads(ttapi_callback("tt-1", status=status))
        body["data"]["progress"] = "40"
        response = await harness.client.post(harness.hook_path(job_id), json=body)
        assert response.status_code == 200
    job = await harness.store.get_job(job_id)
    assert job is not None and (job.status, job.progress, job.videos) == (JobStatus.RUNNING, 40, ())


def _expired_token(job_id: str) -> str:
    class EightDaysAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 8 * 24 * 3600

    return URLSafeTimedSerializer([SECRET], salt=SALT, signer=EightDaysAgo).dumps([job_id, "ttapi"])


@pytest.mark.parametrize(
    "make_path",
    [
        pytest.param(lambda h, job: "/hooks/ttapi/not-a-token", id="garbage"),
        pytest.param(
            lambda h, job: (
                "/hooks/ttapi/" + URLSafeTimedSerializer(["another-secret-xxxxxxxx"], salt=SALT).dumps([job, "ttapi"])
            ),
            id="forged",
        ),
        pytest.param(lambda h, job: "/hooks/ttapi/" + _expired_token(job), id="expired"),
        pytest.param(
            lambda h, job: "/hooks/ttapi/" + h.hook_path(job, "acedata").rsplit("/", 1)[1], id="wrong-provider"
        ),
        pytest.param(lambda h, job: _tampered(h.hook_path(job)), id="tampered"),
    ],
)
async def test_bad_tokens_get_403_and_change_nothing(harness: Harness, make_path) -> None:  # type: ignore[no-untyped-def]
    job_id = await harness.submitted_job("tt-1")
    before = harness.snapshot()
    response = await harness.client.post(make_path(harness, job_id), content=ttapi_callback("tt-1"))
    assert response.status_code == 403, response.text
    assert set(response.json()) == {"error", "detail"}
    assert harness.snapshot() == before


async def test_a_callback_about_another_provider_job_gets_403(harness: Harness) -> None:
    mine = await harness.submitted_job("tt-1")
    await harness.submitted_job("tt-2")
    before = harness.snapshot()
    response = await harness.client.post(harness.hook_path(mine), content=ttapi_callback("tt-2"))
    assert response.status_code == 403
    assert harness.snapshot() == before


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (json.dumps({"jobId": "tt-1", "data": {}}).encode(), 400),  # no status
        (b"x" * (MAX_BODY + 1), 413),
    ],
    ids=["broken", "not-an-object", "no-status", "oversized"],
)
async def test_bad_bodies_are_refused_and_change_nothing(harness: Harness, body: bytes, status: int) -> None:
    job_id = await harness.submitted_job("tt-1")
    before = harness.snapshot()
    response = await harness.client.post(harness.hook_path(job_id), content=body)
    assert response.status_code == status
    assert harness.snapshot() == before


async def test_an_oversized_body_without_content_length_is_refused(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    before = harness.snapshot()

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"x" * (MAX_BODY // 4)

    response = await harness.client.post(harness.hook_path(job_id), content=chunks())
    assert response.status_code == 413
    assert harness.snapshot() == before


async def test_our_own_failure_answers_503_so_the_provider_retries(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    before = harness.snapshot()
    with closing(sqlite3.connect(harness.db_path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        response = await harness.client.post(harness.hook_path(job_id), content=ttapi_callback("tt-1"))
        other.execute("ROLLBACK")
    assert response.status_code == 503
    assert harness.snapshot() == before
    retry = await harness.client.post(harness.hook_path(job_id), content=ttapi_callback("tt-1"))
    assert retry.status_code == 200


async def test_redelivery_one_after_another_and_at_once_has_one_effect(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    body, path = ttapi_callback("tt-1"), harness.hook_path(job_id)
    statuses = [(await harness.client.post(path, content=body)).status_code for _ in range(5)]

    async def post() -> None:
        statuses.append((await harness.client.post(path, content=body)).status_code)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(post)
    assert statuses == [200] * 10
    [row] = harness.snapshot()["callbacks"]  # stored once, its re-deliveries counted (storage/inbox.py)
    assert row[7] == "applied" and row[10] == 10
    events = harness.snapshot()["events"]
    assert [row[1] for row in events].count(EventType.JOB_SUCCEEDED.value) == 1
    assert len(harness.snapshot()["videos"]) == 4


async def test_hooks_and_healthz_are_open_but_unknown_providers_are_not_found(harness: Harness) -> None:
    assert (await harness.client.get("/healthz")).json() == {"ok": True}
    response = await harness.client.post("/hooks/nosuch/token", content=b"{}")
    assert response.status_code == 404


def _tampered(path: str) -> str:
    """`path` with one character of its signature changed: one whose every bit counts (the last character of a
    base64 signature carries padding bits, and a change there can decode to the same bytes)."""
    position = len(path) - 6
    return path[:position] + ("A" if path[position] != "A" else "B") + path[position + 1 :]
