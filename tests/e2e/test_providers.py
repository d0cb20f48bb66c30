"""Each provider through the whole loop on loopback: submit → its callback shape → downloads → a rule's follow-up."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.serving import running
from submitter.simulators.apimart import APIMartSimulator
from submitter.simulators.wavespeed import WaveSpeedSimulator
from submitter.tokens import HookSigner
from tests.e2e.conftest import NOTIFY_SECRET, SECRET, Deployment, assert_videos_on_disk, deployment, wait_until

pytestmark = pytest.mark.anyio


async def settled(deployed: Deployment, count: int) -> bool:
    jobs = await deployed.jobs()
    return len(jobs) >= count and all(
        job["status"] in ("succeeded", "failed") and all(v["status"] != "pending" for v in job["videos"])
        for job in jobs
    )


def snapshot(deployed: Deployment) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(deployed.data_dir / "reelhook.sqlite3")) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in tables}


class Consumer:
    """A notification receiver that verifies Standard Webhooks signatures itself."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/events", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        msg_id, stamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
        key = base64.b64decode(NOTIFY_SECRET.removeprefix("whsec_"))
        expected = (
            "v1," + base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, "sha256").digest()).decode()
        )
        if not hmac.compare_digest(expected, request.headers["webhook-signature"]):
            return Response(status_code=401)
        self.messages.append(json.loads(body))
        return Response(status_code=200)


async def test_acedata_extends_by_the_parents_video_id(tmp_path: Path) -> None:
    rules = '[limits]\nmax_depth = 1\n[[rule]]\nname = "more"\non = "job.succeeded"\n'
    rules += 'extend.index = 2\nextend.prompt = "{prompt}, on"\n'
    async with deployment(tmp_path, rules=rules) as deployed:
        root = await deployed.submit("a paper boat", provider="acedata", resolution="720p", loop=True)
        await wait_until(lambda: settled(deployed, 2))
        jobs = {job["depth"]: job for job in await deployed.jobs()}
        sim = deployed.sims["acedata"]
        bodies = [s.body for s in sim.submissions if s.status_code == 200]
        assert [b["action"] for b in bodies] == ["generate", "extend"]
        assert (bodies[0]["resolution"], bodies[0]["loop"], bodies[0]["callback_url"].startswith(deployed.url)) == (
            "720p", True, True,
        )  # fmt: skip
        parent_sim_job = sim.job(jobs[0]["provider_job_id"])
        assert bodies[1]["video_id"] == parent_sim_job.extra["video_id"] != jobs[0]["provider_job_id"]
        assert (bodies[1]["video_index"], bodies[1]["prompt"]) == (2, "a paper boat, on")
        assert jobs[0]["id"] == root["id"] and jobs[1]["parent_id"] == root["id"]
        for job in jobs.values():
            assert job["status"] == "succeeded" and len(job["videos"]) == 4
            assert_videos_on_disk(job, deployed.data_dir)


async def test_wavespeed_signed_callbacks_and_a_notification(tmp_path: Path) -> None:
    consumer = Consumer()
    async with running(consumer.app) as consumer_url:
        rules = f'[[rule]]\nname = "tell"\non = "video.downloaded"\nnotify = {{ url = "{consumer_url}/events" }}\n'
        async with deployment(tmp_path, rules=rules) as deployed:
            job = await deployed.submit("a kite", provider="wavespeed", resolution="720p", motion="high")
            await wait_until(lambda: settled(deployed, 1))
            sim = deployed.sims["wavespeed"]
            [sent] = [s for s in sim.submissions if s.status_code == 200]
            assert sent.query["webhook"].startswith(f"{deployed.url}/hooks/wavespeed/")
            assert (sent.body["image"], sent.body["resolution"], sent.body["motion"]) == (
                "https://img.example/frame.png", "720p", "high",
            )  # fmt: skip
            shown = await deployed.job(job["id"])
            assert shown["status"] == "succeeded" and shown["videos"]
            assert_videos_on_disk(shown, deployed.data_dir)
            assert all(d.headers["webhook-signature"].startswith("v3,") for d in sim.deliveries)

            async def notified() -> bool:
                return len(consumer.messages) == len(shown["videos"])

            await wait_until(notified)
            assert {m["type"] for m in consumer.messages} == {"video.downloaded"}
            assert {m["data"]["job"]["id"] for m in consumer.messages} == {job["id"]}


