"""The TTAPI simulator under real uvicorn, talking to a tiny recording callback receiver."""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import httpx
import pytest

from receiver.serving import bind_socket, socket_url
from storage import JobStatus
from submitter.providers import Rejection, ttapi
from submitter.simulators import SAMPLE_MP4, video_bytes
from submitter.simulators.ttapi import TTAPISimulator
from tests.submitter.support import Recorder, refusal, serving, until

pytestmark = pytest.mark.anyio

KEY = "sim-key"
PROMPT = "hyperrealistic album cover: Black sacral Ocean. Sunken prayer canoe. Ghost Canoe Horizon"
IMAGE = "https://unlimbot.hb.ru-msk.vkcloud-storage.ru/AQADJvYxG8ZHiEt-.jpeg"
SEED_KEYS = ["status", "message", "jobId", "data"]
SEED_DATA_KEYS = ["action", "jobId", "progress", "prompt", "quota", "videos", "hookUrl"]
AUTH = {"TT-API-KEY": KEY}


async def submit(client: httpx.AsyncClient, hook: str | None, **fields: Any) -> httpx.Response:
    body = {"prompt": PROMPT, "imageUrl": IMAGE, "mode": "fast", "manual": "high"} | fields
    if hook is not None:
        body["hookUrl"] = hook
    return await client.post("/midjourney/video/submit", json=body)


def job_id_of(response: httpx.Response) -> str:
    return ttapi.parse_submit_response(response.status_code, response.content)


def top_level_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    boxes, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack(">I", data[offset : offset + 4])
        assert size >= 8 and offset + size <= len(data)
        boxes.append((data[offset + 4 : offset + 8], data[offset + 8 : offset + size]))
        offset += size
    return boxes


def test_video_bytes_are_the_sample_plus_a_free_box_naming_the_video() -> None:
    assert len(SAMPLE_MP4) == 2785
    data = video_bytes("abc", 2)
    assert data.startswith(SAMPLE_MP4)
    boxes = top_level_boxes(data)  # the whole file still parses as ISO-BMFF boxes
    assert boxes[0][0] == b"ftyp"
    assert boxes[-1] == (b"free", b"abc/2")
    assert len({video_bytes("abc", i) for i in range(4)} | {video_bytes("abd", 2)}) == 5


async def test_submit_delivers_the_seed_callback_and_serves_the_videos() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        response = await submit(client, hook)
        assert response.status_code == 200
        job_id = job_id_of(response)
        assert response.json() == {"status": "SUCCESS", "message": "", "data": {"jobId": job_id}}
        await until(lambda: sim.idle)

        [payload] = recorder.payloads()
        assert recorder.content_types == ["application/json"]
        assert list(payload) == SEED_KEYS and list(payload["data"]) == SEED_DATA_KEYS
        assert payload["status"] == "SUCCESS" and payload["message"] == "success" and payload["jobId"] == job_id
        data = payload["data"]
        assert (data["action"], data["jobId"], data["progress"], data["quota"]) == ("generate", job_id, "100", "30")
        assert data["prompt"] == PROMPT and data["hookUrl"] == hook

        result = ttapi.parse_callback(recorder.bodies[0], {})
        assert result.status is JobStatus.SUCCEEDED and result.provider_job_id == job_id
        base = str(client.base_url).rstrip("/")
        assert result.media_urls == tuple(f"{base}/cdn/{job_id}/{i}.mp4" for i in range(4))
        digests = set()
        for index, url in enumerate(result.media_urls):
            video = await client.get(url)
            assert video.status_code == 200
            assert video.headers["content-type"] == "video/mp4"
            assert int(video.headers["content-length"]) == len(video.content)
            assert video.content[4:8] == b"ftyp"
            digest = hashlib.sha256(video.content).hexdigest()
            assert digest == hashlib.sha256(video_bytes(job_id, index)).hexdigest()
            digests.add(digest)
        assert len(digests) == 4
        assert sim.cdn_hits == {f"/cdn/{job_id}/{i}.mp4": 1 for i in range(4)}
        assert [(d.job_id, d.url, d.status_code) for d in sim.deliveries] == [(job_id, hook, 200)]
        assert [(s.path, s.status_code, s.job_id) for s in sim.submissions] == [
            ("/midjourney/video/submit", 200, job_id)
        ]


async def test_extend_of_a_finished_job_names_action_extend() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        parent = job_id_of(await submit(client, hook, bs=2))
        await until(lambda: len(recorder.bodies) == 1)
        assert len(sim.job(parent).media) == 2  # bs picks how many videos a job has

        response = await client.post("/midjourney/video/extend", json={"jobId": parent, "index": 1, "hookUrl": hook})
        child = job_id_of(response)
        assert child != parent
        await until(lambda: len(recorder.bodies) == 2)
        payload = recorder.payloads()[1]
        assert payload["jobId"] == child and payload["data"]["action"] == "extend"
        assert payload["data"]["prompt"] == PROMPT  # an extension continues its parent's prompt
        result = ttapi.parse_callback(recorder.bodies[1], {})
        assert result.status is JobStatus.SUCCEEDED and len(result.media_urls) == 4
        assert sim.job(child).kind == "extend" and sim.job(child).body["index"] == 1


