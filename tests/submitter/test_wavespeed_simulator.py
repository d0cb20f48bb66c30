"""The WaveSpeed simulator under real uvicorn, talking to a tiny recording callback receiver.

The simulator's answers are read with the provider module, and its signatures checked with the module's verifier
against the secret the simulator's own secret endpoint hands out: the two sides are written independently, so
either one drifting from WaveSpeed's scheme fails here.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import anyio
import httpx
import pytest

from storage import JobStatus
from submitter.providers import BadSignature, Rejection, wavespeed
from submitter.simulators import video_bytes
from submitter.simulators.wavespeed import WaveSpeedSimulator
from tests.submitter.support import Recorder, make_job, refusal, serving, until

pytestmark = pytest.mark.anyio

KEY = "sim-key"
PROMPT = "a lighthouse at dusk, waves rolling in"
IMAGE = "https://d2g64w682n9w0w.cloudfront.net/media/images/1745492812795806468_P4jFBxup.jpg"
SUBMIT = "/api/v3/midjourney/image-to-video"
PREDICTION_KEYS = ["id", "model", "outputs", "urls", "has_nsfw_contents", "status", "created_at", "error"]
AUTH = {"Authorization": f"Bearer {KEY}"}


async def submit(client: httpx.AsyncClient, hook: str | None, **params: Any) -> httpx.Response:
    """Submit the way the worker does: the provider module's request, sent as it says."""
    job = make_job("wavespeed", params={"prompt": PROMPT, "image_url": IMAGE} | params)
    request = wavespeed.build_request(job, None, KEY, hook or "")
    query = dict(request.params) if hook is not None else {}
    return await client.request(
        request.method, request.path, headers=dict(request.headers), json=request.json, params=query
    )


async def secret_of(client: httpx.AsyncClient) -> str:
    request = wavespeed.secret_request(KEY)
    response = await client.request(request.method, request.path, headers=dict(request.headers))
    assert wavespeed.parse_secret is not None
    return wavespeed.parse_secret(response.status_code, response.content)


def job_id_of(response: httpx.Response) -> str:
    return wavespeed.parse_submit_response(response.status_code, response.content)


async def test_submit_delivers_a_signed_prediction_and_serves_the_video() -> None:
    sim, recorder = WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        secret = await secret_of(client)
        assert secret == sim.webhook_secret and secret.startswith("whsec_")
        response = await submit(client, hook + "?token=t0k&n=1", options={"aspect_ratio": "16:9", "chaos": 5})
        assert response.status_code == 200
        job_id = job_id_of(response)
        answer = response.json()
        assert list(answer) == ["code", "message", "data"] and answer["code"] == 200
        assert answer["message"] == "success" and list(answer["data"])[:8] == PREDICTION_KEYS
        assert answer["data"]["status"] == "created" and answer["data"]["outputs"] == []
        assert answer["data"]["model"] == "midjourney/image-to-video"
        await until(lambda: sim.idle)

        [submission] = sim.submissions
        assert submission.query == {"webhook": hook + "?token=t0k&n=1"}
        assert submission.body == {"image": IMAGE, "prompt": PROMPT, "aspect_ratio": "16:9", "chaos": 5}
        assert recorder.queries == [{"token": "t0k", "n": "1"}]  # the hook's own query arrives intact

        [body], [headers] = recorder.bodies, recorder.headers
        wavespeed.verify_signature(body, headers, secret, time.time())
        assert headers["content-type"] == "application/json" and headers["webhook-signature"].startswith("v3,")
        [payload] = recorder.payloads()
        assert "code" not in payload and list(payload) == [*PREDICTION_KEYS, "executionTime", "timings"]
        assert payload["status"] == "completed" and payload["error"] == ""
        assert payload["created_at"] == answer["data"]["created_at"] and payload["created_at"].endswith("Z")

        result = wavespeed.parse_callback(body, headers)
        assert result.status is JobStatus.SUCCEEDED and result.provider_job_id == job_id
        base = str(client.base_url).rstrip("/")
        assert result.media_urls == (f"{base}/cdn/{job_id}/0.mp4",)  # one clip per job by default
        assert result.result["has_nsfw_contents"] == [False]
        video = await client.get(result.media_urls[0])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        assert hashlib.sha256(video.content).digest() == hashlib.sha256(video_bytes(job_id, 0)).digest()


