"""Callback -> follow-up latency: from the 200 that answers a root job's callback to the extend request that the
rule `extend.index = 0` makes arriving at the provider.

In between, reelhook's events worker reads the `job.succeeded` event, asks the rules, and records the follow-up job;
the submitter worker then claims it and POSTs it to TTAPI. Both wake from the callback's background task, not from
a timer, so the figure is what one chain costs end to end on a quiet service: the transactions on the way, and the
root's four downloads, which the same wake-up starts and which share the database connection.

The TTAPI simulator runs in this process (delivering only when told), reelhook in its own. Chains run one at a time
and each starts from rest: the previous chain's extend is delivered too and its downloads and events are drained.
"""

from __future__ import annotations

import gc
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response

from bench.common import Result, listening_socket, pending_work, percentile, reelhook_server, url_of
from receiver.serving import bind_socket, running, socket_url
from receiver.settings import Settings
from submitter.simulators.base import read_json
from submitter.simulators.ttapi import TTAPISimulator

SECRET = "bench-secret-0123456789abcdef"
API_TOKEN = "bench-api-token"
TT_KEY = "bench-ttapi-key"
WARMUP = 3  # chains run first and not measured: connections opened, code paths hot
TIMEOUT = 30.0  # seconds any one step of a chain may take before the run is abandoned
RULES = """
[limits]
max_depth = 1

[[rule]]
name = "extend-first"
on = "job.succeeded"
extend.index = 0
"""


class TimedTTAPI(TTAPISimulator):
    """The TTAPI simulator, noting when each extend request arrives (`perf_counter` on entering the handler)."""

    def __init__(self, **options: Any) -> None:
        self.extend_arrived_at: dict[str, float] = {}  # parent's TTAPI job id -> arrival
        self._extended: dict[str, anyio.Event] = {}
        super().__init__(**options)

    async def _submit(self, request: Request) -> Response:
        arrived = time.perf_counter()
        if not request.url.path.endswith("/extend"):
            return await super()._submit(request)
        parent = (await read_json(request)).get("jobId")  # Starlette keeps the body for the handler to read again
        response = await super()._submit(request)
        if isinstance(parent, str):
            self.extend_arrived_at[parent] = arrived
            self.extended(parent).set()
        return response

    def extended(self, parent: str) -> anyio.Event:
        return self._extended.setdefault(parent, anyio.Event())


def run(workdir: Path, quick: bool) -> Result:
    chains = 30 if quick else 200
    samples, videos = anyio.run(measure, workdir, WARMUP + chains)
    samples = samples[WARMUP:]
    shown = ", ".join(f"{count} {status}" for status, count in videos.items())
    total = [s["total"] for s in samples]
    recorded = [s["recorded"] for s in samples]
    sent = [s["sent"] for s in samples]
    row = {
        "chains": len(samples),
        "p50 ms": round(percentile(total, 50), 2),
        "p99 ms": round(percentile(total, 99), 2),
        "max ms": round(max(total), 2),
        "min ms": round(min(total), 2),
        "p50 200 -> follow-up recorded ms": round(percentile(recorded, 50), 2),
        "p50 recorded -> request ms": round(percentile(sent, 50), 2),
    }
    return Result(
        name="latency",
        title="Callback -> follow-up latency: 200 of a root's callback to its extend reaching the provider",
        rows=[row],
        headline={
            "p50_ms": row["p50 ms"],
            "p99_ms": row["p99 ms"],
            "max_ms": row["max ms"],
            "count": len(samples),
            "videos": videos,
        },
        method=(
            "reelhook runs as `reelhook serve --fd` in its own process with the rules file `extend.index = 0` on"
            " `job.succeeded` (max_depth 1) and REELHOOK_ALLOW_PRIVATE_URLS=1, so each root's 4 videos really download"
            " from the simulator's CDN on loopback meanwhile. The TTAPI simulator (auto_deliver off) runs in the"
            " benchmark process on real uvicorn. Per chain: a root job is submitted through `POST /api/jobs`; once"
            " the simulator has it, `deliver()` POSTs its SUCCESS callback; the clock starts when that POST's 200"
            " arrives (an httpx response hook) and stops when the extend request enters the simulator's handler"
            " (`time.perf_counter()`, same process). Then the extend is delivered too and reelhook is left to go"
            " quiet (no pending video or event, read from its database) before the next chain, so chains run one"
            " at a time from rest, with this process's garbage collector run between chains and off during them;"
            f" {WARMUP} warm-up chains are not counted. The split columns use wall-clock time:"
            " the follow-up job's `created_at` (stamped in the transaction that records it) against the 200's"
            f" arrival. Videos at the end, by status: {shown}. Both processes share the machine's 2 cores."
        ),
    )


