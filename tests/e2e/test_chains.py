"""A chain that crosses providers, driven only by the rules file: TTAPI imagine → upsample → WaveSpeed and APIMart."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import assert_videos_on_disk, deployment, wait_until

pytestmark = pytest.mark.anyio

CHAIN = """
[[rule]]
name = "upscale"
on = "job.succeeded"
when.action = "imagine"
action = { name = "upsample1" }

[[rule]]
name = "animate-wavespeed"
on = "job.succeeded"
when.action = "upsample1"
video = { provider = "wavespeed", image = "{image}", prompt = "{prompt}, gently moving", motion = "low" }

[[rule]]
name = "animate-apimart"
on = "job.succeeded"
when.action = "upsample1"
video = { provider = "apimart", image = "{images[0]}", batch_size = 2 }
"""


async def test_imagine_upsample_then_video_on_two_other_providers(tmp_path: Path) -> None:
    async with deployment(tmp_path, rules=CHAIN) as deployed:
        response = await deployed.api.post("/api/jobs", json={"action": "imagine", "prompt": "a harbour at dawn"})
        assert response.status_code == 201, response.text
        imagine_id = response.json()["id"]

        async def chain_done() -> bool:
            jobs = await deployed.jobs()
            return len(jobs) == 4 and all(
                j["status"] == "succeeded" and j["videos"] and all(v["status"] == "downloaded" for v in j["videos"])
                for j in jobs
            )

        await wait_until(chain_done)
        jobs = {(j["provider"], j["action"]): j for j in await deployed.jobs()}
        imagine, upscale = jobs[("ttapi", "imagine")], jobs[("ttapi", "upsample1")]
        wavespeed, apimart = jobs[("wavespeed", "generate")], jobs[("apimart", "generate")]

        assert imagine["id"] == imagine_id and len(imagine["videos"]) == 4  # the four tiles
        assert all(v["key"].endswith(".png") for v in imagine["videos"] + upscale["videos"])
        assert (upscale["parent_id"], upscale["rule"], upscale["depth"]) == (imagine_id, "upscale", 1)
        for video, rule in ((wavespeed, "animate-wavespeed"), (apimart, "animate-apimart")):
            assert (video["parent_id"], video["root_id"], video["rule"], video["depth"]) == (
                upscale["id"], imagine_id, rule, 2,
            )  # fmt: skip
        for job in jobs.values():
            assert_videos_on_disk(job, deployed.data_dir)

        # What each provider was asked: the upscaled image, never a tile, went on to both video providers.
        tt_action = [s.body for s in deployed.sims["ttapi"].submissions if s.path.endswith("/v1/action")]
        assert tt_action == [
            {"jobId": imagine["provider_job_id"], "action": "upsample1", "hookUrl": tt_action[0]["hookUrl"]}
        ]
        upscaled_image = upscale["videos"][0]["url"]
        [ws] = [s.body for s in deployed.sims["wavespeed"].submissions if s.status_code == 200]
        assert (ws["image"], ws["prompt"], ws["motion"]) == (upscaled_image, "a harbour at dawn, gently moving", "low")
        [am] = [s.body for s in deployed.sims["apimart"].submissions if s.status_code == 200]
        assert (am["image_urls"], am["batch_size"]) == ([upscaled_image], 2)
        assert len(apimart["videos"]) == 2


async def test_image_actions_through_the_api(tmp_path: Path) -> None:
    async with deployment(tmp_path) as deployed:
        imagine = (await deployed.api.post("/api/jobs", json={"action": "imagine", "prompt": "a fox"})).json()

        async def finished() -> bool:
            return (await deployed.job(imagine["id"]))["status"] == "succeeded"

        await wait_until(finished)
        variation = await deployed.api.post("/api/jobs", json={"action": "variation3", "parent_id": imagine["id"]})
        assert variation.status_code == 201, variation.text
        unknown = await deployed.api.post("/api/jobs", json={"action": "zoom_out_2x", "parent_id": imagine["id"]})
        assert unknown.status_code == 400 and "not among the job's components" in unknown.json()["detail"]
        extend_image = await deployed.api.post(
            "/api/jobs", json={"action": "extend", "parent_id": imagine["id"], "index": 0}
        )
        # Refused here, not sent for TTAPI to fail with "job not found".
        assert extend_image.status_code == 400 and "only a video" in extend_image.json()["detail"]

        async def settled() -> bool:
            jobs = await deployed.jobs()
            return len(jobs) == 2 and all(j["status"] in ("succeeded", "failed") for j in jobs)

        await wait_until(settled)
        assert (await deployed.job(variation.json()["id"]))["status"] == "succeeded"