async def test_signatures_need_the_simulators_own_secret_and_a_redelivery_keeps_its_webhook_id() -> None:
    sim, recorder = (
        WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, webhook_secret="whsec_c2ltLXNlY3JldA==", delay=0.01),
        Recorder(),
    )
    assert WaveSpeedSimulator().webhook_secret != WaveSpeedSimulator().webhook_secret
    async with serving(sim, recorder, AUTH) as (client, hook):
        assert await secret_of(client) == "whsec_c2ltLXNlY3JldA=="
        job_id = job_id_of(await submit(client, hook))
        await until(lambda: len(recorder.bodies) == 1)
        assert await sim.deliver(job_id, times=2) == [200, 200]
        ids = [headers["webhook-id"] for headers in recorder.headers]
        assert len(set(ids)) == 1 and len(set(recorder.bodies)) == 1  # one message, delivered three times
        for body, headers in zip(recorder.bodies, recorder.headers, strict=True):
            assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
            wavespeed.verify_signature(body, headers, "whsec_c2ltLXNlY3JldA==", time.time())
            with pytest.raises(BadSignature):
                wavespeed.verify_signature(body, headers, WaveSpeedSimulator().webhook_secret, time.time())
            with pytest.raises(BadSignature):  # the Standard Webhooks reading of the same secret
                wavespeed.verify_signature(body, headers, "whsec_sim-secret", time.time())


async def test_videos_per_job_sets_how_many_outputs_a_prediction_has() -> None:
    sim, recorder = WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, delay=0.01, videos_per_job=4), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        job_id = job_id_of(await submit(client, hook, resolution="720p", motion="high"))
        await until(lambda: len(recorder.bodies) == 1)
        [payload] = recorder.payloads()
        assert len(payload["outputs"]) == 4 and payload["has_nsfw_contents"] == [False] * 4
        assert sim.job(job_id).body == {"image": IMAGE, "prompt": PROMPT, "resolution": "720p", "motion": "high"}


async def test_seed_validation_answers_400_in_wavespeeds_envelope() -> None:
    sim, recorder = (
        WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False),
        Recorder(),
    )
    async with serving(sim, recorder, AUTH) as (client, hook):
        base = {"image": IMAGE, "prompt": PROMPT}
        cases = [
            ({"prompt": PROMPT}, "image is required"),
            ({"image": IMAGE}, "prompt is required"),
            (base | {"prompt": 7}, "prompt must be a string"),
            (base | {"aspect_ratio": "9:16"}, "aspect_ratio must be one of"),
            (base | {"quality": True}, "quality must be one of"),
            (base | {"version": 7}, "version must be one of 6, 6.1, 7"),
            (base | {"enable_base64_output": "false"}, "enable_base64_output"),
            (base | {"motion": "medium"}, "motion must be one of low, high"),
            (base | {"stylize": 1001}, "stylize must be an integer in 0 ~ 1000"),
            (base | {"seed": -2}, "seed must be an integer"),
            (base | {"chaos": 1.5}, "chaos must be an integer"),
        ]
        for body, message in cases:
            response = await client.post(SUBMIT, json=body, params={"webhook": hook})
            assert response.status_code == 400, body
            assert response.json() == {"code": 400, "message": response.json()["message"], "data": None}
            assert message in response.json()["message"], (body, response.json())
            caught = refusal(wavespeed.parse_submit_response, response.status_code, response.content)
            assert caught.kind is Rejection.FATAL
        fine = {"image": IMAGE, "prompt": PROMPT, "quality": 0.5, "seed": 2147483647, "undeclared": "dropped"}
        assert (await client.post(SUBMIT, json=fine, params={"webhook": hook})).status_code == 200
        assert [s.status_code for s in sim.submissions] == [400] * len(cases) + [200] and sim.in_flight == 1


async def test_wrong_key_is_401_everywhere() -> None:
    sim, recorder = WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        for auth in ("Bearer wrong", KEY, ""):
            headers = {"Authorization": auth}
            body = {"image": IMAGE, "prompt": PROMPT}
            response = await client.post(SUBMIT, json=body, params={"webhook": hook}, headers=headers)
            assert response.status_code == 401 and response.json()["code"] == 401
            caught = refusal(wavespeed.parse_submit_response, response.status_code, response.content)
            assert caught.kind is Rejection.FATAL
            for path in ("/api/v3/webhook/secret", "/api/v3/predictions/x/result"):
                assert (await client.get(path, headers=headers)).status_code == 401
        assert [s.status_code for s in sim.submissions] == [401] * 3 and sim.in_flight == 0 and sim.jobs() == []


async def test_jobs_over_the_limit_wait_for_a_slot_rather_than_being_refused() -> None:
    sim = WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, delay=0.3, max_in_flight=1)
    async with serving(sim, Recorder((500, 500, 500, 500)), AUTH) as (client, hook):
        first, second = job_id_of(await submit(client, hook)), job_id_of(await submit(client, hook))
        waiting = await client.get(f"/api/v3/predictions/{second}/result")
        assert waiting.json()["data"]["status"] == "created"  # "excess concurrent tasks wait" (providers.md §4.5)
        assert (await client.get(f"/api/v3/predictions/{first}/result")).json()["data"]["status"] == "processing"
        await until(lambda: sim.job(first).ended)
        # The first job ended though nobody acknowledged its callback: the second takes its slot.
        await until(lambda: sim.job(second).status == "succeeded")
        assert [s.status_code for s in sim.submissions] == [200, 200]


