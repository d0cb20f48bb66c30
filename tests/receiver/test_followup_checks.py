"""A follow-up its parent cannot have is refused before anything is recorded (the API) or skipped with a note (the
rules), never sent to the provider to fail there with "job not found": `receiver.effects.followup_refusal`."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from receiver.followups import FollowUps
from receiver.rules import RuleSet, Skip
from storage import NewJob
from tests.receiver.conftest import AUTH, Harness, ttapi_callback
from tests.receiver.test_rules import SUCCEEDED, job

pytestmark = pytest.mark.anyio

UV = ["upsample1", "upsample2", "upsample3", "upsample4", "variation1", "variation2", "variation3", "variation4"]


def image_callback(job_id: str, action: str = "imagine", components: list[str] = UV, images: int = 4) -> bytes:
    """TTAPI's image callback (seed 001's shape); the tiles sit where the download guard refuses them unsent."""
    tiles = [f"http://127.0.0.1:9/image/{job_id}/{i}.png" for i in range(images)]
    data = {"actions": action, "jobId": job_id, "progress": "100", "prompt": "a fox", "components": components,
            "seed": "", "images": tiles, "cdnImage": "", "discordImage": "", "hookUrl": ""}  # fmt: skip
    return json.dumps({"status": "SUCCESS", "message": "success", "jobId": job_id, "data": data}).encode()


async def succeeded(harness: Harness, *parents: tuple[str, str, bytes]) -> list[str]:
    """Jobs TTAPI took, each (action, its TTAPI id, its callback), then finished. All are sent before any callback
    arrives: a callback frees a slot and wakes the submitter, which would claim a job still queued."""
    job_ids = []
    for action, provider_job_id, _ in parents:
        params: dict[str, Any] = {"prompt": "a fox"}
        if action == "generate":
            params["image_url"] = "https://img.example/a.png"
        new, _ = await harness.store.create_job(NewJob("ttapi", action, params))
        await harness.store.claim_submission(new.id)
        await harness.store.record_submitted(new.id, provider_job_id)
        job_ids.append(new.id)
    for job_id, (_, _, body) in zip(job_ids, parents, strict=True):
        response = await harness.client.post(harness.hook_path(job_id), content=body)
        assert response.status_code == 200
    return job_ids


async def settled(harness: Harness) -> dict[str, list[tuple[Any, ...]]]:
    """The database once the parents' events are handled and their downloads have failed (polled: a worker woken
    again mid-drain can leave Service.wait_idle() waiting for good)."""
    with anyio.fail_after(5):
        while True:
            snapshot = harness.snapshot()
            events_done = all(row[5] is not None for row in snapshot["events"])  # processed_at
            if events_done and not any("pending" in row for row in snapshot["videos"]):
                return snapshot
            await anyio.sleep(0.01)


@pytest.mark.parametrize(
    ("parent", "body", "detail"),
    [
        ("video", {"action": "upsample1"}, "upsample1 acts on an image job (imagine, blend, upsample1, ...); this one"
         " is generate"),
        ("video", {"action": "seed"}, "seed acts on an image job"),
        ("video", {"action": "inpaint", "mask_base64": "aGVsbG8="}, "inpaint acts on an image job"),
        ("image", {"action": "extend", "index": 0}, "only a video (generate or extend) job can be extended; this one is"
         " imagine"),
        ("image", {"action": "zoom_out_2"}, "zoom_out_2 is not among the job's components (upsample1, upsample2"),
        ("upscaled", {"action": "upsample1"}, "upsample1 is not among the job's components (none)"),
        ("video", {"action": "extend", "index": 2}, "index must be 0-1 (the job has 2 videos), got 2"),
        ("video", {"action": "extend", "index": -1}, "index must be 0-1 (the job has 2 videos), got -1"),
    ],
)  # fmt: skip
async def test_a_follow_up_the_parent_cannot_have_is_a_400_that_records_nothing(
    harness: Harness, parent: str, body: dict[str, Any], detail: str
) -> None:
    video, image, upscaled = await succeeded(
        harness,
        ("generate", "tt-video", ttapi_callback("tt-video", videos=2)),
        ("imagine", "tt-image", image_callback("tt-image")),
        ("upsample2", "tt-up", image_callback("tt-up", "upsample2", [], 1)),
    )
    parents = {"video": video, "image": image, "upscaled": upscaled}
    before = await settled(harness)
    response = await harness.client.post("/api/jobs", headers=AUTH, json=body | {"parent_id": parents[parent]})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.json()["detail"].startswith(f"{body['action']} of job {parents[parent]}: {detail}")
    assert harness.snapshot() == before
    assert harness.provider.requests == []


async def test_the_follow_ups_the_parent_can_have_are_recorded(harness: Harness) -> None:
    video, image = await succeeded(
        harness,
        ("generate", "tt-video", ttapi_callback("tt-video", videos=2)),
        ("imagine", "tt-image", image_callback("tt-image")),
    )
    for body in (
        {"action": "extend", "parent_id": video, "index": 1},
        {"action": "upsample3", "parent_id": image},
        {"action": "seed", "parent_id": image},
    ):
        response = await harness.client.post("/api/jobs", headers=AUTH, json=body)
        assert response.status_code == 201, (body, response.text)


# -- the rules ask the same, and skip with the reason -----------------------------------------------------------------

EXTEND_ANY = '[[rule]]\nname = "more"\non = "job.succeeded"\nextend.index = "all"\n'


def test_an_extend_rule_skips_an_image_job() -> None:
    imagine = job(action="imagine", videos=4)
    jobs, skips = RuleSet.parse(EXTEND_ANY).followups(SUCCEEDED, imagine)
    reason = "only a video (generate or extend) job can be extended; this one is imagine"
    assert jobs == [] and skips == [Skip("more", "job-1", reason)]
    assert len(RuleSet.parse(EXTEND_ANY).followups(SUCCEEDED, job(action="generate"))[0]) == 4


def test_an_action_rule_skips_a_result_that_lists_no_components() -> None:
    text = '[[rule]]\nname = "up"\non = "job.succeeded"\nwhen.action = "imagine"\naction = { name = "upsample1" }\n'
    jobs, skips = RuleSet.parse(text).followups(SUCCEEDED, job(action="imagine"))  # result {}: no components
    assert jobs == [] and skips == [Skip("up", "job-1", "upsample1 is not among the job's components (none)")]


async def test_a_skipped_rule_follow_up_is_a_note_on_the_job_and_records_no_job(harness: Harness) -> None:
    [image] = await succeeded(harness, ("imagine", "tt-image", image_callback("tt-image")))
    worker = FollowUps(harness.store, RuleSet.parse(EXTEND_ANY))
    assert await worker.run_once() >= 1
    shown = (await harness.client.get(f"/api/jobs/{image}", headers=AUTH)).json()
    assert [note["message"] for note in shown["notes"]] == [
        "only a video (generate or extend) job can be extended; this one is imagine"
    ]
    jobs = (await harness.client.get("/api/jobs", headers=AUTH)).json()["jobs"]
    assert [j["id"] for j in jobs] == [image]
