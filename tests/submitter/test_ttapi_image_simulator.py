"""The TTAPI simulator's image API (seed 001) under real uvicorn, talking to a tiny recording callback receiver."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

import httpx
import pytest

from storage import JobStatus
from submitter.providers import Rejection, ttapi
from submitter.simulators import SAMPLE_PNG, image_bytes
from submitter.simulators.ttapi import TTAPISimulator
from tests.submitter.support import Recorder, make_job, refusal, serving, until
from tests.submitter.test_simulator import AUTH, KEY, job_id_of, submit

pytestmark = pytest.mark.anyio

PNG_B64 = base64.b64encode(SAMPLE_PNG).decode()
SEED_KEYS = ["status", "jobId", "message", "data"]
SEED_DATA_KEYS = ["actions", "jobId", "progress", "prompt", "discordImage", "cdnImage", "hookUrl"]
SEED_DATA_KEYS += ["components", "seed", "images"]
UV = ["upsample1", "upsample2", "upsample3", "upsample4", "variation1", "variation2", "variation3", "variation4"]


async def post(client: httpx.AsyncClient, endpoint: str, **body: Any) -> httpx.Response:
    return await client.post(f"/midjourney/v1/{endpoint}", json=body)


async def finished(sim: TTAPISimulator, client: httpx.AsyncClient, endpoint: str, **body: Any) -> str:
    """Submit, deliver now, and return the job id."""
    job_id = job_id_of(await post(client, endpoint, **body))
    await sim.deliver(job_id)
    return job_id


async def test_imagine_calls_back_in_the_seeds_shape_with_four_png_tiles() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        response = await post(client, "imagine", prompt="a cute cat", mode="fast", hookUrl=hook)
        job_id = job_id_of(response)
        assert response.json() == {"status": "SUCCESS", "message": "", "data": {"jobId": job_id}}
        await until(lambda: sim.idle)

        [payload] = recorder.payloads()
        assert list(payload) == SEED_KEYS and list(payload["data"]) == SEED_DATA_KEYS
        assert (payload["status"], payload["jobId"], payload["message"]) == ("SUCCESS", job_id, "success")
        data = payload["data"]
        assert (data["actions"], data["jobId"], data["progress"], data["prompt"]) == (
            "imagine",
            job_id,
            "100",
            "a cute cat",
        )
        assert data["hookUrl"] == hook and data["components"] == UV and data["seed"] == ""
        base = str(client.base_url).rstrip("/")
        assert data["images"] == [f"{base}/cdn/{job_id}/{i}.png" for i in range(4)]
        assert data["cdnImage"] == f"{base}/cdn/{job_id}/4.png"  # the grid
        assert data["discordImage"].startswith("https://cdn.discordapp.com/")

        result = ttapi.parse_callback(recorder.bodies[0], {})
        assert result.status is JobStatus.SUCCEEDED and result.media_urls == tuple(data["images"])
        for index, url in enumerate([*data["images"], data["cdnImage"]]):
            image = await client.get(url)
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
            assert hashlib.sha256(image.content).digest() == hashlib.sha256(image_bytes(job_id, index)).digest()
        assert [(s.path, s.status_code, s.job_id) for s in sim.submissions] == [("/midjourney/v1/imagine", 200, job_id)]


async def test_upsample_has_one_image_and_its_own_components() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        grid = await finished(sim, client, "imagine", prompt="a cute cat", hookUrl=hook)
        upscale = await finished(sim, client, "action", jobId=grid, action="upsample2", hookUrl=hook)
        data = recorder.payloads()[1]["data"]
        assert data["actions"] == "upsample2" and data["prompt"] == "a cute cat"
        assert data["images"] == [] and data["cdnImage"].endswith(f"/cdn/{upscale}/0.png")
        assert "high_variation" in data["components"] and "zoom_out_2" in data["components"]
        assert "upsample1" not in data["components"]
        result = ttapi.parse_callback(recorder.bodies[1], {})
        assert result.media_urls == (data["cdnImage"],)  # TTAPI's CDN copy, not Discord's
        assert (await client.get(data["cdnImage"])).content == image_bytes(upscale, 0)
        assert (await client.get(data["cdnImage"].replace("/0.png", "/1.png"))).status_code == 404

        zoomed = await finished(sim, client, "action", jobId=upscale, action="zoom_out_2", hookUrl=hook)
        assert len(recorder.payloads()[2]["data"]["images"]) == 4 and sim.job(zoomed).kind == "zoom_out_2"
        refused = await post(client, "action", jobId=upscale, action="variation1")
        assert refused.status_code == 400 and refused.json()["status"] == "FAILED"
        assert "variation1 is not available" in refused.json()["message"]


async def test_seed_and_describe_succeed_without_images() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        grid = await finished(sim, client, "imagine", prompt="a cute cat", hookUrl=hook)
        await finished(sim, client, "seed", jobId=grid, hookUrl=hook)
        await finished(sim, client, "describe", base64=PNG_B64, hookUrl=hook)
        seed, described = recorder.payloads()[1:]
        assert seed["data"]["actions"] == "seed" and seed["data"]["seed"].isdigit()
        assert seed["data"]["images"] == [] and seed["data"]["cdnImage"] == "" and seed["data"]["components"] == []
        assert described["data"]["actions"] == "describe" and described["data"]["images"] == []

        seed_result = ttapi.parse_callback(recorder.bodies[1], {})
        assert seed_result.status is JobStatus.SUCCEEDED and seed_result.media_urls == ()
        assert seed_result.result["seed"] == seed["data"]["seed"]
        prompts = ttapi.parse_callback(recorder.bodies[2], {}).result["prompts"]
        assert prompts == [f"a described picture, take {i} --ar 1:1" for i in range(1, 5)]


async def test_blend_takes_two_to_five_base64_images() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        cases: list[tuple[dict[str, Any], str]] = [
            ({"imgBase64Array": [PNG_B64]}, "imgBase64Array must hold 2-5 images"),
            ({"imgBase64Array": [PNG_B64] * 6}, "imgBase64Array must hold 2-5 images"),
            ({"imgBase64Array": "x"}, "imgBase64Array must hold 2-5 images"),
            ({"imgBase64Array": [PNG_B64, "%%%"]}, "base64-encoded"),
            ({"imgBase64Array": [PNG_B64, PNG_B64], "dimensions": "WIDE"}, "dimensions must be one of"),
            ({"imgBase64Array": [PNG_B64, PNG_B64], "mode": "slow"}, "mode must be one of fast, relax, turbo"),
        ]
        for body, message in cases:
            response = await post(client, "blend", **body)
            assert response.status_code == 400, body
            assert response.json() == {"status": "FAILED", "message": response.json()["message"], "data": None}
            assert message in response.json()["message"], body
        blended = await finished(sim, client, "blend", imgBase64Array=[PNG_B64, f"data:image/png;base64,{PNG_B64}"])
        assert sim.job(blended).status == "succeeded" and len(sim.job(blended).media) == 5
        assert [s.status_code for s in sim.submissions] == [400] * 6 + [200]


async def test_follow_ups_need_a_finished_image_job() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        pending = job_id_of(await post(client, "imagine", prompt="a cute cat"))
        video = job_id_of(await submit(client, hook))
        await sim.deliver(video)
        described = await finished(sim, client, "describe", base64=PNG_B64)
        cases = [
            ("action", {"jobId": "no-such-job", "action": "upsample1"}, "job not found"),
            ("action", {"jobId": video, "action": "upsample1"}, "job not found"),  # a video job is not the image API's
            ("action", {"jobId": pending, "action": "upsample1"}, "completed status"),
            ("action", {"jobId": pending}, "action is required"),
            ("seed", {}, "jobId is required"),
            ("seed", {"jobId": described}, "has no image"),
            ("inpaint", {"jobId": pending}, "mask is required"),
            ("inpaint", {"jobId": pending, "mask": PNG_B64}, "completed status"),
            ("describe", {"base64": ""}, "base64 is required"),
            ("imagine", {"prompt": " "}, "prompt is required"),
            ("imagine", {"prompt": "p", "timeout": "300"}, "timeout must be a positive integer"),
            ("imagine", {"prompt": "p", "getUImages": "true"}, "getUImages must be true or false"),
        ]
        for endpoint, body, message in cases:
            response = await post(client, endpoint, **body)
            assert response.status_code == 400, (endpoint, body)
            assert response.json()["status"] == "FAILED" and message in response.json()["message"], (endpoint, body)
        extend = await client.post("/midjourney/video/extend", json={"jobId": described, "index": 0})
        assert extend.status_code == 400 and extend.json()["message"] == "job not found"


async def test_inpaint_of_an_upscale_is_a_new_grid() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        grid = await finished(sim, client, "imagine", prompt="a cute cat")
        upscale = await finished(sim, client, "action", jobId=grid, action="upsample1")
        spelled = await post(client, "inpaint", Jobid=upscale, mask=PNG_B64, prompt="white background", hookUrl=hook)
        job_id = job_id_of(spelled)  # the seed's table spells the field "Jobid"
        await sim.deliver(job_id)
        data = recorder.payloads()[0]["data"]
        assert data["actions"] == "inpaint" and data["prompt"] == "white background"
        assert len(data["images"]) == 4 and data["components"] == UV


async def test_each_fetch_answers_its_own_apis_jobs_with_the_callback_shape() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        image = job_id_of(await post(client, "imagine", prompt="a cute cat", hookUrl=hook))
        pending = await client.get("/midjourney/v1/fetch", params={"jobId": image})
        assert pending.json()["status"] == "ON_QUEUE" and pending.json()["data"]["images"] == []
        assert ttapi.parse_fetch_response(pending.status_code, pending.content).status is JobStatus.RUNNING

        assert await sim.deliver(image) == [200]
        by_get = await client.get("/midjourney/v1/fetch", params={"jobId": image})
        by_body = await client.request(
            "GET", "/midjourney/v1/fetch", json={"jobId": image}
        )  # seed 001's "Request Body"
        assert by_get.json() == by_body.json() == recorder.payloads()[0]
        by_post = await client.post("/midjourney/v1/fetch", json={"jobId": image})  # seed 001: "GET …/v1/fetch"
        assert by_post.status_code == 405 and by_post.json()["status"] == "FAILED"
        assert len(ttapi.parse_fetch_response(by_get.status_code, by_get.content).media_urls) == 4

        video = job_id_of(await submit(client, hook))
        for path, job_id in (("/midjourney/video/fetch", image), ("/midjourney/v1/fetch", video)):
            wrong = await client.get(path, params={"jobId": job_id})
            assert wrong.status_code == 400 and wrong.json()["message"] == "job not found"
            caught = refusal(ttapi.parse_fetch_response, wrong.status_code, wrong.content)
            assert caught.kind is Rejection.FATAL
        unauthorized = await client.get("/midjourney/v1/fetch", params={"jobId": image}, headers={"TT-API-KEY": "x"})
        assert unauthorized.status_code == 401


async def test_wrong_key_queue_and_rejections_are_shared_with_the_video_api() -> None:
    sim, recorder = (
        TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False, max_in_flight=2),
        Recorder(),
    )
    sim.reject_next(402, "Insufficient balance")
    async with serving(sim, recorder, AUTH) as (client, hook):
        refused = await post(client, "imagine", prompt="p", hookUrl=hook)
        assert refused.status_code == 402 and refused.json()["message"] == "Insufficient balance"
        wrong = await client.post("/midjourney/v1/imagine", json={"prompt": "p"}, headers={"TT-API-KEY": "wrong"})
        assert wrong.status_code == 401 and wrong.json()["message"] == "Wrong TT-API-KEY or email is not activated."
        job_id_of(await post(client, "imagine", prompt="p", hookUrl=hook))
        job_id_of(await submit(client, hook))
        full = await post(client, "imagine", prompt="p", hookUrl=hook)
        assert full.status_code == 499 and full.json()["message"] == "Queue exhausted"
        caught = refusal(ttapi.parse_submit_response, full.status_code, full.content)
        assert caught.kind is Rejection.RETRY
        assert [s.status_code for s in sim.submissions] == [402, 401, 200, 200, 499]


async def test_fail_job_when_fails_an_imagine_and_its_callback_says_so() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    sim.fail_job_when("poker", "banned prompt words: poker")
    async with serving(sim, recorder, AUTH) as (client, hook):
        job_id = job_id_of(await post(client, "imagine", prompt="a poker scam", hookUrl=hook))
        await until(lambda: sim.idle)
        [payload] = recorder.payloads()  # TTAPI's failure envelope (providers.md §2.4-2.5) names no job
        assert payload == {"status": "FAILED", "message": "banned prompt words: poker", "data": None}
        refused = await post(client, "action", jobId=job_id, action="upsample1")
        assert refused.status_code == 400 and "completed status" in refused.json()["message"]


async def test_the_provider_modules_requests_are_taken_by_the_simulator() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()

    async def send(action: str, params: dict[str, Any], parent: Any = None) -> Any:
        ttapi.validate_params(action, params)
        request = ttapi.build_request(make_job("ttapi", action, params), parent, KEY, hook)
        response = await client.request(request.method, request.path, json=request.json, headers=dict(request.headers))
        provider_job_id = ttapi.parse_submit_response(response.status_code, response.content)
        job = make_job("ttapi", action, params, provider_job_id=provider_job_id)
        assert await sim.deliver(provider_job_id) == [200]
        result = ttapi.parse_callback(recorder.bodies[-1], {})
        assert result.status is JobStatus.SUCCEEDED and result.provider_job_id == job.provider_job_id
        return dataclasses.replace(job, result=result.result)

    async with serving(sim, recorder, AUTH) as (client, hook):
        options = {"mode": "relax", "timeout": 600, "getUImages": True}
        grid = await send("imagine", {"prompt": "a cute cat", "options": options})
        assert grid.result["components"] == UV
        upscale = await send("upsample3", {}, grid)
        await send("high_variation", {}, upscale)
        await send("inpaint", {"mask_base64": PNG_B64, "prompt": "white background"}, upscale)
        assert (await send("seed", {}, grid)).result["seed"].isdigit()
        await send("blend", {"images_base64": [PNG_B64] * 3, "dimensions": "LANDSCAPE"})
        assert len((await send("describe", {"image_base64": PNG_B64})).result["prompts"]) == 4
        paths = [s.path.rsplit("/", 1)[1] for s in sim.submissions]
        assert paths == ["imagine", "action", "action", "inpaint", "seed", "blend", "describe"]
        assert all(s.status_code == 200 for s in sim.submissions)
        assert sim.submissions[0].body == {"prompt": "a cute cat", "hookUrl": hook, **options}
