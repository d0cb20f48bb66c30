"""Callback ingest: how many provider callbacks reelhook stores durably and answers per second, and how long each
waits for its 200, at 1, 16 and 128 concurrent senders, beside a bare route that answers without storing anything.

Every callback is for a different job, so each is a real first delivery: the token verifies, the body parses, and
the job goes SUBMITTED -> SUCCEEDED with its four videos and an event, in one fsynced transaction, before the 200.
The videos point at `http://127.0.0.1:9/…` and private addresses are refused, so each video fails at once without
traffic; that background work (four video failures and five events per callback) still runs and competes with
ingest for the one database connection, as it would in production. After each level the table says how long that
backlog took to drain once the senders stopped.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench.bare import bare_server
from bench.common import REPO, Result, listening_socket, pending_work, percentile, reelhook_server, url_of
from receiver.settings import SEVEN_DAYS, Settings
from storage import NewJob, Store
from submitter.simulators.base import SUCCEEDED, SimJob
from submitter.simulators.ttapi import TTAPISimulator
from submitter.tokens import HookSigner

SECRET = "bench-secret-0123456789abcdef"
API_TOKEN = "bench-api-token"
TT_KEY = "bench-ttapi-key"
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers, and nothing needs to
BACKLOG_LIMIT = 120.0  # seconds to wait for the background work to drain before giving up on "backlog s"


@dataclass(frozen=True)
class Level:
    senders: int
    warmup: int
    measured: int


def levels(quick: bool) -> list[Level]:
    if quick:
        return [Level(1, 20, 100), Level(16, 32, 250), Level(128, 128, 400)]
    return [Level(1, 100, 800), Level(16, 200, 2000), Level(128, 256, 2500)]


def run(workdir: Path, quick: bool) -> Result:
    plan = levels(quick)
    data = workdir / "data"
    database = Settings(data_dir=data).database_path
    with closing(listening_socket()) as sock, closing(listening_socket()) as bare_sock:
        url, bare_url = url_of(sock), url_of(bare_sock)
        started = time.monotonic()
        jobs = anyio.run(prepare_jobs, database, sum(level.warmup + level.measured for level in plan))
        prepare_s = time.monotonic() - started
        files = write_requests(workdir, url, jobs, plan)
        env = {
            "REELHOOK_DATA_DIR": str(data),
            "REELHOOK_SECRET": SECRET,
            "REELHOOK_API_TOKEN": API_TOKEN,
            "REELHOOK_TTAPI_API_KEY": TT_KEY,
            "REELHOOK_TTAPI_BASE_URL": NOWHERE,
            "REELHOOK_PUBLIC_URL": url,
            "REELHOOK_ALLOW_PRIVATE_URLS": "0",
            "REELHOOK_MAX_HOOK_REQUESTS": str(2 * max(level.senders for level in plan)),
        }
        rows: list[dict[str, Any]] = []
        headline: dict[str, Any] = {}
        acked = 0
        with (
            reelhook_server(env, sock, workdir / "reelhook.log") as server,
            bare_server(bare_sock, workdir / "bare.log") as bare,
        ):
            wait_ready(url, server, workdir / "reelhook.log")
            wait_ready(bare_url, bare, workdir / "bare.log")
            for level, file in zip(plan, files, strict=True):
                wait_quiet(database)
                cpu = cpu_seconds(server.pid)
                ingest = load(url, file, level, workdir / f"ingest-{level.senders}.json")
                backlog_s = wait_quiet(database)
                ingest["server_cpu_s"] = cpu_seconds(server.pid) - cpu
                cpu = cpu_seconds(bare.pid)
                baseline = load(bare_url, file, level, workdir / f"bare-{level.senders}.json")
                baseline["server_cpu_s"] = cpu_seconds(bare.pid) - cpu
                rows.append(row(level, ingest, baseline, backlog_s))
                acked += answered_200(ingest)
                print(
                    f"   {level.senders:>3} senders: " + ", ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True
                )
            stored = count_callbacks(database)
    for r in rows:
        n = r["senders"]
        headline |= {f"ratio_at_{n}": r["ingest/bare"], f"ingest_rps_at_{n}": r["ingest req/s"]}
        headline |= {f"ingest_p99_ms_at_{n}": r["ingest p99 ms"], f"sustained_rps_at_{n}": r["sustained req/s"]}
    headline |= {"callbacks_acked": acked, "callbacks_stored": stored, "prepare_s": round(prepare_s, 1)}
    return Result(
        name="ingest",
        title="Callback ingest: durably stored callbacks per second vs a bare Starlette route (same uvicorn)",
        rows=rows,
        headline=headline,
        method=method(plan, prepare_s, len(jobs), acked, stored),
    )


async def prepare_jobs(database: Path, count: int) -> list[tuple[str, str]]:
    """`count` TTAPI jobs, each SUBMITTED with a provider job id; (job id, provider job id) pairs."""
    database.parent.mkdir(parents=True, exist_ok=True)
    jobs = []
    async with await Store.open(database) as store:
        for i in range(count):
            params = {"prompt": f"bench {i}", "image_url": "https://img.example/frame.png"}
            job, _ = await store.create_job(NewJob("ttapi", "generate", params))
            await store.claim_submission(job.id)
            provider_job_id = str(uuid.uuid4())
            await store.record_submitted(job.id, provider_job_id)
            jobs.append((job.id, provider_job_id))
    return jobs


def write_requests(workdir: Path, url: str, jobs: Sequence[tuple[str, str]], plan: Sequence[Level]) -> list[Path]:
    """One JSON-lines file per level: a TTAPI success callback (the seed's shape) per job, each job used once."""
    signer = HookSigner([SECRET], max_age=SEVEN_DAYS)
    simulator = TTAPISimulator(api_key=TT_KEY, auto_deliver=False)
    files, remaining = [], iter(jobs)
    for level in plan:
        lines = []
        for _ in range(level.warmup + level.measured):
            job_id, provider_job_id = next(remaining)
            path = f"/hooks/ttapi/{signer.sign_hook_token(job_id, 'ttapi')}"
            # a finished job's media are its files on the CDN at its base URL: NOWHERE/cdn/<id>/<i>.mp4
            sim_job = SimJob(
                provider_job_id, "generate", {}, url + path, "a lighthouse at dusk", NOWHERE, 4, status=SUCCEEDED
            )
            lines.append(json.dumps({"path": path, "body": json.dumps(simulator.payload(sim_job))}))
        files.append(workdir / f"requests-{level.senders}.jsonl")
        files[-1].write_text("\n".join(lines) + "\n")
    return files


def load(url: str, requests: Path, level: Level, out: Path) -> dict[str, Any]:
    """Run the load generator in its own process against `url`; its report, with the CPU time it used."""
    command = [sys.executable, "-m", "bench.loadgen", url, str(requests), "--concurrency", str(level.senders)]
    command += ["--warmup", str(level.warmup), "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, cwd=REPO, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report: dict[str, Any] = json.loads(out.read_text())
    report["generator_cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return report


def cpu_seconds(pid: int) -> float:
    """A live process's user + system CPU time so far, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def row(level: Level, ingest: dict[str, Any], bare: dict[str, Any], backlog_s: float | None) -> dict[str, Any]:
    def sent(report: dict[str, Any]) -> int:
        return int(report["requests"] + report["warmup"]["requests"])

    def rate(report: dict[str, Any]) -> float:
        return report["requests"] / report["elapsed_s"] if report["elapsed_s"] else 0.0

    def errors(report: dict[str, Any]) -> int:
        return sent(report) - answered_200(report)

    def ms(value: float, count: int) -> float:
        return round(value * 1000 / count, 2) if count else 0.0

    ingest_rate, bare_rate = rate(ingest), rate(bare)
    # Everything the callbacks caused, acknowledged and done in the background, from first request to quiet.
    busy_s = ingest["warmup"]["elapsed_s"] + ingest["elapsed_s"] + (backlog_s or 0.0)
    return {
        "senders": level.senders,
        "requests": ingest["requests"],
        "ingest req/s": round(ingest_rate, 1),
        "bare req/s": round(bare_rate, 1),
        "ingest/bare": round(ingest_rate / bare_rate, 3) if bare_rate else None,
        "ingest p50 ms": round(percentile(ingest["latencies_ms"], 50), 2),
        "ingest p99 ms": round(percentile(ingest["latencies_ms"], 99), 2),
        "bare p50 ms": round(percentile(bare["latencies_ms"], 50), 2),
        "bare p99 ms": round(percentile(bare["latencies_ms"], 99), 2),
        "errors": errors(ingest),
        "bare errors": errors(bare),
        "backlog s": None if backlog_s is None else round(backlog_s, 1),
        "sustained req/s": round(sent(ingest) / busy_s, 1) if backlog_s is not None else None,
        "ingest CPU ms/req": ms(ingest["server_cpu_s"], sent(ingest)),
        "bare CPU ms/req": ms(bare["server_cpu_s"], sent(bare)),
        "gen CPU ms/req": ms(bare["cpu_s"], bare["requests"]),
    }


def answered_200(report: dict[str, Any]) -> int:
    return int(report["statuses"].get("200", 0) + report["warmup"]["statuses"].get("200", 0))


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Until `GET /healthz` answers 200; raises with the log's tail if the process dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not come up; the end of {log}:\n{log.read_text()[-3000:]}")


def wait_quiet(database: Path, timeout: float = BACKLOG_LIMIT) -> float | None:
    """Seconds until reelhook has no background work left; None if it still had some after `timeout`."""
    started = time.monotonic()
    while pending_work(database):
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.05)
    return time.monotonic() - started


def count_callbacks(database: Path) -> int:
    with closing(sqlite3.connect(database, timeout=10)) as db:
        return int(db.execute("SELECT count(*) FROM callbacks").fetchone()[0])


def method(plan: Sequence[Level], prepare_s: float, jobs: int, acked: int, stored: int) -> str:
    counts = "; ".join(f"{level.senders}: {level.warmup} warm-up + {level.measured} measured" for level in plan)
    return (
        "reelhook (`reelhook serve --fd`; SQLite in WAL, synchronous=FULL, on the local disk) and a bare Starlette"
        " route (`bench/bare.py`: reads the body, answers 200, stores nothing) each run in their own process, served"
        " by `receiver.serving.make_server` with the same uvicorn settings (asyncio loop, h11). Before reelhook"
        f" starts, {jobs} TTAPI jobs are created through `Store` and marked SUBMITTED with a provider job id"
        f" ({prepare_s:.0f} s). Load: an httpx generator in a separate process (`python -m bench.loadgen`), N workers,"
        " each with its own keep-alive connection over loopback, sending its next request as soon as the last is"
        " answered (closed loop). Every request is a TTAPI SUCCESS callback in the seed's shape, with 4 video URLs"
        " on 127.0.0.1:9 (refused at once: REELHOOK_ALLOW_PRIVATE_URLS=0), to `/hooks/ttapi/{token}` of a"
        f" different job, with a valid token. Requests per level (senders: count): {counts}; the bare route gets the"
        " same requests. Latency is send to full response, timed in the generator; req/s is measured requests over"
        " the measured phase's wall time. Each level starts with reelhook's background work (video failures,"
        " events) drained; 'backlog s' is how long that work took to drain after the senders stopped (blank: not"
        f" within {BACKLOG_LIMIT:.0f} s) and 'sustained req/s' is the callbacks sent over the time from the first"
        " request to quiet, i.e. the rate reelhook can keep up including what each callback sets off. CPU ms/req is"
        " the server process's CPU time (all threads, /proc) over the run, backlog included, per request; 'gen'"
        " is the generator's own CPU per request against the bare route. REELHOOK_MAX_HOOK_REQUESTS is twice the"
        " highest concurrency, so nothing is shed; 'errors' counts non-200 answers and failed requests, warm-up"
        f" included. {acked} callbacks answered 200 and the callbacks table then held {stored} rows. The 2 cores"
        " are shared by the server under test and the generator (the idle server of the pair uses none); the bare"
        " route needs less CPU per request than the generator, so its rate is the generator's limit and the req/s"
        " ratio understates the gap that the CPU columns show."
    )
