"""The APIMart simulator under real uvicorn, fed requests the provider module builds, delivering to a recorder."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import anyio
import httpx
import pytest

from receiver.serving import bind_socket, socket_url
from storage import JobStatus
from submitter.providers import Rejection, apimart
from submitter.simulators import video_bytes
from submitter.simulators.apimart import APIMartSimulator
from tests.submitter.support import Recorder, make_job, refusal, serving, until

pytestmark = pytest.mark.anyio

KEY = "sim-key"
PROMPT = "waves breaking on a black sand beach"
IMAGE = "https://cdn.example.com/frames/first.png"
SUBMIT = "/v1/midjourney/generations/video"
HOOK_PATH = "/hooks/apimart/tok3n"  # the webhook base; APIMart appends /callback


async def submit(client: httpx.AsyncClient, hook: str, key: str = KEY, **params: Any) -> httpx.Response:
    """What the submission worker would send for a job with these params (the module builds the request)."""
    job = make_job("apimart", params={"prompt": PROMPT, "image_url": IMAGE} | params)
    request = apimart.build_request(job, None, key, hook)
    return await client.request(request.method, request.path, json=request.json, headers=dict(request.headers))


async def post(client: httpx.AsyncClient, body: dict[str, Any], key: str = KEY) -> httpx.Response:
    return await client.post(SUBMIT, json=body, headers={"Authorization": f"Bearer {key}"})


def task_id_of(response: httpx.Response) -> str:
    return apimart.parse_submit_response(response.status_code, response.content)


async def test_submit_delivers_the_bare_task_to_webhook_slash_callback() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01), Recorder()
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        response = await submit(client, hook)
        task_id = task_id_of(response)
        assert task_id.startswith("task_")
        assert response.json() == {"code": 200, "data": [{"status": "submitted", "task_id": task_id}]}
        await until(lambda: sim.idle)

        [(path, body)] = recorder.calls
        assert path == "/hooks/apimart/tok3n/callback"
        payload = json.loads(body)
        assert "code" not in payload and payload["id"] == task_id and payload["status"] == "completed"
        [video] = payload["result"]["videos"]
        assert isinstance(video["url"], list) and video["expires_at"] > payload["completed"]

        result = apimart.parse_callback(body, {})
        assert result.status is JobStatus.SUCCEEDED and result.provider_job_id == task_id
        assert len(result.media_urls) == 1  # batch_size defaults to 1
        assert result.result["expires_at"] == video["expires_at"]
        downloaded = await client.get(result.media_urls[0])
        assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "video/mp4"
        internal = sim.job(task_id).job_id
        assert hashlib.sha256(downloaded.content).digest() == hashlib.sha256(video_bytes(internal, 0)).digest()
        assert [(d.url, d.status_code) for d in sim.deliveries] == [(f"{hook}/callback", 200)]
        assert sim.submissions[0].body == {
            "prompt": PROMPT,
            "image_urls": [IMAGE],
            "video_type": "vid_1.1_i2v_480",
            "webhook": hook,
        }


async def test_wrapped_callbacks_parse_as_the_bare_ones_and_match_fetch() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01, wrap_callbacks=True), Recorder()
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        task_id = task_id_of(await submit(client, hook, batch_size=4, resolution="720p"))
        await until(lambda: sim.idle)
        [payload] = recorder.payloads()
        assert payload["code"] == 200 and payload["data"]["id"] == task_id
        result = apimart.parse_callback(recorder.calls[0][1], {})
        assert result.status is JobStatus.SUCCEEDED and len(result.media_urls) == 4

        fetched = await client.get(f"/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {KEY}"})
        assert fetched.json() == payload
        assert apimart.parse_fetch_response(fetched.status_code, fetched.content) == result
        assert sim.job(task_id).extra["video_type"] == "vid_1.1_i2v_720"


async def test_webhook_ending_in_a_slash_gets_no_double_slash() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01), Recorder()
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        task_id_of(await submit(client, hook + "/"))
        await until(lambda: sim.idle)
        assert [path for path, _ in recorder.calls] == ["/hooks/apimart/tok3n/callback"]


async def test_an_imagine_is_animated_by_task_id_and_index() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01), Recorder()
    imagine = sim.add_imagine(prompt="a lighthouse at dusk")
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        params = {"task_id": imagine, "index": 2, "options": {"animate_mode": "auto"}}
        request = apimart.build_request(make_job("apimart", params=params), None, KEY, hook)
        response = await client.post(SUBMIT, json=request.json, headers=dict(request.headers))
        task_id = task_id_of(response)
        await until(lambda: sim.idle)
        assert sim.job(task_id).prompt == "a lighthouse at dusk"  # no prompt: the imagine's is inherited
        assert sim.submissions[0].body["task_id"] == imagine and sim.submissions[0].body["index"] == 2
        assert apimart.parse_callback(recorder.calls[0][1], {}).status is JobStatus.SUCCEEDED

        unknown = await post(client, {"task_id": "task_NOPE", "index": 0, "webhook": hook})
        assert unknown.status_code == 400 and "no finished imagine" in unknown.json()["error"]["message"]


async def test_end_frame_upgrades_the_video_type() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        raw = await post(client, {"prompt": PROMPT, "image_urls": [IMAGE], "end_url": IMAGE, "webhook": hook})
        assert sim.job(task_id_of(raw)).extra["video_type"] == "vid_1.1_i2v_start_end_480"
        built = await submit(client, hook, end_image_url=IMAGE, resolution="720p")
        assert sim.job(task_id_of(built)).extra["video_type"] == "vid_1.1_i2v_start_end_720"


def big_frame() -> str:
    return "data:image/png;base64," + base64.b64encode(b"\0" * (12 * 1024 * 1024 + 3)).decode()


SEED_RULES: list[tuple[dict[str, Any], str]] = [
    ({"prompt": PROMPT}, "image_urls or task_id is required"),
    ({"prompt": PROMPT, "image_urls": [IMAGE], "task_id": "IMAGINE", "index": 0}, "cannot be used together"),
    ({"prompt": PROMPT, "image_urls": [IMAGE, IMAGE]}, "exactly one image"),
    ({"task_id": "IMAGINE", "index": 4}, "index must be 0-3"),
    ({"prompt": PROMPT, "image_urls": [IMAGE], "index": 1}, "index must be 0-3, together with task_id"),
    ({"task_id": "IMAGINE", "animate_mode": "auto"}, "animate_mode=auto requires task_id and index"),
    ({"prompt": PROMPT, "image_urls": [IMAGE], "animate_mode": "auto"}, "requires task_id and index"),
    ({"prompt": PROMPT, "image_urls": [IMAGE], "batch_size": 3}, "batch_size must be one of 1, 2, 4"),
    ({"prompt": PROMPT, "image_urls": [IMAGE], "motion": "medium"}, "motion must be one of low, high"),
    ({"prompt": PROMPT, "image_urls": [IMAGE], "video_type": "vid_1.1_extend_480"}, "extend-style"),
    ({"image_urls": [IMAGE]}, "prompt is required"),
    ({"prompt": PROMPT, "image_urls": [big_frame()]}, "12 MiB"),
]


async def test_seed_rules_are_400_in_apimarts_envelope() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01), Recorder()
    sim.add_imagine("IMAGINE")
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        assert task_id_of(await post(client, {"task_id": "IMAGINE", "webhook": hook}))  # no index: the seed allows it
        for body, words in SEED_RULES:
            response = await post(client, body | {"webhook": hook})
            assert response.status_code == 400, body
            error = response.json()["error"]
            assert set(error) == {"code", "message", "param", "type"} and error["type"] == "invalid_request_error"
            assert words in error["message"] and "(request id: " in error["message"], (words, error)
            caught = refusal(apimart.parse_submit_response, response.status_code, response.content)
            assert caught.kind is Rejection.FATAL and words in caught.message
        assert len(sim.jobs()) == 1 and [s.status_code for s in sim.submissions] == [200] + [400] * len(SEED_RULES)


async def test_wrong_bearer_is_401_with_the_observed_envelope() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01), Recorder()
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        response = await submit(client, hook, key="wrong")
        assert response.status_code == 401
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("", "apimart_error") and "invalid API key" in error["message"]
        caught = refusal(apimart.parse_submit_response, response.status_code, response.content)
        assert caught.kind is Rejection.FATAL
        assert (await client.get("/v1/tasks/task_x")).status_code == 401
        assert sim.jobs() == []


async def test_4xx_answer_is_not_redelivered_and_frees_the_slot() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01), Recorder((404,))
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        task_id_of(await submit(client, hook))
        await until(lambda: sim.idle)
        await anyio.sleep(0.05)  # several retry delays: nothing more comes
        assert [d.status_code for d in sim.deliveries] == [404] and len(recorder.calls) == 1


async def test_5xx_answer_is_redelivered_until_2xx() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01), Recorder((500, 503))
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        task_id_of(await submit(client, hook))
        await until(lambda: sim.idle)
        assert [d.status_code for d in sim.deliveries] == [500, 503, 200]
        assert len({body for _, body in recorder.calls}) == 1


async def test_no_answer_is_tried_four_times_in_all() -> None:
    closed = bind_socket()
    dead = f"{socket_url(closed)}/hooks/apimart/tok3n"
    closed.close()
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01), Recorder()
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, _hook):
        task_id_of(await submit(client, dead))
        await until(lambda: sim.idle)
        assert [(d.url, d.status_code) for d in sim.deliveries] == [(f"{dead}/callback", None)] * 4


async def test_failed_job_callback_carries_apimarts_error() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01), Recorder()
    sim.fail_job_when("black sand", "prompt rejected by moderation")
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        task_id = task_id_of(await submit(client, hook))
        await until(lambda: sim.idle)
        [payload] = recorder.payloads()
        assert payload["status"] == "failed" and payload["error"]["type"] == "task_failed"
        result = apimart.parse_callback(recorder.calls[0][1], {})
        assert result.status is JobStatus.FAILED and result.provider_job_id == task_id
        assert result.error == "prompt rejected by moderation"


async def test_fetch_reports_processing_then_completed_and_404_for_unknown() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        task_id = task_id_of(await submit(client, hook))
        headers = {"Authorization": f"Bearer {KEY}"}
        pending = await client.get(f"/v1/tasks/{task_id}", headers=headers)
        assert pending.json()["code"] == 200 and pending.json()["data"]["status"] == "processing"
        assert apimart.parse_fetch_response(pending.status_code, pending.content).status is JobStatus.RUNNING
        assert await sim.deliver(task_id) == [200]
        done = await client.get(f"/v1/tasks/{task_id}", headers=headers)
        assert done.json()["data"] == recorder.payloads()[0]
        unknown = await client.get("/v1/tasks/task_NOPE", headers=headers)
        assert unknown.status_code == 404
        caught = refusal(apimart.parse_fetch_response, unknown.status_code, unknown.content)
        assert caught.kind is Rejection.FATAL


async def test_reject_next_build_request_failed_is_fatal_and_429_is_retried() -> None:
    sim, recorder = APIMartSimulator(api_key=KEY, delay=0.01, auto_deliver=False, max_in_flight=1), Recorder()
    sim.reject_next(500, "build_request_failed: invalid video_type")
    async with serving(sim, recorder, hook_path=HOOK_PATH) as (client, hook):
        refused = await submit(client, hook)
        assert refused.status_code == 500 and refused.json()["error"]["type"] == "server_error"
        caught = refusal(apimart.parse_submit_response, refused.status_code, refused.content)
        assert caught.kind is Rejection.FATAL
        task_id_of(await submit(client, hook))
        full = await submit(client, hook)
        assert full.status_code == 429 and full.json()["error"]["type"] == "rate_limit_error"
        caught = refusal(apimart.parse_submit_response, full.status_code, full.content)
        assert caught.kind is Rejection.RETRY
        assert [s.status_code for s in sim.submissions] == [500, 200, 429]