async def test_reject_next_answers_in_wavespeeds_envelope() -> None:
    sim, recorder = (
        WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False),
        Recorder(),
    )
    sim.reject_next(503, "service unavailable")
    sim.reject_next(402, "insufficient balance")
    async with serving(sim, recorder, AUTH) as (client, hook):
        kinds = []
        for _ in range(2):
            refused = await submit(client, hook)
            caught = refusal(wavespeed.parse_submit_response, refused.status_code, refused.content)
            kinds.append((refused.status_code, caught.kind, refused.json()["message"]))
        assert kinds == [
            (503, Rejection.UNKNOWN, "service unavailable"),
            (402, Rejection.FATAL, "insufficient balance"),
        ]
        assert (await submit(client, hook)).status_code == 200


async def test_fail_job_when_sends_a_signed_failed_prediction() -> None:
    sim, recorder = WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    sim.fail_job_when("lighthouse", "image could not be processed")
    async with serving(sim, recorder, AUTH) as (client, hook):
        job_id = job_id_of(await submit(client, hook))
        await until(lambda: sim.idle)
        [payload] = recorder.payloads()
        assert payload["status"] == "failed" and payload["error"] == "image could not be processed"
        assert payload["outputs"] == [] and payload["has_nsfw_contents"] == []
        wavespeed.verify_signature(recorder.bodies[0], recorder.headers[0], sim.webhook_secret, time.time())
        result = wavespeed.parse_callback(recorder.bodies[0], recorder.headers[0])
        assert (result.provider_job_id, result.status, result.error) == (
            job_id,
            JobStatus.FAILED,
            "image could not be processed",
        )


async def test_unacknowledged_callback_is_delivered_four_times_as_one_message() -> None:
    sim, recorder = (
        WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, delay=0.01),
        Recorder((500, 404, 503, 500, 500)),
    )
    async with serving(sim, recorder, AUTH) as (client, hook):
        job_id = job_id_of(await submit(client, hook))
        await until(lambda: sim.idle)  # it gave up: the slot is free
        assert [(d.job_id, d.status_code) for d in sim.deliveries] == [
            (job_id, 500),
            (job_id, 404),
            (job_id, 503),
            (job_id, 500),
        ]
        assert len({headers["webhook-id"] for headers in recorder.headers}) == 1 and len(set(recorder.bodies)) == 1
        for body, headers in zip(recorder.bodies, recorder.headers, strict=True):  # each attempt signed anew
            wavespeed.verify_signature(body, headers, sim.webhook_secret, time.time())


async def test_callback_acknowledged_with_any_2xx_is_not_sent_again() -> None:
    sim, recorder = WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder((502, 204))
    async with serving(sim, recorder, AUTH) as (client, hook):
        job_id_of(await submit(client, hook))
        await until(lambda: sim.idle)
        await anyio.sleep(0.05)
        assert [d.status_code for d in sim.deliveries] == [502, 204]


async def test_result_endpoint_answers_the_prediction_in_its_envelope() -> None:
    sim, recorder = (
        WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False),
        Recorder(),
    )
    async with serving(sim, recorder, AUTH) as (client, hook):
        job_id = job_id_of(await submit(client, hook))
        request = wavespeed.fetch_request(make_job("wavespeed", provider_job_id=job_id), KEY)
        pending = await client.request(request.method, request.path, headers=dict(request.headers))
        assert pending.json()["code"] == 200 and pending.json()["data"]["status"] == "processing"
        assert wavespeed.parse_fetch_response(pending.status_code, pending.content).status is JobStatus.RUNNING

        assert await sim.deliver(job_id) == [200]
        done = await client.request(request.method, request.path, headers=dict(request.headers))
        assert done.json()["data"] == json.loads(recorder.bodies[0])
        assert (await client.get(f"/api/v3/predictions/{job_id}")).json() == done.json()
        result = wavespeed.parse_fetch_response(done.status_code, done.content)
        assert result.status is JobStatus.SUCCEEDED and len(result.media_urls) == 1
        assert done.json()["data"]["urls"]["get"] == f"{str(client.base_url).rstrip('/')}{request.path}"

        unknown = await client.get("/api/v3/predictions/no-such-prediction/result")
        assert unknown.status_code == 404 and unknown.json()["message"] == "prediction not found"
        caught = refusal(wavespeed.parse_fetch_response, unknown.status_code, unknown.content)
        assert caught.kind is Rejection.FATAL


async def test_job_without_webhook_finishes_for_the_result_endpoint_only() -> None:
    sim, recorder = WaveSpeedSimulator(api_key=KEY, progress_callbacks=False, delay=0.01, max_in_flight=1), Recorder()
    async with serving(sim, recorder, AUTH) as (client, _hook):
        job_id = job_id_of(await submit(client, None))
        assert sim.submissions[0].query == {}
        await until(lambda: sim.job(job_id).status == "succeeded")
        fetched = await client.get(f"/api/v3/predictions/{job_id}/result")
        assert wavespeed.parse_fetch_response(fetched.status_code, fetched.content).status is JobStatus.SUCCEEDED
        assert sim.in_flight == 0 and sim.deliveries == [] and recorder.bodies == []
        assert (await submit(client, None)).status_code == 200
