"""The callbacks the ingest benchmarks send: TTAPI jobs made SUBMITTED in the store before reelhook starts, one
signed success callback per job in the seed's shape, and the things every such run waits on (the server up, its
background work drained).

Every callback is for a different job, so each is a real first delivery: the token verifies, the body parses, and
the job goes SUBMITTED -> SUCCEEDED with its four videos and an event, in one fsynced transaction, before the 200.
The videos point at `http://127.0.0.1:9/…` and private addresses are refused, so each video fails at once without
traffic; that background work (four video failures and five events per callback) still runs and competes with
ingest for the one database connection, as it would in production.
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

import httpx

from bench.common import REPO, pending_work
from receiver.settings import SEVEN_DAYS
from storage import NewJob
from storage.engine import open_store
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


def server_env(data: Path, url: str, max_senders: int) -> dict[str, str]:
    """reelhook's environment for an ingest run: TTAPI with a key (no simulator), videos refused at once."""
    return {
        "REELHOOK_DATA_DIR": str(data),
        "REELHOOK_SECRET": SECRET,
        "REELHOOK_API_TOKEN": API_TOKEN,
        "REELHOOK_TTAPI_API_KEY": TT_KEY,
        "REELHOOK_TTAPI_BASE_URL": NOWHERE,
        "REELHOOK_PUBLIC_URL": url,
        "REELHOOK_ALLOW_PRIVATE_URLS": "0",
        "REELHOOK_MAX_HOOK_REQUESTS": str(2 * max_senders),  # nothing is shed
    }


async def prepare_jobs(database: Path | str, count: int) -> list[tuple[str, str]]:
    """`count` TTAPI jobs, each SUBMITTED with a provider job id, in the SQLite file at `database` or the PostgreSQL
    database at a `postgresql://` URL; (job id, provider job id) pairs."""
    if isinstance(database, Path):
        database.parent.mkdir(parents=True, exist_ok=True)
    jobs = []
    async with await open_store(database) as store:
        for i in range(count):
            params = {"prompt": f"bench {i}", "image_url": "https://img.example/frame.png"}
            job, _ = await store.create_job(NewJob("ttapi", "generate", params))
            await store.claim_submission(job.id)
            provider_job_id = str(uuid.uuid4())
            await store.record_submitted(job.id, provider_job_id)
            jobs.append((job.id, provider_job_id))
    return jobs


def callback_requests(url: str, jobs: Sequence[tuple[str, str]], media: str = NOWHERE) -> list[tuple[str, str]]:
    """(path, body) of a TTAPI success callback (the seed's shape) per job, to its signed hook URL; its four videos
    at `media`/cdn/<provider job id>/<i>.mp4."""
    signer = HookSigner([SECRET], max_age=SEVEN_DAYS)
    simulator = TTAPISimulator(api_key=TT_KEY, auto_deliver=False)
    requests = []
    for job_id, provider_job_id in jobs:
        path = f"/hooks/ttapi/{signer.sign_hook_token(job_id, 'ttapi')}"
        # a finished job's media are its files on the CDN at its base URL: <media>/cdn/<id>/<i>.mp4
        sim_job = SimJob(
            provider_job_id, "generate", {}, url + path, "a lighthouse at dusk", media, 4, status=SUCCEEDED
        )
        requests.append((path, json.dumps(simulator.payload(sim_job))))
    return requests


def write_requests(workdir: Path, url: str, jobs: Sequence[tuple[str, str]], plan: Sequence[Level]) -> list[Path]:
    """One JSON-lines file per level for bench/loadgen.py, each job used once."""
    files, remaining = [], iter(callback_requests(url, jobs))
    for level in plan:
        lines = [json.dumps({"path": path, "body": body}) for path, body in _take(remaining, level)]
        files.append(workdir / f"requests-{level.senders}.jsonl")
        files[-1].write_text("\n".join(lines) + "\n")
    return files


def _take(remaining: Any, level: Level) -> list[tuple[str, str]]:
    return [next(remaining) for _ in range(level.warmup + level.measured)]


def load(url: str, requests: Path, level: Level, out: Path) -> dict[str, Any]:
    """Run the httpx generator (bench/loadgen.py) in its own process against `url`; its report, with the CPU time
    it used."""
    command = [sys.executable, "-m", "bench.loadgen", url, str(requests), "--concurrency", str(level.senders)]
    command += ["--warmup", str(level.warmup), "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, cwd=REPO, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report: dict[str, Any] = json.loads(out.read_text())
    report["generator_cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return report


def answered_200(report: dict[str, Any]) -> int:
    """200s in a bench/loadgen.py report, warm-up included."""
    return int(report["statuses"].get("200", 0) + report["warmup"]["statuses"].get("200", 0))


def cpu_seconds(pid: int) -> float:
    """A live process's user + system CPU time so far, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def wait_quiet(database: Path | str, timeout: float = BACKLOG_LIMIT) -> float | None:
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
