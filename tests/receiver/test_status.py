"""`GET /api/status` and `reelhook status`: the kill switch, and per provider what waits, is late or was lost."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from receiver.cli import main
from storage import NewJob
from tests.e2e.conftest import API_TOKEN, deployment, wait_until
from tests.receiver.conftest import AUTH, Harness, ttapi_callback

pytestmark = pytest.mark.anyio


async def test_status_counts_the_queue_the_late_the_lost_and_the_downloads(harness: Harness) -> None:
    store = harness.store
    done = await harness.submitted_job("tt-done")
    await harness.client.post(harness.hook_path(done), content=ttapi_callback("tt-done", videos=2))
    await harness.app.state.service.wait_idle()  # its videos sit on a refused loopback port: both fail
    await harness.client.post("/api/pause", headers=AUTH, json={"reason": "budget"})
    # Recorded straight into the store, so no worker is woken to send, look up or give up on them.
    await store.create_job(NewJob("ttapi", "generate", {"prompt": "queued", "image_url": "https://img.example/a.png"}))
    await store.create_job(NewJob("ttapi", "extend", {"index": 0}, parent_id=done, rule="r", origin="r:x"))
    late = await harness.submitted_job("tt-late")
    await store.schedule_lookup(late, at=store.clock() + 3600, looked_up=True)  # asked once already: overdue
    due = await harness.submitted_job("tt-due")
    await store.schedule_lookup(due, at=store.clock() - 1, looked_up=False)  # its first lookup has come due
    await harness.submitted_job("tt-fresh")  # within its grace
    lost = await harness.submitted_job("tt-lost")
    assert await store.give_up(lost, "lost: no result", note="given up")

    assert (await harness.client.get("/api/status")).status_code == 401
    status = (await harness.client.get("/api/status", headers=AUTH)).json()
    assert status["paused"] == "budget"
    assert (status["followups_queued"], status["notifications_pending"]) == (1, 0)
    [ttapi] = status["providers"]
    assert ttapi["queued"] == 2 and ttapi["in_flight"] == 3 and ttapi["limit"] >= 3
    assert (ttapi["overdue"], ttapi["lost_today"]) == (2, 1)
    assert (ttapi["downloads_pending"], ttapi["downloads_failed"]) == (0, 2)
    assert status == (await harness.client.get("/api/overview", headers=AUTH)).json() | {
        "providers": [ttapi | {"last_callback_seconds_ago": p["last_callback_seconds_ago"]} for p in [ttapi]]
    }


async def test_the_status_command_prints_the_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with deployment(tmp_path, provider_settings={"max_in_flight": 3}) as deployed:
        env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}
        assert (await deployed.api.post("/api/pause", json={"reason": "budget"})).status_code == 200
        job = await deployed.submit()  # a person's job still goes out while paused
        mart = await deployed.submit(provider="apimart")

        async def downloaded() -> bool:
            videos = [v for j in (job, mart) for v in (await deployed.job(j["id"]))["videos"]]
            return len(videos) == 5 and all(video["status"] == "downloaded" for video in videos)

        await wait_until(downloaded)
        code = await anyio.to_thread.run_sync(main, ["status"], env)
        out, err = capsys.readouterr()
        assert code == 0, err
    lines = out.splitlines()
    day = datetime.now(UTC).date().isoformat()
    assert lines[:3] == ["paused: budget", "follow-ups queued (held while paused): 0", "notifications waiting: 0"]
    counts = "queued 0, in flight 0/3, overdue 0, lost today 0; downloads pending 0, failed 0; spent today"
    # What the simulators report, as the providers do: TTAPI `"quota": "30"`, APIMart `cost` and `credits_cost`.
    assert f"ttapi: {counts} 30 quota" in lines
    assert f"apimart: {counts} 2 credits, 0.2 usd" in lines
    assert f"wavespeed: {counts} nothing reported" in lines
    spend = lines[lines.index("spend (UTC day, as each provider reported it; units are not converted):") + 1 :]
    assert [line.split() for line in spend] == [
        [day, "apimart", "2", "credits", "(1", "job)"], [day, "apimart", "0.2", "usd", "(1", "job)"],
        [day, "ttapi", "30", "quota", "(1", "job)"],
    ]  # fmt: skip
