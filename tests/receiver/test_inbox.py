"""What the inbox keeps: real failure callbacks that name no job (issue 8.4), text no database can store as UTF-8
(issue 8.4), and a bounded record of re-deliveries and replays (issue 9.4)."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from storage import EventType, JobStatus, NewJob
from storage.inbox import MAX_BODIES
from submitter.providers import PROVIDERS
from tests.receiver.conftest import Harness, ttapi_callback

pytestmark = pytest.mark.anyio

# Seed 000 / providers.md §2: TTAPI's failure callback has `data: null` and no job id.
TTAPI_FAILED = b'{"status":"FAILED","message":"The prompt violates our policy","data":null}'
# Seed 002 / providers.md §3: AceData's error envelope.
ACEDATA_FAILED = (
    b'{"success":false,"error":{"code":"forbidden","message":"the prompt was refused by moderation"},'
    b'"trace_id":"2cf86e86-22a4-46e1-ac2f-032c0f2a4e89"}'
)


async def test_a_ttapi_failure_without_a_job_id_fails_the_job_its_token_names(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    response = await harness.client.post(harness.hook_path(job_id), content=TTAPI_FAILED)
    assert response.status_code == 200
    job = await harness.store.get_job(job_id)
    assert job is not None and job.status is JobStatus.FAILED and job.error == "The prompt violates our policy"
    assert [e.type for e in await harness.store.job_events(job_id)][-1] == EventType.JOB_FAILED  # handled or not
    assert harness.snapshot()["callbacks"][0][5] == TTAPI_FAILED  # the raw bytes, as received


async def test_an_acedata_error_envelope_fails_the_job_its_token_names(harness: Harness) -> None:
    job, _ = await harness.store.create_job(
        NewJob("acedata", "generate", {"prompt": "p", "image_url": "https://i/a.png"})
    )
    await harness.store.claim_submission(job.id)
    await harness.store.record_submitted(job.id, "b726a27a")
    result = PROVIDERS["acedata"].parse_callback(ACEDATA_FAILED, {})
    assert result.provider_job_id is None  # nothing to check it against: the verified token names the job
    await harness.store.record_callback(job.id, "acedata", body=ACEDATA_FAILED, headers=[], result=result)
    settled = await harness.store.get_job(job.id)
    assert settled is not None and settled.status is JobStatus.FAILED
    assert settled.error == "forbidden: the prompt was refused by moderation"


async def test_a_failure_message_holding_a_lone_surrogate_is_stored_not_a_500(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    body = b'{"status":"FAILED","message":"bad prompt \\ud83d here","data":null}'
    response = await harness.client.post(harness.hook_path(job_id), content=body)
    assert response.status_code == 200
    job = await harness.store.get_job(job_id)
    assert job is not None and job.status is JobStatus.FAILED and job.error == "bad prompt \ufffd here"
    assert harness.snapshot()["callbacks"][0][5] == body
    listed = await harness.client.get("/api/jobs", headers={"Authorization": "Bearer test-api-token"})
    assert listed.status_code == 200 and listed.json()["jobs"][0]["error"] == "bad prompt \ufffd here"


async def test_a_replayed_callback_costs_no_more_disk(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    padded = json.loads(ttapi_callback("tt-1"))
    padded["pad"] = "x" * (1024 * 1024 - 2048)
    body = json.dumps(padded).encode()
    for _ in range(50):
        assert (await harness.client.post(harness.hook_path(job_id), content=body)).status_code == 200
    [row] = harness.snapshot()["callbacks"]
    assert row[10] == 50  # deliveries, counted
    assert await harness.store.callback_count(job_id) == 50


async def test_distinct_bodies_kept_per_job_are_bounded_first_ones_and_the_last(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    for n in range(3 * MAX_BODIES):
        body = ttapi_callback("tt-1", replay=n)
        assert (await harness.client.post(harness.hook_path(job_id), content=body)).status_code == 200
    rows = harness.snapshot()["callbacks"]
    assert len(rows) == MAX_BODIES
    kept = [json.loads(row[5])["replay"] for row in rows]
    assert kept == [*range(MAX_BODIES - 1), 3 * MAX_BODIES - 1]
    assert rows[-1][12] == 2 * MAX_BODIES  # the last row stands for the bodies it replaced
    assert await harness.store.callback_count(job_id) == 3 * MAX_BODIES


async def test_a_redelivery_with_the_same_webhook_id_is_recognised(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    first = await harness.client.post(
        harness.hook_path(job_id), content=ttapi_callback("tt-1"), headers={"webhook-id": "msg_1"}
    )
    again = await harness.client.post(  # re-signed with a new timestamp: other headers, same message
        harness.hook_path(job_id), content=ttapi_callback("tt-1", resent=True), headers={"webhook-id": "msg_1"}
    )
    assert (first.json()["effect"], again.json()["effect"]) == ("applied", "duplicate")
    [row] = harness.snapshot()["callbacks"]
    assert row[10] == 2


async def test_prune_drops_old_bodies_of_finished_jobs_and_keeps_their_digest(harness: Harness) -> None:
    done = await harness.submitted_job("tt-1")
    open_job = await harness.submitted_job("tt-2")
    body = ttapi_callback("tt-1")
    await harness.client.post(harness.hook_path(done), content=body)
    progress = ttapi_callback("tt-2", status="ON_QUEUE")
    await harness.client.post(harness.hook_path(open_job), content=progress)
    assert await harness.store.prune_callbacks(older_than=0.0) == 0  # nothing that old
    pruned = await harness.store.prune_callbacks(older_than=time.time() + 1)
    assert pruned == 1  # the running job's callback stays
    rows = {row[1]: row for row in harness.snapshot()["callbacks"]}
    assert rows[done][5] == b"" and rows[done][8] == hashlib.sha256(body).hexdigest() and rows[done][13] is not None
    assert rows[open_job][5] == progress


async def test_prune_from_the_api_needs_the_token_and_a_sane_age(harness: Harness) -> None:
    done = await harness.submitted_job("tt-1")
    body = ttapi_callback("tt-1")
    await harness.client.post(harness.hook_path(done), content=body)
    auth = {"Authorization": "Bearer test-api-token"}
    before = harness.snapshot()
    for bad in ({}, {"callbacks_older_than_days": "7"}, {"callbacks_older_than_days": -1}, {"x": 1}):
        response = await harness.client.post("/api/prune", json=bad, headers=auth)
        assert response.status_code == 400 and "callbacks_older_than_days" in response.json()["detail"]
    assert (await harness.client.post("/api/prune", json={"callbacks_older_than_days": 0})).status_code == 401
    assert harness.snapshot() == before
    kept = await harness.client.post("/api/prune", json={"callbacks_older_than_days": 1}, headers=auth)
    assert kept.json() == {"pruned": 0}  # received just now
    pruned = await harness.client.post("/api/prune", json={"callbacks_older_than_days": 0}, headers=auth)
    assert pruned.json() == {"pruned": 1}
    [row] = harness.snapshot()["callbacks"]
    assert row[5] == b"" and row[8] == hashlib.sha256(body).hexdigest()
