"""The money guards on a running service: the kill switch from the CLI, and a limit whose refusal the user can see."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from receiver.cli import main
from tests.e2e.conftest import API_TOKEN, Deployment, deployment, wait_until

pytestmark = pytest.mark.anyio

EXTEND_ALL = """
[limits]
max_depth = 1
max_jobs_per_root = 3

[[rule]]
name = "extend-all"
on = "job.succeeded"
extend.index = "all"
"""


async def cli(deployed: Deployment, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}
    code = await anyio.to_thread.run_sync(main, list(argv), env)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


async def test_pause_holds_follow_ups_until_resume_and_limits_leave_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with deployment(tmp_path, rules=EXTEND_ALL) as deployed:
        assert (await cli(deployed, capsys, "pause", "--reason", "budget review")).strip() == "paused: budget review"
        assert (await cli(deployed, capsys, "status")).splitlines()[0] == "paused: budget review"
        root = await deployed.submit("a lantern")  # a person's job still goes out while paused

        async def root_downloaded() -> bool:
            shown = await deployed.job(root["id"])
            return shown["status"] == "succeeded" and all(v["status"] == "downloaded" for v in shown["videos"])

        await wait_until(root_downloaded)  # callbacks stored and videos downloaded while paused...
        assert deployed.extends() == [] and len(await deployed.jobs()) == 1  # ...but no follow-up spent anything

        assert (await cli(deployed, capsys, "resume")).strip() == "running"

        async def followed_up() -> bool:
            jobs = await deployed.jobs()
            return len(jobs) == 3 and all(j["status"] == "succeeded" for j in jobs)

        await wait_until(followed_up)
        # "all" asked for four extends; max_jobs_per_root = 3 kept two (root + 2) and noted why for the other two
        assert sorted(e["index"] for e in deployed.extends()) == [0, 1]
        shown = json.loads(await cli(deployed, capsys, "show", root["id"], "--json"))
        assert [note["rule"] for note in shown["notes"]] == ["extend-all", "extend-all"]
        assert all(note["message"].startswith("max_jobs_per_root 3 reached") for note in shown["notes"])
        assert "note (extend-all): max_jobs_per_root 3 reached" in await cli(deployed, capsys, "show", root["id"])
