"""Waiting on a chain: what `reelhook watch JOB` and every `--wait` show, and when they stop.

A job's status is not the end of it. A `succeeded` job may still be downloading its files, and the events it
emitted (job.succeeded, video.downloaded) may still fire follow-ups through the rules. So the watched job and its
descendants (its chain) are *settled* only when every job is succeeded or failed, no file is pending, and no event
of any of them waits for the rules (`pending_events` of the chain JSON). Then the watch ends: 0 when nothing went
wrong, 1 naming each job that failed, each file that failed to download and each follow-up a limit stopped.

The command line holds only the API token, so it learns of changes by asking the API every `interval` seconds:
a client polling its own service, cheap (two reads), and it works through any proxy that passes `/api/*`. Each poll
reads the root's jobs (`GET /api/jobs?root=`) and then the chain tree (`GET /api/jobs/{id}/timeline`), in that
order on purpose: an event is recorded in the same transaction as the change that emits it, so every event the
first read's statuses imply is already in the second read, handled or counted as pending; and a follow-up created
between the two reads is in the tree but not in the list, which `settled` takes as "not yet".

Everything but `watch` is a pure function of a snapshot, so the rules above are tested without a server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

INTERVAL = 0.5
INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C (128 + SIGINT)
TERMINAL = frozenset({"succeeded", "failed"})
# A note on a job that starts with one of these says a rules limit stopped one of its follow-ups (receiver/guards.py,
# receiver/rules.py): the chain the user asked for did not happen in full.
LIMIT_NOTES = ("max_jobs_per_root", "max_jobs_per_day", "max_depth")

Get = Callable[[str, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Snapshot:
    """The watched job and its descendants at one moment, parents before children."""

    jobs: tuple[dict[str, Any], ...]  # as `GET /api/jobs` shows them
    depths: Mapping[str, int]  # below the watched job: 0 for it, 1 for its children, ...
    pending_events: Mapping[str, int]
    unseen: tuple[str, ...] = ()  # jobs the tree names that the job list did not have yet


def snapshot(job_id: str, jobs: Sequence[dict[str, Any]], chain: Sequence[dict[str, Any]]) -> Snapshot:
    """The subtree of `job_id` from a chain tree (`chain` of the timeline JSON) and the root's job list."""
    by_id = {job["id"]: job for job in jobs}
    found: list[dict[str, Any]] = []
    depths: dict[str, int] = {}
    pending: dict[str, int] = {}
    unseen: list[str] = []
    for node, depth in _walk(_find(job_id, chain), 0):
        depths[node["id"]] = depth
        pending[node["id"]] = int(node.get("pending_events", 0))
        if node["id"] in by_id:
            found.append(by_id[node["id"]])
        else:
            unseen.append(node["id"])
    return Snapshot(tuple(found), depths, pending, tuple(unseen))


