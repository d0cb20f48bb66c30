"""`reelhook watch` and `--wait`: when a chain counts as settled or failed (pure, on snapshots), and the real thing
against a deployment (simulators on loopback)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from receiver.cli import _parser, main
from receiver.watch import Display, failures, render, settled, snapshot, watch
from tests.e2e.conftest import API_TOKEN, assert_videos_on_disk, deployment

# -- pure: snapshots ------------------------------------------------------------------------------------------------


def job(job_id: str, status: str = "succeeded", files: str = "dd", **extra: Any) -> dict[str, Any]:
    """A job as the API shows it; `files` is one letter per file: d(ownloaded), p(ending), f(ailed)."""
    names = {"d": "downloaded", "p": "pending", "f": "failed"}
    videos = [
        {"index": i, "status": names[c], "bytes": 1500 if c == "d" else None, "error": "HTTP 404" if c == "f" else None}
        for i, c in enumerate(files)
    ]
    return {"id": job_id, "action": "generate", "status": status, "progress": 100, "error": None,
            "videos": videos, "notes": []} | extra  # fmt: skip


def node(job_id: str, *children: dict[str, Any], pending: int = 0) -> dict[str, Any]:
    return {"id": job_id, "pending_events": pending, "children": list(children)}


def test_a_chain_with_every_file_downloaded_and_every_event_handled_is_settled() -> None:
    snap = snapshot("a", [job("a"), job("b")], [node("a", node("b"))])
    assert settled(snap) and failures(snap) == []


@pytest.mark.parametrize(
    ("jobs", "chain", "why"),
    [
        ([job("a", files="dp")], [node("a")], "a download is still running although the job succeeded"),
        ([job("a", status="running", files="")], [node("a")], "the job has not ended"),
        ([job("a")], [node("a", pending=1)], "an event of the job may still fire a follow-up"),
        ([job("a")], [node("a", node("b"))], "the tree names a child the job list did not have yet"),
        ([job("a"), job("b", status="queued", files="")], [node("a", node("b"))], "the follow-up has not run"),
        ([job("a"), job("b")], [node("a", node("b", pending=2))], "the follow-up's events wait for the rules"),
    ],
)
def test_a_chain_is_not_settled_while(jobs: list[dict[str, Any]], chain: list[dict[str, Any]], why: str) -> None:
    assert not settled(snapshot("a", jobs, chain)), why


def test_watching_a_child_follows_only_its_own_descendants() -> None:
    jobs = [job("root"), job("child"), job("grandchild"), job("sibling", status="running", files="")]
    chain = [node("root", node("child", node("grandchild")), node("sibling"))]
    snap = snapshot("child", jobs, chain)
    assert [j["id"] for j in snap.jobs] == ["child", "grandchild"]
    assert settled(snap)  # the sibling still running is not part of what was asked for
    assert not settled(snapshot("root", jobs, chain))


def test_failures_name_the_failed_job_the_failed_file_and_the_limit_that_stopped_a_follow_up() -> None:
    limit = {"rule": "extend-all", "message": "max_jobs_per_root 2 reached (2 jobs in the chain of root job a); "
             "not submitted: ttapi extend of index 0", "at": "2026-01-01T00:00:00.000Z"}  # fmt: skip
    dropped_prompt = {"rule": "extend-all", "message": "TTAPI extends take no prompt; the rule's prompt was not sent"}
    jobs = [
        job("a", notes=[limit]),
        job("b", status="failed", files="", error="prompt violation"),
        job("c", files="df", notes=[dropped_prompt]),
    ]
    snap = snapshot("a", jobs, [node("a", node("b"), node("c"))])
    assert settled(snap)
    assert failures(snap) == [
        f"job a: rule extend-all stopped by a limit: {limit['message']}",
        "job b (generate) failed: prompt violation",
        "job c: file 1 failed to download: HTTP 404",
    ]


def test_render_shows_status_progress_and_files_with_bytes_per_job_indented_by_depth() -> None:
    jobs = [job("a", files="ddpp"), job("b", status="running", progress=40, files="")]
    lines = render(snapshot("a", jobs, [node("a", node("b", pending=1))]))
    assert lines == {
        "a": "a  generate   succeeded 100%  files 2/4 (3.0 KB)",
        "b": "  b  generate   running    40%  files 0/0 (0 B)  follow-ups pending",
    }


def test_plain_output_prints_a_line_only_when_it_changes() -> None:
    out = io.StringIO()
    display = Display(out, tty=False)
    display.show({"a": "a running", "b": "b queued"})
    display.show({"a": "a running", "b": "b queued"})
    display.show({"a": "a succeeded", "b": "b queued"})
    assert out.getvalue() == "a running\nb queued\na succeeded\n"
    assert "\x1b" not in out.getvalue()


def test_a_terminal_gets_the_frame_redrawn_in_place() -> None:
    out = io.StringIO()
    display = Display(out, tty=True)
    display.show({"a": "a running"})
    display.show({"a": "a succeeded", "b": "b queued"})
    assert out.getvalue() == "a running\n\x1b[1F\x1b[Ja succeeded\nb queued\n"


def test_ctrl_c_stops_the_watch_with_130() -> None:
    answers = {"/api/jobs/a": {"root_id": "a"}, "/api/jobs": {"jobs": [job("a", status="running", files="")]},
               "/api/jobs/a/timeline": {"chain": [node("a")]}}  # fmt: skip

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    out = io.StringIO()
    assert watch(lambda path, params: answers[path], "a", out, sleep=interrupt) == 130
    assert out.getvalue().splitlines()[-1].startswith("interrupted; the jobs go on")


def test_a_timeout_gives_up_with_1() -> None:
    answers = {"/api/jobs/a": {"root_id": "a"}, "/api/jobs": {"jobs": [job("a", status="running", files="")]},
               "/api/jobs/a/timeline": {"chain": [node("a")]}}  # fmt: skip
    ticks = iter(range(100))
    out = io.StringIO()
    code = watch(lambda path, params: answers[path], "a", out, timeout=3, sleep=lambda s: None,
                 clock=lambda: float(next(ticks)))  # fmt: skip
    assert code == 1 and "not settled after 3 s" in out.getvalue()


# -- end to end: the CLI against a deployment ---------------------------------------------------------------------

EXTEND_ONCE = """
[limits]
max_depth = 1