async def test_extend_needs_a_known_finished_job_and_a_valid_index() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        unfinished = job_id_of(await submit(client, hook))
        cases = [
            ({"jobId": "no-such-job", "index": 0}, "job not found"),
            ({"jobId": unfinished, "index": 0}, "completed"),
            ({"index": 0}, "jobId is required"),
            ({"jobId": unfinished}, "index is required"),
        ]
        for body, message in cases:
            response = await client.post("/midjourney/video/extend", json=body)
            assert response.status_code == 400, body
            assert response.json()["status"] == "FAILED" and message in response.json()["message"]
        await sim.deliver(unfinished)
        response = await client.post("/midjourney/video/extend", json={"jobId": unfinished, "index": 4})
        assert response.status_code == 400 and "index must be 0-3" in response.json()["message"]
        assert len(sim.submissions) == 6 and sim.in_flight == 0


async def test_wrong_key_is_401() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        for headers in ({"TT-API-KEY": "wrong"}, {"TT-API-KEY": ""}):
            body = {"prompt": PROMPT, "imageUrl": IMAGE, "hookUrl": hook}
            response = await client.post("/midjourney/video/submit", json=body, headers=headers)
            assert response.status_code == 401
            assert response.json()["message"] == "Wrong TT-API-KEY or email is not activated."
            caught = refusal(ttapi.parse_submit_response, response.status_code, response.content)
            assert caught.kind is Rejection.FATAL
        fetched = await client.get("/midjourney/video/fetch", params={"jobId": "x"}, headers={"TT-API-KEY": "wrong"})
        assert fetched.status_code == 401
        assert [s.status_code for s in sim.submissions] == [401, 401] and sim.in_flight == 0


async def test_missing_required_field_is_400() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        response = await client.post("/midjourney/video/submit", json={"prompt": PROMPT, "hookUrl": hook})
        assert response.status_code == 400 and response.json()["message"] == "imageUrl is required"
        response = await submit(client, hook, manual="medium")
        assert response.status_code == 400 and "manual" in response.json()["message"]
        response = await client.post("/midjourney/video/submit", content=b"not json")
        assert response.status_code == 400 and response.json()["status"] == "FAILED"
        assert sim.in_flight == 0 and sim.submissions[0].body == {"prompt": PROMPT, "hookUrl": hook}


async def test_queue_full_is_499_until_a_job_ends_whatever_its_callback_is_answered() -> None:
    sim = TTAPISimulator(api_key=KEY, delay=0.01, auto_deliver=False, max_in_flight=2, progress_callbacks=False)
    recorder = Recorder((500, 500))
    async with serving(sim, recorder, AUTH) as (client, hook):
        first, _second = job_id_of(await submit(client, hook)), job_id_of(await submit(client, hook))
        full = await submit(client, hook)
        assert full.status_code == 499
        assert full.json() == {"status": "FAILED", "message": "Queue exhausted", "data": None}
        caught = refusal(ttapi.parse_submit_response, full.status_code, full.content)
        assert caught.kind is Rejection.RETRY

        # "The max job in progressing is 10" counts jobs in progress: one that ended is not, heard of or not.
        assert await sim.deliver(first) == [500]
        assert sim.in_flight == 1
        assert (await submit(client, hook)).status_code == 200
        assert (await submit(client, hook)).status_code == 499
        assert [s.status_code for s in sim.submissions] == [200, 200, 499, 200, 499]


async def test_reject_next_answers_the_queued_statuses_in_order() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    sim.reject_next(402, "Insufficient balance")
    sim.reject_next(503)
    async with serving(sim, recorder, AUTH) as (client, hook):
        refused = await submit(client, hook)
        assert refused.status_code == 402
        assert refused.json() == {"status": "FAILED", "message": "Insufficient balance", "data": None}
        caught = refusal(ttapi.parse_submit_response, refused.status_code, refused.content)
        assert caught.kind is Rejection.FATAL and "Insufficient balance" in caught.message
        assert (await submit(client, hook)).status_code == 503
        assert (await submit(client, hook)).status_code == 200
        assert [s.status_code for s in sim.submissions] == [402, 503, 200] and sim.in_flight == 1


async def test_fail_job_when_sends_ttapis_failure_envelope_without_a_job_id() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, delay=0.01, progress_callbacks=False), Recorder()
    sim.fail_job_when("Ghost Canoe")
    async with serving(sim, recorder, AUTH) as (client, hook):
        failed = job_id_of(await submit(client, hook))
        await until(lambda: sim.idle and len(recorder.bodies) == 1)
        fine = job_id_of(await submit(client, hook, prompt="a calm lake"))
        await until(lambda: sim.idle and len(recorder.bodies) == 2)
        # providers.md §2.4-2.5: status FAILED, the reason in `message`, no data: nothing names the job.
        assert recorder.payloads()[0] == {"status": "FAILED", "message": "prompt violation", "data": None}
        assert recorder.payloads()[1]["status"] == "SUCCESS" and recorder.payloads()[1]["jobId"] == fine
        fetched = await client.get("/midjourney/video/fetch", params={"jobId": failed})
        assert fetched.status_code == 200 and fetched.json() == recorder.payloads()[0]  # "same data structure"
        extend = await client.post("/midjourney/video/extend", json={"jobId": failed, "index": 0})
        assert extend.status_code == 400


