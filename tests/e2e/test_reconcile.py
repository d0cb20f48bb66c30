"""Missed callbacks, recovered with nobody watching: the provider finishes a job but its callback never arrives
(the simulators' `no_callback` fault), and the job's deadline lookup, not a restart or `reelhook reconcile`, finds
it: it succeeds, its videos download, a rule's follow-up fires. A job that can never be looked up (its submission
was answered 504 after the provider took it) is given up on as lost, frees its slot, and is never sent again; its
result, when it comes after all, is applied."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from receiver.cli import main
from submitter.simulators.faults import Faults
from tests.e2e.conftest import API_TOKEN, Deployment, assert_videos_on_disk, deployment, wait_until

pytestmark = pytest.mark.anyio

EXTEND_ONCE = """
[limits]
max_depth = 1

[[rule]]
name = "extend-first"
on = "job.succeeded"
when.provider = "{provider}"
extend.index = 0
"""


async def downloaded(deployed: Deployment, job_id: str) -> bool:
    job = await deployed.job(job_id)
    return job["status"] == "succeeded" and bool(job["videos"]) and all(
        v["status"] == "downloaded" for v in job["videos"]
    )  # fmt: skip


def inbox(deployed: Deployment, job_id: str) -> list[tuple[str, str]]:
    """(first header, status) of each callback stored for the job."""
    with closing(sqlite3.connect(deployed.data_dir / "reelhook.sqlite3")) as db:
        rows = db.execute("SELECT headers, status FROM callbacks WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
    return [(json.loads(headers)[0][1], status) for headers, status in rows]


async def children(deployed: Deployment, parent_id: str) -> list[dict[str, Any]]:
    return [job for job in await deployed.jobs() if job["parent_id"] == parent_id]


@pytest.mark.parametrize("provider", ["ttapi", "acedata", "wavespeed", "apimart"])
async def test_a_lost_callback_is_recovered_with_nobody_running_reconcile(tmp_path: Path, provider: str) -> None:
    extends = provider in ("ttapi", "acedata")
    rules = EXTEND_ONCE.format(provider=provider) if extends else ""
    async with deployment(tmp_path, rules=rules, callback_grace=0.2) as deployed:
        sim = deployed.sims[provider]
        sim.faults = Faults(no_callback=True)  # every job ends at the provider; no callback is ever sent
        root_id = (await deployed.submit("a lighthouse at dusk", provider=provider))["id"]

        await wait_until(lambda: downloaded(deployed, root_id))
        assert_videos_on_disk(await deployed.job(root_id), deployed.data_dir)
        assert inbox(deployed, root_id) == [("fetch", "succeeded")]  # only the lookup's answer: no callback came
        assert sim.deliveries == []
        if extends:  # the rule fired on the fetched result, and the child's lost callback was recovered too
            await wait_until(lambda: _one_child_downloaded(deployed, root_id))


async def _one_child_downloaded(deployed: Deployment, root_id: str) -> bool:
    found = await children(deployed, root_id)
    return len(found) == 1 and await downloaded(deployed, found[0]["id"])


async def test_a_504_after_taking_the_job_is_not_resent_and_a_silent_job_is_lost_and_frees_its_slot(
    tmp_path: Path,
) -> None:
    settings = {"max_in_flight": 1, "give_up_after": 1.0}
    async with deployment(tmp_path, callback_grace=0.2, provider_settings=settings) as deployed:
        sim = deployed.sim
        sim.faults = Faults(taken_then_status=504, no_callback=True)
        silent = (await deployed.submit("a slow tide"))["id"]

        async def sent_once() -> bool:
            return len(sim.submissions) == 1

        await wait_until(sent_once)
        sim.faults = Faults()
        waiting = (await deployed.submit("a lighthouse at dusk"))["id"]

        async def lost() -> bool:
            return (await deployed.job(silent))["status"] == "failed"

        await wait_until(lost)
        job = await deployed.job(silent)
        assert job["error"].startswith("lost: ") and job["provider_job_id"] is None
        assert [s.status_code for s in sim.submissions][:1] == [504]  # taken, answered 504 ...
        await wait_until(lambda: downloaded(deployed, waiting))  # ... its slot freed for the next job
        assert [s.body["prompt"] for s in sim.submissions] == ["a slow tide", "a lighthouse at dusk"]  # never resent

        # The provider did run it (and charged for it): its result, when it comes after all, is applied.
        [taken] = [j for j in sim.jobs() if j.prompt == "a slow tide"]
        assert await sim.deliver(taken.job_id) == [200]
        await wait_until(lambda: downloaded(deployed, silent))
        assert_videos_on_disk(await deployed.job(silent), deployed.data_dir)


async def test_reconcile_and_prune_from_the_command_line_and_the_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with deployment(tmp_path, callback_grace=3600) as deployed:
        env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}
        code = await anyio.to_thread.run_sync(main, ["reconcile", "--json"], env)  # the CLI blocks: not on the loop
        out, err = capsys.readouterr()
        assert code == 0, err
        assert json.loads(out) == {"looked_up": 0, "settled": 0, "lost": 0}
        code = await anyio.to_thread.run_sync(main, ["prune", "--callbacks-older-than", "30"], env)
        out, err = capsys.readouterr()
        assert code == 0 and out == "pruned 0 callback bodies (their digests are kept)\n", err
        assert (await deployed.api.post("/api/reconcile", headers={"Authorization": "Bearer wrong"})).status_code == 401