async def test_wavespeed_forged_callbacks_get_403_and_change_nothing(tmp_path: Path) -> None:
    async with deployment(tmp_path, options={"wavespeed": {"auto_deliver": False}}) as deployed:
        job = await deployed.submit("a kite", provider="wavespeed")
        sim: WaveSpeedSimulator = deployed.sims["wavespeed"]  # type: ignore[assignment]
        await wait_until(lambda: _has_provider_id(deployed, job["id"]))
        provider_id = (await deployed.job(job["id"]))["provider_job_id"]
        sim._finish(provider_id)
        body = json.dumps(sim.payload(sim.job(provider_id))).encode()
        hook = (
            f"{deployed.url}/hooks/wavespeed/{HookSigner([SECRET], max_age=60).sign_hook_token(job['id'], 'wavespeed')}"
        )

        def signed(secret: str, content: bytes, stamp: int) -> dict[str, str]:
            key = secret.removeprefix("whsec_").encode()
            digest = hmac.new(key, f"msg_1.{stamp}.".encode() + content, hashlib.sha256).hexdigest()
            return {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": f"v3,{digest}"}

        now = int(time.time())
        wrong_secret = signed("whsec_not-the-secret", body, now)
        changed_body = signed(sim.webhook_secret, body, now)
        missing_header = {k: v for k, v in signed(sim.webhook_secret, body, now).items() if k != "webhook-signature"}
        ten_minutes_old = signed(sim.webhook_secret, body, now - 600)
        before = snapshot(deployed)
        async with httpx.AsyncClient() as client:
            for headers, content in [
                (wrong_secret, body),
                (changed_body, body.replace(b"completed", b"failed")),
                (missing_header, body),
                (ten_minutes_old, body),
            ]:
                response = await client.post(hook, content=content, headers=headers)
                assert response.status_code == 403, response.text
                assert snapshot(deployed) == before
            good = await client.post(hook, content=body, headers=signed(sim.webhook_secret, body, now))
        assert good.status_code == 200
        assert (await deployed.job(job["id"]))["status"] == "succeeded"


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "wrapped"])
async def test_apimart_calls_back_on_the_callback_suffix_in_either_shape(tmp_path: Path, wrapped: bool) -> None:
    consumer = Consumer()
    async with running(consumer.app) as consumer_url:
        rules = '[[rule]]\nname = "done"\non = "job.succeeded"\nwhen.provider = "apimart"\n'
        rules += f'notify = {{ url = "{consumer_url}/events" }}\n'
        options = {"apimart": {"wrap_callbacks": wrapped}}
        async with deployment(tmp_path, rules=rules, options=options) as deployed:
            job = await deployed.submit("a tram", provider="apimart", batch_size=2, resolution="720p")
            await wait_until(lambda: settled(deployed, 1))
            sim: APIMartSimulator = deployed.sims["apimart"]  # type: ignore[assignment]
            [sent] = [s for s in sim.submissions if s.status_code == 200]
            assert sent.body["image_urls"] == ["https://img.example/frame.png"]
            assert sent.body["video_type"] == "vid_1.1_i2v_720" and sent.body["webhook"].startswith(deployed.url)
            assert [d.url.endswith("/callback") and d.status_code == 200 for d in sim.deliveries] == [True]
            assert ("data" in json.loads(sim.deliveries[0].body)) is wrapped
            shown = await deployed.job(job["id"])
            assert shown["status"] == "succeeded" and len(shown["videos"]) == 2
            assert_videos_on_disk(shown, deployed.data_dir)

            async def notified() -> bool:
                return len(consumer.messages) == 1

            await wait_until(notified)
            [message] = consumer.messages
            assert message["type"] == "job.succeeded" and message["data"]["job"]["id"] == job["id"]


async def test_apimart_animates_an_imagine_by_task_id(tmp_path: Path) -> None:
    async with deployment(tmp_path) as deployed:
        sim: APIMartSimulator = deployed.sims["apimart"]  # type: ignore[assignment]
        imagine = sim.add_imagine()
        response = await deployed.api.post("/api/jobs", json={"provider": "apimart", "task_id": imagine, "index": 3})
        assert response.status_code == 201, response.text
        await wait_until(lambda: settled(deployed, 1))
        [sent] = [s for s in sim.submissions if s.status_code == 200]
        assert (sent.body["task_id"], sent.body["index"]) == (imagine, 3) and "image_urls" not in sent.body
        assert_videos_on_disk(await deployed.job(response.json()["id"]), deployed.data_dir)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"task_id": "task_1", "index": 0}, "image_url"),  # both a frame and an imagine
        ({"batch_size": 3}, "batch_size"),
        ({"options": {"animate_mode": "auto"}}, "auto"),  # auto needs task_id + index
        ({"resolution": "1080p"}, "resolution"),
    ],
)
async def test_apimart_validation_refuses_before_anything_is_sent(
    tmp_path: Path, extra: dict[str, Any], needle: str
) -> None:
    async with deployment(tmp_path) as deployed:
        body = {"provider": "apimart", "prompt": "p", "image_url": "https://img.example/a.png", **extra}
        before = snapshot(deployed)
        response = await deployed.api.post("/api/jobs", json=body)
        assert 400 <= response.status_code < 500 and needle in response.json()["detail"], response.text
        assert snapshot(deployed) == before and deployed.sims["apimart"].submissions == []


async def test_apimart_refuses_a_frame_over_12_mib_before_sending(tmp_path: Path) -> None:
    async def big(request: Request) -> Response:
        return Response(headers={"content-length": str(13 * 1024 * 1024), "content-type": "image/png"})

    frames = Starlette(routes=[Route("/big.png", big, methods=["HEAD"])])
    async with running(frames) as frames_url, deployment(tmp_path, trusted=(frames_url,)) as deployed:
        before = snapshot(deployed)
        body = {"provider": "apimart", "prompt": "p", "image_url": f"{frames_url}/big.png"}
        response = await deployed.api.post("/api/jobs", json=body)
        assert response.status_code == 413 and "13.0 MiB" in response.json()["detail"], response.text
        assert deployed.sims["apimart"].submissions == [] and snapshot(deployed) == before


async def _has_provider_id(deployed: Deployment, job_id: str) -> bool:
    return (await deployed.job(job_id))["provider_job_id"] is not None