async def test_unanswered_callback_is_delivered_at_most_three_times() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder((500, 500, 500, 500))
    async with serving(sim, recorder, AUTH) as (client, hook):
        job_id = job_id_of(await submit(client, hook))
        await until(lambda: sim.idle)  # TTAPI gave up: the slot is free
        assert len(recorder.bodies) == 3 and len(set(recorder.bodies)) == 1
        assert [(d.job_id, d.status_code) for d in sim.deliveries] == [(job_id, 500)] * 3


async def test_callback_answered_200_on_the_second_try_is_not_sent_again() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder((503,))
    async with serving(sim, recorder, AUTH) as (client, hook):
        job_id_of(await submit(client, hook))
        await until(lambda: sim.idle)
        assert [d.status_code for d in sim.deliveries] == [503, 200] and len(recorder.bodies) == 2


async def test_unreachable_hook_counts_as_failed_deliveries() -> None:
    closed = bind_socket()
    dead_hook = f"{socket_url(closed)}/hook"
    closed.close()
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, _hook):
        job_id_of(await submit(client, dead_hook))
        await until(lambda: sim.idle)
        assert [(d.url, d.status_code) for d in sim.deliveries] == [(dead_hook, None)] * 3


async def test_deliver_resends_the_callback_concurrently() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        job_id = job_id_of(await submit(client, hook))
        await until(lambda: len(recorder.bodies) == 1)
        recorder.barrier = 5  # each delivery is held until all five are in the receiver at once
        assert await sim.deliver(job_id, times=5, concurrently=True) == [200] * 5
        recorder.barrier = 0
        assert await sim.deliver(job_id, times=2) == [200, 200]
        assert len(recorder.bodies) == 8 and len(set(recorder.bodies)) == 1
        assert len(sim.deliveries) == 8


async def test_fetch_answers_get_with_the_callback_shape_and_refuses_post() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        job_id = job_id_of(await submit(client, hook))
        pending = await client.get("/midjourney/video/fetch", params={"jobId": job_id})
        assert pending.status_code == 200
        assert pending.json()["status"] == "ON_QUEUE" and pending.json()["data"]["progress"] == "50"
        assert pending.json()["data"]["videos"] == []
        assert ttapi.parse_callback(pending.content, {}).status is JobStatus.RUNNING

        assert await sim.deliver(job_id) == [200]
        by_get = await client.get("/midjourney/video/fetch", params={"jobId": job_id})
        assert by_get.json() == json.loads(recorder.bodies[0])
        assert ttapi.parse_callback(by_get.content, {}).status is JobStatus.SUCCEEDED

        # Seed 000's heading: "GET {Domain}/midjourney/video/fetch"; a POST is refused in TTAPI's envelope.
        by_post = await client.post("/midjourney/video/fetch", json={"jobId": job_id})
        assert by_post.status_code == 405
        assert by_post.json()["status"] == "FAILED" and by_post.json()["data"] is None

        unknown = await client.get("/midjourney/video/fetch", params={"jobId": "no-such-job"})
        assert unknown.status_code == 400 and unknown.json()["message"] == "job not found"
        assert (await client.get("/midjourney/video/fetch")).status_code == 400


async def test_job_without_hook_finishes_for_fetch_and_frees_its_slot() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, max_in_flight=1), Recorder()
    async with serving(sim, recorder, AUTH) as (client, _hook):
        job_id = job_id_of(await submit(client, None))
        await until(lambda: sim.job(job_id).status == "succeeded")
        fetched = await client.get("/midjourney/video/fetch", params={"jobId": job_id})
        assert len(ttapi.parse_callback(fetched.content, {}).media_urls) == 4
        assert sim.in_flight == 0 and sim.deliveries == [] and recorder.bodies == []
        assert (await submit(client, None)).status_code == 200


async def test_cdn_answers_404_for_unknown_videos_and_counts_hits() -> None:
    sim, recorder = TTAPISimulator(api_key=KEY, progress_callbacks=False, delay=0.01, auto_deliver=False), Recorder()
    async with serving(sim, recorder, AUTH) as (client, hook):
        job_id = job_id_of(await submit(client, hook))
        assert (await client.get(f"/cdn/{job_id}/0.mp4")).status_code == 404  # not finished yet
        await sim.deliver(job_id)
        assert (await client.get(f"/cdn/{job_id}/0.mp4")).status_code == 200
        assert (await client.get(f"/cdn/{job_id}/4.mp4")).status_code == 404
        assert (await client.get("/cdn/no-such-job/0.mp4")).status_code == 404
        assert sim.cdn_hits[f"/cdn/{job_id}/0.mp4"] == 2 and sim.cdn_hits[f"/cdn/{job_id}/4.mp4"] == 1