def _find(job_id: str, nodes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    for node in nodes:
        if node["id"] == job_id:
            return [node]
        below = _find(job_id, node["children"])
        if below:
            return below
    return []


def _walk(nodes: Sequence[dict[str, Any]], depth: int) -> Iterator[tuple[dict[str, Any], int]]:
    for node in nodes:
        yield node, depth
        yield from _walk(node["children"], depth + 1)


def settled(snap: Snapshot) -> bool:
    """Nothing more will happen in this chain on its own: every job ended, every file downloaded or failed, every
    event handled by the rules, and every job the tree names was read."""
    return (
        bool(snap.jobs)
        and not snap.unseen
        and not any(snap.pending_events.values())
        and all(job["status"] in TERMINAL for job in snap.jobs)
        and all(video["status"] != "pending" for job in snap.jobs for video in job["videos"])
    )


def failures(snap: Snapshot) -> list[str]:
    """What went wrong in the chain, one sentence each: failed jobs, failed downloads, follow-ups a limit stopped."""
    found = []
    for job in snap.jobs:
        if job["status"] == "failed":
            found.append(f"job {job['id']} ({job['action']}) failed: {job['error'] or 'no reason given'}")
        for video in job["videos"]:
            if video["status"] == "failed":
                found.append(f"job {job['id']}: file {video['index']} failed to download: {video['error']}")
        for note in job["notes"]:
            if note["message"].startswith(LIMIT_NOTES):
                found.append(f"job {job['id']}: rule {note['rule']} stopped by a limit: {note['message']}")
    return found


def render(snap: Snapshot) -> dict[str, str]:
    """One line per job, by job id: status, progress, files downloaded of all and their size, follow-ups pending."""
    lines = {}
    for job in snap.jobs:
        videos = job["videos"]
        done = [video for video in videos if video["status"] == "downloaded"]
        size = sum(video["bytes"] or 0 for video in done)
        progress = "-" if job["progress"] is None else f"{job['progress']}%"
        line = f"{'  ' * snap.depths[job['id']]}{job['id']}  {job['action']:<10} {job['status']:<9} {progress:>4}"
        line += f"  files {len(done)}/{len(videos)} ({_size(size)})"
        if any(video["status"] == "failed" for video in videos):
            line += f"  {sum(video['status'] == 'failed' for video in videos)} failed"
        if snap.pending_events.get(job["id"]):
            line += "  follow-ups pending"
        lines[job["id"]] = line
    return lines


def _size(count: int) -> str:
    if count < 1000:
        return f"{count} B"
    scaled = float(count)
    for unit in ("KB", "MB"):
        scaled /= 1000
        if scaled < 1000:
            return f"{scaled:.1f} {unit}"
    return f"{scaled / 1000:.1f} GB"


class Display:
    """In a terminal, the latest lines redrawn in place; elsewhere (a pipe, a log), each changed line once."""

    def __init__(self, out: TextIO, *, tty: bool) -> None:
        self._out = out
        self._tty = tty
        self._shown: dict[str, str] = {}

    def show(self, lines: dict[str, str]) -> None:
        if lines == self._shown:
            return
        if self._tty:
            up = f"\x1b[{len(self._shown)}F\x1b[J" if self._shown else ""  # to the first line drawn, clear below
            self._out.write(up + "".join(f"{line}\n" for line in lines.values()))
        else:
            self._out.write("".join(f"{line}\n" for key, line in lines.items() if self._shown.get(key) != line))
        self._out.flush()
        self._shown = dict(lines)

    def say(self, line: str) -> None:
        self._out.write(f"{line}\n")
        self._out.flush()
        self._shown = {}  # in a terminal, the next frame starts below this line


def watch(
    get: Get,
    job_id: str,
    out: TextIO,
    *,
    interval: float = INTERVAL,
    timeout: float | None = None,
    tty: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Follow `job_id` and its descendants until they settle: 0 if all went well, 1 if something failed (each
    reason printed) or `timeout` seconds passed, 130 on Ctrl-C. `get(path, params)` reads the API's JSON."""
    display = Display(out, tty=tty)
    try:
        root = get(f"/api/jobs/{job_id}", {})["root_id"]
        started = clock()
        while True:
            jobs = get("/api/jobs", {"root": root, "limit": 500})["jobs"]  # first: see the module's docstring
            chain = get(f"/api/jobs/{job_id}/timeline", {})["chain"]
            snap = snapshot(job_id, jobs, chain)
            display.show(render(snap))
            if settled(snap):
                return _verdict(display, snap)
            if timeout is not None and clock() - started >= timeout:
                display.say(f"not settled after {timeout:g} s; the jobs go on (reelhook watch {job_id} to follow them)")
                return 1
            sleep(interval)
    except KeyboardInterrupt:
        display.say(f"interrupted; the jobs go on (reelhook watch {job_id} to follow them)")
        return INTERRUPTED


def _verdict(display: Display, snap: Snapshot) -> int:
    wrong = failures(snap)
    for reason in wrong:
        display.say(f"failed: {reason}")
    if wrong:
        return 1
    files = sum(len(job["videos"]) for job in snap.jobs)
    display.say(f"settled: {len(snap.jobs)} job{'s' * (len(snap.jobs) != 1)}, {files} files downloaded")
    return 0