[[rule]]
name = "extend-first"
on = "job.succeeded"
when.action = "generate"
extend.index = 0
"""


async def run_cli(env: dict[str, str], capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await anyio.to_thread.run_sync(main, [*argv, "--interval", "0.05", "--timeout", "30"], env)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.anyio
async def test_submit_wait_returns_0_only_once_the_files_are_downloaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with deployment(tmp_path) as deployed:
        env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}
        code, out, err = await run_cli(env, capsys, "submit", "--prompt", "a fox", "--image-url",
                                       "https://img.example/a.png", "--wait", "--json")  # fmt: skip
        assert code == 0, err
        finished = json.loads(out)  # stdout holds only the job as it is now; the progress went to stderr
        assert_videos_on_disk(finished, deployed.data_dir)  # already there the moment the command returned
        assert "\x1b" not in err and err.splitlines()[-1] == "settled: 1 job, 4 files downloaded"
        progress = [line for line in err.splitlines() if line.startswith(finished["id"])]
        assert progress[-1].endswith("files 4/4 (" + progress[-1].split("(")[-1])
        # One plain line per change, none repeated. How many changes the polls see depends on the machine's load (a
        # busy one saw only the last state), so the count is not asserted: that no line repeats is.
        assert progress and len(progress) == len(set(progress))


@pytest.mark.anyio
async def test_watch_waits_for_the_follow_up_a_rule_creates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with deployment(tmp_path, rules=EXTEND_ONCE) as deployed:
        env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}
        root = await deployed.submit()
        code, out, err = await run_cli(env, capsys, "watch", root["id"])
        assert code == 0, out + err
        jobs = await deployed.jobs()
        [child] = [j for j in jobs if j["parent_id"] == root["id"]]
        for each in jobs:
            assert_videos_on_disk(each, deployed.data_dir)  # the child's too: watch waited for it
        assert f"  {child['id']}  extend" in out
        assert out.splitlines()[-1] == "settled: 2 jobs, 8 files downloaded"


@pytest.mark.anyio
async def test_a_failing_job_exits_1_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with deployment(tmp_path) as deployed:
        deployed.sim.fail_job_when("forbidden lighthouse", "prompt violation")
        env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}
        code, out, _ = await run_cli(env, capsys, "submit", "--prompt", "a forbidden lighthouse", "--image-url",
                                     "https://img.example/a.png", "--wait")  # fmt: skip
        assert code == 1
        job_id = out.split()[1].rstrip(":")
        assert (await deployed.job(job_id))["status"] == "failed"
        assert out.splitlines()[-1].startswith(f"failed: job {job_id} (generate) failed: ")
        assert "prompt violation" in out.splitlines()[-1]


@pytest.mark.anyio
async def test_a_limit_that_stops_a_follow_up_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = EXTEND_ONCE.replace("max_depth = 1", "max_depth = 1\nmax_jobs_per_root = 1")
    async with deployment(tmp_path, rules=rules) as deployed:
        env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}
        root = await deployed.submit()
        code, out, _ = await run_cli(env, capsys, "watch", root["id"])
        assert code == 1
        assert f"failed: job {root['id']}: rule extend-first stopped by a limit: max_jobs_per_root 1" in out
        assert len(await deployed.jobs()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "--prompt", "a fox"],
        ["extend", "J", "--index", "0"],
        ["imagine", "--prompt", "a fox"],
        ["action", "J", "upsample1"],
        ["seed", "J"],
        ["blend", "--image", __file__, "--image", __file__],
        ["describe", "--image", __file__],
        ["inpaint", "J", "--mask", __file__],
    ],
)
def test_every_command_that_creates_a_job_takes_wait(argv: list[str]) -> None:
    args = _parser().parse_args([*argv, "--wait", "--interval", "2"])
    assert (args.wait, args.interval, args.timeout) == (True, 2.0, None)
