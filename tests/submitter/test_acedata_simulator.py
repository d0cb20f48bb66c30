"""The AceData simulator under real uvicorn, talking to a tiny recording callback receiver."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import anyio
import httpx
import pytest

from storage import Job, JobStatus
from submitter.providers import Rejection, acedata
from submitter.simulators import video_bytes
from submitter.simulators.acedata import AceDataSimulator
from tests.submitter.support import Recorder, make_job, refusal, serving, until

pytestmark = pytest.mark.anyio

KEY = "sim-token"
PROMPT = "A cat sitting on a table"
IMAGE = "https://cdn.acedata.cloud/jgo1cw.jpg"
SEED_KEYS = ["image_url", "image_width", "image_height", "progress", "video_id", "video_urls", "task_id", "success"]
ERROR_KEYS = ["success", "error", "trace_id"]
AUTH = {"authorization": f"Bearer {KEY}"}


async def submit(client: httpx.AsyncClient, hook: str | None, **fields: Any) -> httpx.Response:
    body = {"action": "generate", "prompt": PROMPT, "image_url": IMAGE} | fields
    if hook is not None:
        body["callback_url"] = hook
    return await client.post("/midjourney/videos", json=body)


def task_id_of(response: httpx.Response) -> str:
    return acedata.parse_submit_response(response.status_code, response.content)


def parent_job(result: dict[str, Any]) -> Job:
    """A generate job AceData finished as task "p", with this result."""
    return make_job(
        "acedata",
        params={"prompt": PROMPT, "image_url": IMAGE},
        id="parent",
        status=JobStatus.SUCCEEDED,
        provider_job_id="p",
        progress=100,
        result=result,
        attempts=1,
    )


async def send(client: httpx.AsyncClient, request: Any) -> httpx.Response:
    """A ProviderRequest from the module, sent as the submission worker sends it."""
    return await client.request(request.method, request.path, headers=dict(request.headers), json=request.json)


async def test_generate_answers_the_task_id_and_delivers_the_seed_callback() -> None:
    sim, recorder = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        job = dataclasses.replace(parent_job({}), status=JobStatus.QUEUED)
        response = await send(client, acedata.build_request(job, None, KEY, hook))
        assert response.status_code == 200
        task_id = task_id_of(response)
        assert response.json() == {"task_id": task_id}
        await until(lambda: sim.idle)

        [payload] = recorder.payloads()
        assert list(payload) == SEED_KEYS
        assert recorder.headers[0]["content-type"] == "application/json"
        assert not any("signature" in name for name in recorder.headers[0])
        assert payload["success"] is True and payload["task_id"] == task_id and payload["progress"] == 100
        assert payload["image_url"] == IMAGE and (payload["image_width"], payload["image_height"]) == (560, 688)
        assert payload["video_id"].isdigit() and len(payload["video_id"]) == 16

        result = acedata.parse_callback(recorder.bodies[0], {})
        assert result.status is JobStatus.SUCCEEDED and result.provider_job_id == task_id
        assert result.result["video_id"] == payload["video_id"]
        base = str(client.base_url).rstrip("/")
        assert result.media_urls == tuple(f"{base}/cdn/{task_id}/{i}.mp4" for i in range(4))
        for index, url in enumerate(result.media_urls):
            video = await client.get(url)
            assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
            assert hashlib.sha256(video.content).digest() == hashlib.sha256(video_bytes(task_id, index)).digest()
        [submission] = sim.submissions
        assert (submission.path, submission.status_code, submission.job_id) == ("/midjourney/videos", 200, task_id)
        assert submission.body == {
            "action": "generate",
            "prompt": PROMPT,
            "image_url": IMAGE,
            "mode": "fast",
            "callback_url": hook,
        }


async def test_extend_by_the_modules_request_names_the_video_id_and_gets_a_fresh_one() -> None:
    sim, recorder = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        parent_task = task_id_of(await submit(client, hook, resolution="480p", loop=True))
        await until(lambda: len(recorder.bodies) == 1)
        parent = parent_job(acedata.parse_callback(recorder.bodies[0], {}).result)

        child = dataclasses.replace(parent, id="child", action="extend", params={"index": 2}, result={})
        response = await send(client, acedata.build_request(child, parent, KEY, hook))
        child_task = task_id_of(response)
        assert child_task != parent_task
        await until(lambda: len(recorder.bodies) == 2)

        body = sim.job(child_task).body
        assert body["video_id"] == parent.result["video_id"] and body["video_index"] == 2 and "prompt" not in body
        payload = recorder.payloads()[1]
        assert payload["task_id"] == child_task and payload["success"] is True
        assert payload["video_id"] != parent.result["video_id"] and payload["video_id"].isdigit()
        assert payload["image_url"] == IMAGE  # the parent's cover
        assert sim.job(child_task).kind == "extend" and sim.job(child_task).prompt == PROMPT
        assert len(acedata.parse_callback(recorder.bodies[1], {}).media_urls) == 4


async def test_extend_needs_the_video_id_of_a_finished_job_and_a_valid_index() -> None:
    sim, recorder = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        unfinished = task_id_of(await submit(client, hook))
        cases: list[tuple[dict[str, Any], str]] = [
            ({"video_id": "1751816807896311"}, "not found"),
            ({"video_id": unfinished}, "not found"),  # a task id is not a video id, and it has none yet
            ({"video_index": 0}, "video_id is required"),
        ]
        for fields, message in cases:
            response = await client.post("/midjourney/videos", json={"action": "extend", "prompt": PROMPT} | fields)
            assert response.status_code == 400, fields
            assert list(response.json()) == ERROR_KEYS and response.json()["error"]["code"] == "bad_request"
            assert message in response.json()["error"]["message"]
        await sim.deliver(unfinished)
        video_id = sim.job(unfinished).extra["video_id"]
        for index in (4, -1, "1"):
            extend = {"action": "extend", "video_id": video_id, "video_index": index}
            response = await client.post("/midjourney/videos", json=extend)
            assert response.status_code == 400 and "video_index must be 0-3" in response.json()["error"]["message"]
        response = await client.post("/midjourney/videos", json={"action": "extend", "video_id": video_id})
        assert response.status_code == 200  # video_index defaults to 0
        assert [s.status_code for s in sim.submissions] == [200, 400, 400, 400, 400, 400, 400, 200]


BAD_GENERATE_BODIES: list[
    tuple[dict[str, Any], str]
] = [  # (fields changed, None meaning left out; what the refusal says)
    ({"action": None}, "action must be generate or extend"),
    ({"action": "upscale"}, "action must be generate or extend"),
    ({"prompt": None}, "prompt is required"),
    ({"image_url": ""}, "image_url is required"),
    ({"mode": "relax"}, "mode must be one of fast, turbo"),
    ({"resolution": "1080p"}, "resolution must be one of 480p, 720p"),
    ({"loop": "yes"}, "loop must be one of"),
    ({"loop": 1}, "loop must be one of"),
    ({"end_image_url": 3}, "end_image_url must be a string"),
]


async def test_bad_generate_bodies_are_400_bad_request() -> None:
    sim, recorder = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        for fields, message in BAD_GENERATE_BODIES:
            body: dict[str, Any] = {"action": "generate", "prompt": PROMPT, "image_url": IMAGE, "callback_url": hook}
            body |= fields
            response = await client.post("/midjourney/videos", json={k: v for k, v in body.items() if v is not None})
            assert response.status_code == 400, fields
            assert response.json()["success"] is False and response.json()["error"]["code"] == "bad_request"
            assert message in response.json()["error"]["message"], fields
            caught = refusal(task_id_of, response)
            assert caught.kind is Rejection.FATAL and "400 bad_request" in caught.message
        response = await client.post("/midjourney/videos", content=b"not json")
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
        assert sim.in_flight == 0 and sim.jobs() == []
        assert [s.status_code for s in sim.submissions] == [400] * (len(BAD_GENERATE_BODIES) + 1)


async def test_wrong_token_is_401_invalid_token() -> None:
    sim, recorder = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        body = {"action": "generate", "prompt": PROMPT, "image_url": IMAGE, "callback_url": hook}
        for headers in ({"authorization": "Bearer wrong"}, {"authorization": KEY}, {"authorization": ""}):
            response = await client.post("/midjourney/videos", json=body, headers=headers)
            assert response.status_code == 401 and list(response.json()) == ERROR_KEYS
            assert response.json()["error"]["code"] == "invalid_token"
            caught = refusal(task_id_of, response)
            assert caught.kind is Rejection.FATAL
            assert caught.message.startswith("acedata: 401 invalid_token: invalid or missing")
        retrieve = {"action": "retrieve", "id": "x"}
        fetched = await client.post("/midjourney/tasks", json=retrieve, headers={"authorization": "Bearer wrong"})
        assert fetched.status_code == 401 and fetched.json()["error"]["code"] == "invalid_token"
        assert [s.status_code for s in sim.submissions] == [401, 401, 401] and sim.jobs() == []


async def test_too_many_requests_until_a_job_ends() -> None:
    sim = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False, max_in_flight=2)
    async with serving(sim, Recorder((500,)), AUTH) as (client, hook):
        first, _second = task_id_of(await submit(client, hook)), task_id_of(await submit(client, hook))
        full = await submit(client, hook)
        assert full.status_code == 429 and full.json()["error"]["code"] == "too_many_requests"
        caught = refusal(task_id_of, full)
        assert caught.kind is Rejection.RETRY and "429 too_many_requests" in caught.message

        assert await sim.deliver(first) == [500]  # the job ended: its slot is free, whoever heard of it
        assert sim.in_flight == 1 and (await submit(client, hook)).status_code == 200
        assert (await submit(client, hook)).status_code == 429
        assert [s.status_code for s in sim.submissions] == [200, 200, 429, 200, 429]


async def test_reject_next_uses_acedatas_codes() -> None:
    sim, recorder = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    sim.reject_next(403, "your balance is used up")
    sim.reject_next(500, "fetch failed")
    sim.reject_next(504, "upstream timed out")
    async with serving(sim, recorder, AUTH) as (client, hook):
        kinds = []
        for code in ("used_up", "api_error", "timeout"):
            refused = await submit(client, hook)
            assert refused.json()["error"]["code"] == code
            caught = refusal(task_id_of, refused)
            kinds.append(caught.kind)
            assert ("out of credit" in caught.message) is (code == "used_up")
        assert kinds == [Rejection.FATAL, Rejection.UNKNOWN, Rejection.UNKNOWN]
        assert (await submit(client, hook)).status_code == 200
        assert [s.status_code for s in sim.submissions] == [403, 500, 504, 200] and sim.in_flight == 1


async def test_fail_job_when_sends_the_seeds_error_envelope() -> None:
    sim, recorder = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    sim.fail_job_when("cat", "prompt violation")
    async with serving(sim, recorder, AUTH) as (client, hook):
        failed = task_id_of(await submit(client, hook))
        await until(lambda: sim.idle and len(recorder.bodies) == 1)
        fine = task_id_of(await submit(client, hook, prompt="a calm lake"))
        await until(lambda: sim.idle and len(recorder.bodies) == 2)
        failure, success = recorder.payloads()
        # Seed 002 "Error Response Example": success, error {code, message}, trace_id; no task_id.
        assert list(failure) == ["success", "error", "trace_id"] and failure["success"] is False
        assert failure["error"] == {"code": "api_error", "message": "prompt violation"}
        assert success["success"] is True and success["task_id"] == fine
        assert "video_id" not in sim.job(failed).extra  # nothing to extend


async def test_failure_names_task_sends_the_concepts_pages_shape() -> None:
    sim = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01, failure_names_task=True)
    sim.fail_job_when("cat", "prompt violation")
    async with serving(sim, Recorder(), AUTH) as (client, hook):
        failed = task_id_of(await submit(client, hook))
        await until(lambda: sim.idle and len(sim.deliveries) == 1)
        body = sim.deliveries[0].body
        assert list(json.loads(body)) == ["success", "error", "task_id", "trace_id"]
        result = acedata.parse_callback(body, {})
        assert result.provider_job_id == failed
        assert result.status is JobStatus.FAILED and result.error == "api_error: prompt violation"


async def test_unacknowledged_callback_is_delivered_three_times() -> None:
    sim, recorder = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder((500, 500, 500, 500))
    async with serving(sim, recorder, AUTH) as (client, hook):
        task_id = task_id_of(await submit(client, hook))
        await until(lambda: sim.idle)  # AceData gave up: the slot is free
        assert len(recorder.bodies) == 3 and len(set(recorder.bodies)) == 1
        assert [(d.job_id, d.status_code) for d in sim.deliveries] == [(task_id, 500)] * 3


async def test_callback_answered_204_on_the_second_try_is_not_sent_again() -> None:
    sim, recorder = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder((503, 204))
    async with serving(sim, recorder, AUTH) as (client, hook):
        task_id_of(await submit(client, hook))
        await until(lambda: sim.idle)
        await anyio.sleep(0.05)  # room for a third delivery, which must not come
        assert [d.status_code for d in sim.deliveries] == [503, 204] and len(recorder.bodies) == 2


async def test_retrieve_answers_the_task_record() -> None:
    sim, recorder = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        task_id = task_id_of(await submit(client, hook))
        request = acedata.fetch_request(dataclasses.replace(parent_job({}), provider_job_id=task_id), KEY)
        pending = await send(client, request)
        assert pending.status_code == 200
        assert pending.json()["id"] == task_id and pending.json()["request"]["prompt"] == PROMPT
        assert "finished_at" not in pending.json() and "response" not in pending.json()
        assert acedata.parse_fetch_response(pending.status_code, pending.content).status is JobStatus.RUNNING

        assert await sim.deliver(task_id) == [200]
        done = await send(client, request)
        assert done.json()["response"] == json.loads(recorder.bodies[0])
        assert done.json()["finished_at"] >= done.json()["created_at"]
        fetched = acedata.parse_fetch_response(done.status_code, done.content)
        assert fetched == acedata.parse_callback(recorder.bodies[0], {})
        assert fetched.status is JobStatus.SUCCEEDED

        by_task_id = await client.post("/midjourney/tasks", json={"action": "retrieve", "task_id": task_id})
        assert by_task_id.json() == done.json()
        batch = await client.post("/midjourney/tasks", json={"action": "retrieve_batch", "ids": [task_id, "nope"]})
        assert batch.json() == {"items": [done.json()], "count": 1}

        unknown = await send(client, acedata.fetch_request(parent_job({}), KEY))  # "p": no such task
        assert unknown.status_code == 404
        caught = refusal(acedata.parse_fetch_response, unknown.status_code, unknown.content)
        assert caught.kind is Rejection.FATAL and "task not found" in caught.message
        assert (await client.post("/midjourney/tasks", json={"id": task_id})).status_code == 400


async def test_without_callback_url_the_call_blocks_and_answers_the_result() -> None:
    sim, recorder = AceDataSimulator(api_key=KEY, progress_callbacks=False, delay=0.01, max_in_flight=1), Recorder()
    async with serving(sim, recorder, AUTH) as (client, _hook):
        response = await submit(client, None)
        assert response.status_code == 200 and list(response.json()) == SEED_KEYS
        task_id = task_id_of(response)
        assert acedata.parse_callback(response.content, {}).media_urls[0].endswith(f"/cdn/{task_id}/0.mp4")
        assert sim.in_flight == 0 and sim.deliveries == [] and recorder.bodies == []
        assert (await submit(client, None)).status_code == 200
