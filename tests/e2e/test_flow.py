"""submit → simulator callback → downloads → rule follow-ups → … → the chain stops at max_depth."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import anyio
import pytest

from tests.e2e.conftest import Deployment, assert_videos_on_disk, deployment, wait_until

pytestmark = pytest.mark.anyio

EXTEND_CHAIN = """
[limits]
max_depth = 2

[[rule]]
name = "extend-first"
on = "job.succeeded"
extend.index = 0
extend.prompt = "{prompt}, the camera keeps moving"
"""


async def settled(deployed: Deployment, count: int) -> bool:
    jobs = await deployed.jobs()
    return len(jobs) == count and all(
        job["status"] in ("succeeded", "failed") and all(v["status"] != "pending" for v in job["videos"])
        for job in jobs
    )


async def test_a_chain_runs_to_max_depth_and_stops(tmp_path: Path) -> None:
    async with deployment(tmp_path, rules=EXTEND_CHAIN) as deployed:
        root = await deployed.submit("a lighthouse at dusk", motion="high")
        await wait_until(lambda: settled(deployed, 3))
        jobs = {job["depth"]: job for job in await deployed.jobs()}

        assert sorted(jobs) == [0, 1, 2]  # depth 3 would break max_depth = 2
        assert jobs[0]["id"] == root["id"]
        for depth in (1, 2):
            child, parent = jobs[depth], jobs[depth - 1]
            assert (child["action"], child["rule"], child["parent_id"], child["root_id"]) == (
                "extend", "extend-first", parent["id"], root["id"],
            )  # fmt: skip
        # TTAPI's extend takes no prompt: the rule's is neither sent nor recorded, and a note on the extend says so.
        assert "prompt" not in jobs[1]["params"] and jobs[1]["prompt"] == "a lighthouse at dusk"  # as TTAPI reports
        notes = (await deployed.job(jobs[1]["id"]))["notes"]
        assert [note["message"] for note in notes] == ["TTAPI extends take no prompt; the rule's prompt was not sent"]
        for job in jobs.values():
            assert job["status"] == "succeeded" and len(job["videos"]) == 4
            assert_videos_on_disk(job, deployed.data_dir)

        # What the provider saw: one generate, then each extend names its parent's TTAPI job id and index 0.
        submits = [s for s in deployed.sim.submissions if s.path.endswith("/submit")]
        assert len(submits) == 1 and submits[0].body["manual"] == "high"
        assert [(e["jobId"], e["index"]) for e in deployed.extends()] == [
            (jobs[0]["provider_job_id"], 0),
            (jobs[1]["provider_job_id"], 0),
        ]
        assert not any("prompt" in body for body in deployed.extends())
        for body in [submits[0].body, *deployed.extends()]:
            assert body["hookUrl"].startswith(f"{deployed.url}/hooks/ttapi/")
        # One CDN request per video: nothing was fetched twice.
        assert sum(deployed.sim.cdn_hits.values()) == 12 and set(deployed.sim.cdn_hits.values()) == {1}
        sidecar_path = deployed.data_dir / "media" / Path(jobs[1]["videos"][0]["key"]).with_suffix(".json")
        sidecar = json.loads(sidecar_path.read_text())
        assert sidecar["parent_id"] == jobs[0]["id"] and sidecar["rule"] == "extend-first"
        assert sidecar["sha256"] == jobs[1]["videos"][0]["sha256"]


async def test_a_failed_job_is_reported_and_not_followed_up(tmp_path: Path) -> None:
    async with deployment(tmp_path, rules=EXTEND_CHAIN) as deployed:
        deployed.sim.fail_job_when("forbidden", "prompt violation")
        job = await deployed.submit("something forbidden")
        await wait_until(lambda: settled(deployed, 1))
        failed = await deployed.job(job["id"])
        assert failed["status"] == "failed" and "prompt violation" in failed["error"] and failed["videos"] == []
        assert deployed.extends() == []


async def test_redelivered_callbacks_download_once_and_follow_up_once(tmp_path: Path) -> None:
    rules = EXTEND_CHAIN.replace("max_depth = 2", "max_depth = 1")
    async with deployment(tmp_path, rules=rules, auto_deliver=False) as deployed:
        root = await deployed.submit()
        await wait_until(lambda: _submitted(deployed, root["id"]))
        provider_job_id = (await deployed.job(root["id"]))["provider_job_id"]

        one_by_one = await deployed.sim.deliver(provider_job_id, times=5)
        at_once = await deployed.sim.deliver(provider_job_id, times=5, concurrently=True)
        assert one_by_one + at_once == [200] * 10

        await wait_until(lambda: _extends_sent(deployed, 1))
        child_id = next(j["id"] for j in await deployed.jobs() if j["depth"] == 1)
        await wait_until(lambda: _submitted(deployed, child_id))
        child_provider_id = (await deployed.job(child_id))["provider_job_id"]
        await deployed.sim.deliver(child_provider_id, times=3, concurrently=True)
        await wait_until(lambda: settled(deployed, 2))

        assert len(deployed.extends()) == 1
        root_hits = Counter({k: v for k, v in deployed.sim.cdn_hits.items() if provider_job_id in k})
        assert sorted(root_hits.values()) == [1, 1, 1, 1]
        assert_videos_on_disk(await deployed.job(root["id"]), deployed.data_dir)


async def test_eleven_jobs_against_a_limit_of_ten(tmp_path: Path) -> None:
    async with deployment(tmp_path, auto_deliver=False) as deployed:
        jobs = [await deployed.submit(f"take {n}") for n in range(11)]
        await wait_until(lambda: _count_submitted(deployed, 10))
        await anyio.sleep(0.2)  # give a wrongly eager submitter the chance to send the 11th
        statuses = Counter(j["status"] for j in await deployed.jobs())
        assert statuses == {"submitted": 10, "queued": 1}
        assert [s.status_code for s in deployed.sim.submissions] == [200] * 10  # never hit the provider's 499
        waiting = next(j for j in await deployed.jobs() if j["status"] == "queued")
        assert waiting["id"] == jobs[-1]["id"]

        first = await deployed.job(jobs[0]["id"])
        assert await deployed.sim.deliver(first["provider_job_id"]) == [200]
        await wait_until(lambda: _submitted(deployed, waiting["id"]))
        assert len(deployed.sim.submissions) == 11 and deployed.sim.submissions[-1].status_code == 200


async def _submitted(deployed: Deployment, job_id: str) -> bool:
    return (await deployed.job(job_id))["provider_job_id"] is not None


async def _extends_sent(deployed: Deployment, count: int) -> bool:
    return len(deployed.extends()) >= count


async def _count_submitted(deployed: Deployment, count: int) -> bool:
    return sum(j["provider_job_id"] is not None for j in await deployed.jobs()) >= count