async def measure(workdir: Path, count: int) -> tuple[list[dict[str, float]], dict[str, int]]:
    """`count` chains, each as ms from the 200 to the follow-up recorded, to its request, in all; and how many
    videos ended in each status."""
    acked: dict[str, tuple[float, float]] = {}  # delivery URL -> (perf_counter, time.time) of its last 200

    async def note_ack(response: httpx.Response) -> None:
        if response.status_code == 200:
            acked[str(response.request.url)] = (time.perf_counter(), time.time())

    rules = workdir / "rules.toml"
    rules.write_text(RULES)
    data = workdir / "data"
    with closing(bind_socket()) as sim_sock, closing(listening_socket()) as sock:
        env = {
            "REELHOOK_DATA_DIR": str(data),
            "REELHOOK_SECRET": SECRET,
            "REELHOOK_API_TOKEN": API_TOKEN,
            "REELHOOK_TTAPI_API_KEY": TT_KEY,
            "REELHOOK_TTAPI_BASE_URL": socket_url(sim_sock),
            "REELHOOK_PUBLIC_URL": url_of(sock),
            "REELHOOK_ALLOW_PRIVATE_URLS": "1",
            "REELHOOK_RULES": str(rules),
        }
        database = Settings(data_dir=data).database_path
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with (
            httpx.AsyncClient(timeout=TIMEOUT, event_hooks={"response": [note_ack]}) as sim_http,
            httpx.AsyncClient(base_url=url_of(sock), headers=headers, timeout=TIMEOUT) as api,
        ):
            sim = TimedTTAPI(api_key=TT_KEY, auto_deliver=False, http=sim_http)
            async with running(sim.app, sim_sock):
                with reelhook_server(env, sock, workdir / "reelhook.log") as server:
                    await wait_ready(api, server.poll, workdir / "reelhook.log")
                    samples = []
                    for _ in range(count):
                        # This process stamps both ends, so its own garbage collection must not pause it mid-chain.
                        gc.collect()
                        gc.disable()
                        try:
                            with anyio.fail_after(TIMEOUT * 4):
                                samples.append(await chain(api, sim, acked, database))
                        finally:
                            gc.enable()
    return samples, video_statuses(database)


async def chain(
    api: httpx.AsyncClient, sim: TimedTTAPI, acked: dict[str, tuple[float, float]], database: Path
) -> dict[str, float]:
    seen = len(sim.submissions)
    body = {"provider": "ttapi", "prompt": "a lighthouse at dusk", "image_url": "https://img.example/frame.png"}
    response = await api.post("/api/jobs", json=body)
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/jobs answered {response.status_code}: {response.text}")
    root = await accepted(sim, seen, "/submit")
    hook_url = sim.job(root).hook_url
    await expect_200(sim, root)
    acked_perf, acked_wall = acked[str(hook_url)]
    await sim.extended(root).wait()
    total = sim.extend_arrived_at[root] - acked_perf
    created = await anyio.to_thread.run_sync(followup_created_at, database, response.json()["id"])
    extend = next(s for s in sim.submissions if s.path.endswith("/extend") and s.body.get("jobId") == root)
    if extend.status_code != 200 or extend.job_id is None:
        raise RuntimeError(f"the simulator refused the extend of {root}: HTTP {extend.status_code}")
    await expect_200(sim, extend.job_id)
    while await anyio.to_thread.run_sync(pending_work, database):
        await anyio.sleep(0.01)
    recorded = created - acked_wall
    return {"total": total * 1000, "recorded": recorded * 1000, "sent": (total - recorded) * 1000}


async def accepted(sim: TimedTTAPI, seen: int, suffix: str) -> str:
    """The TTAPI job id of the first submission after the first `seen` that the simulator accepted."""
    while True:
        for submission in sim.submissions[seen:]:
            if submission.path.endswith(suffix):
                if submission.status_code != 200 or submission.job_id is None:
                    raise RuntimeError(f"the simulator refused a submission: HTTP {submission.status_code}")
                return submission.job_id
        await anyio.sleep(0.002)


async def expect_200(sim: TimedTTAPI, job_id: str) -> None:
    codes = await sim.deliver(job_id)
    if codes != [200]:
        raise RuntimeError(f"reelhook answered the callback for {job_id} with {codes}, not 200")


def followup_created_at(database: Path, parent_id: str) -> float:
    with closing(sqlite3.connect(database, timeout=10)) as db:
        row = db.execute("SELECT created_at FROM jobs WHERE parent_id = ?", (parent_id,)).fetchone()
    if row is None:
        raise RuntimeError(f"no follow-up job recorded for {parent_id}")
    return float(row[0])


def video_statuses(database: Path) -> dict[str, int]:
    with closing(sqlite3.connect(database, timeout=10)) as db:
        return {str(status): int(n) for status, n in db.execute("SELECT status, count(*) FROM videos GROUP BY 1")}


async def wait_ready(api: httpx.AsyncClient, poll: Callable[[], int | None], log: Path) -> None:
    with anyio.move_on_after(TIMEOUT):
        while poll() is None:
            try:
                if (await api.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await anyio.sleep(0.05)
    raise RuntimeError(f"reelhook did not come up; the end of {log}:\n{log.read_text()[-3000:]}")
