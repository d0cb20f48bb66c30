"""Scale of the store: the jobs API over a database of a million jobs (100,000 with --quick).

The database is built directly, not through the API (a million POSTs would measure the API, and take an hour):
`Store.open` creates it and runs the migrations, then the stdlib's sqlite3 bulk-inserts jobs and their videos in one
transaction. Then reelhook serves it, in its own process, and a client in this one times the two reads a person makes
of it: the first page of `GET /api/jobs?status=…` for each status, and `GET /api/jobs/{id}` for random jobs (and
`POST /api/reconcile`, whose query also runs at every start).

What is slow is then timed again below HTTP, on the Store's own queries, before and after candidate fixes applied to
the benchmark's copy of the database (an index, planner statistics), so the report says which change would help and
by how much. storage/ itself is never changed here.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import Result, listening_socket, peak_rss_mib, percentile, reelhook_server, url_of
from storage import JobStatus, Store

DAY = 24 * 3600.0
SPAN = 30 * DAY
# Status mix, in percent: most jobs in a long-lived database have finished.
MIX = (("succeeded", 90), ("failed", 5), ("running", 3), ("queued", 2))
PROVIDERS = ("ttapi", "acedata", "wavespeed", "apimart")
VIDEOS_PER_JOB = 4  # what a Midjourney video job gives; every succeeded job has all four downloaded
REQUESTS = 200  # per kind of request
WARM_UP = 3  # requests per kind before the timed ones (connection, first page reads)
BUDGET = 12.0  # seconds per kind of request at most: a slow query gets fewer samples, not a slower bench
TOKEN = "bench-scale-token"

Request = Callable[[httpx.Client], None]  # sends one request and checks its answer

# The schema as shipped (migration 4 added the index the job list needed: bench/results history in the README), then
# planner statistics as one more experiment, applied to the built database once the server has stopped.
STAGES: tuple[tuple[str, str, str | None], ...] = (
    ("built", "as shipped", None),
    ("analyzed", "after ANALYZE", "ANALYZE"),
)
STORE_REPEATS = 3

_SUBJECTS = ("a paper crane", "an old lighthouse", "a red fox", "a neon city", "a glass whale", "two astronauts")
_ACTIONS = ("drifting over", "walking through", "circling above", "dissolving into", "racing across")
_PLACES = ("a foggy harbour", "autumn woods", "a desert at dusk", "rainy streets", "a frozen lake", "the open sea")
_STYLES = ("cinematic, 35mm", "soft morning light", "slow dolly shot", "anime style", "macro, shallow focus")


@dataclass(frozen=True)
class Build:
    counts: dict[str, int]  # jobs per status
    videos: int
    seconds: float
    ids: list[str]


def run(workdir: Path, quick: bool) -> Result:
    jobs = 100_000 if quick else 1_000_000
    requests, budget = (50, 3.0) if quick else (REQUESTS, BUDGET)
    data = workdir / "data"
    data.mkdir()
    database = data / "reelhook.sqlite3"
    rng = random.Random(20260101)
    build = build_database(database, jobs, rng)
    counts = build.counts

    rows: list[dict[str, Any]] = []
    headline: dict[str, Any] = {"jobs": jobs, "videos": build.videos, "build_s": round(build.seconds, 1)}

    def add(key: str, label: str, matching: int | None, samples: list[float]) -> None:
        rows.append(_row(label, matching, samples))
        headline[f"{key}_p50_ms"], headline[f"{key}_p99_ms"] = rows[-1]["p50 ms"], rows[-1]["p99 ms"]

    sock = listening_socket()
    env = {"REELHOOK_DATA_DIR": str(data), "REELHOOK_API_TOKEN": TOKEN}
    try:
        with (
            reelhook_server(env, sock, workdir / "reelhook.log") as server,
            httpx.Client(base_url=url_of(sock), headers={"authorization": f"Bearer {TOKEN}"}, timeout=120) as client,
        ):
            _wait_until_up(client, server)
            # Reconcile first: it waits for the start-up pass (which holds the same lock) to end before it runs.
            kinds: list[tuple[str, str, int | None, Request, int]] = [
                ("reconcile", "POST /api/reconcile (nothing overdue)", None, _reconcile(), max(3, requests // 40))
            ]
            for status in ("succeeded", "failed", "running", "queued"):
                label = f"GET /api/jobs?status={status}"
                kinds.append((f"list_{status}", label, counts[status], _list(status), requests))
            kinds.append(("list_all", "GET /api/jobs (no status)", jobs, _list(None), requests))
            kinds.append(("get", "GET /api/jobs/{id}", 1, _get(build.ids, rng), requests))
            for key, label, matching, request, count in kinds:
                add(key, label, matching, measure(client, request, count, budget))
            samples = measure_beside(client, _get(build.ids, rng), _list("succeeded"), requests, budget)
            add("get_beside_list", "GET /api/jobs/{id} while ?status=succeeded repeats", 1, samples)
            wal = database.with_name(database.name + "-wal")
            db_bytes = database.stat().st_size
            wal_bytes = wal.stat().st_size if wal.exists() else 0
            headline["server_peak_rss_mib"] = round(peak_rss_mib(server.pid), 1)
    finally:
        sock.close()
    headline["db_mib"] = round((db_bytes + wal_bytes) / 2**20, 1)
    headline["wal_mib"] = round(wal_bytes / 2**20, 1)
    # The server is gone: now the same queries in-process, through the Store, before and after two candidate fixes.
    for stage, stage_label, change in STAGES:
        if change is not None:
            started = time.perf_counter()
            with closing(sqlite3.connect(database, isolation_level=None)) as db:
                db.executescript(change)
            headline[f"{stage}_change_s"] = round(time.perf_counter() - started, 1)
        for key, label, matching, samples in asyncio.run(time_store(database, counts)):
            add(f"store_{key}_{stage}", f"{label}, {stage_label}", matching, samples)
    method = (
        f"{jobs:,} jobs: {', '.join(f'{p}% {s}' for s, p in MIX)}; providers in turn ({', '.join(PROVIDERS)});"
        " uuid4-hex ids; created_at evenly over the last 30 days, in row order; params JSON with a ~60-character"
        f" prompt; each succeeded job with its {VIDEOS_PER_JOB} videos downloaded ({build.videos:,} video rows, with"
        " ~100-character signed CDN URLs, paths and sha256s). No callbacks, events or follow-up chains are stored,"
        " so the file is smaller than a real one of that many jobs. Running jobs carry reconciled_at (looked up at an"
        " earlier start), else start-up would ask the simulators about each of them during the measurement; they"
        " hold every provider's slots, so the queued jobs stay queued. Built in"
        f" {build.seconds:.0f} s: `Store.open` (migrations), then one stdlib sqlite3 transaction of executemany"
        " inserts with journal_mode=OFF and synchronous=OFF, then back to WAL. Measured through `reelhook serve`"
        " on uvicorn in its own process (simulated providers, default settings), by one httpx.Client in this"
        f" process with keep-alive and the bearer token, one request at a time: {WARM_UP} untimed requests per"
        f" kind, then up to {requests} timed ones, or fewer when a kind has used {budget:.0f} s (the `requests`"
        " column says how many). The list requests ask for the first page (limit 50) and check that all 50 jobs"
        " have the status; each job request names a different random existing job and checks the answer."
        " POST /api/reconcile looks up every job in flight past its grace (Store.overdue_jobs), which finds"
        " nothing here. The 'while' row times job requests while a second client thread asks for"
        " ?status=succeeded over and over: the store runs one query at a time on its one connection. Database:"
        f" {headline['db_mib']:,.0f} MiB (file + WAL, after the requests, with the server still up). The Store rows"
        " come after the server has stopped: the Store's own queries behind the slow requests, in this process on"
        f" a freshly opened Store, {STORE_REPEATS} times each (p50 is their median), first on the database as built,"
        " then after ANALYZE (planner statistics, which reelhook does not gather itself)."
    )
    return Result(
        name="scale",
        title=f"Scale: the jobs API over {jobs:,} stored jobs ({headline['db_mib']:,.0f} MiB of SQLite)",
        rows=rows,
        headline=headline,
        method=method,
    )


# -- the requests ---------------------------------------------------------------------------------------------------


def measure(client: httpx.Client, request: Request, count: int, budget: float) -> list[float]:
    """Latencies (seconds) of up to `count` requests after WARM_UP untimed ones, stopping once `budget` is spent."""
    for _ in range(WARM_UP):
        request(client)
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while len(samples) < count and time.perf_counter() < deadline:
        started = time.perf_counter()
        request(client)
        samples.append(time.perf_counter() - started)
    return samples


def measure_beside(client: httpx.Client, request: Request, other: Request, count: int, budget: float) -> list[float]:
    """`measure(request)` while another client sends `other` again and again."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def keep_asking() -> None:
        with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=client.timeout) as own:
            while not stop.is_set():
                try:
                    other(own)
                except BaseException as exc:
                    failures.append(exc)
                    return

    thread = threading.Thread(target=keep_asking, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)  # let its first request reach the server
        samples = measure(client, request, count, budget)
    finally:
        stop.set()
        thread.join(timeout=120)
    if failures:
        raise failures[0]
    return samples


def _list(status: str | None) -> Request:
    params = {"limit": "50"} if status is None else {"status": status, "limit": "50"}

    def request(client: httpx.Client) -> None:
        response = client.get("/api/jobs", params=params)
        response.raise_for_status()
        jobs = response.json()["jobs"]
        if len(jobs) != 50 or (status is not None and any(job["status"] != status for job in jobs)):
            raise RuntimeError(f"GET /api/jobs {params}: expected 50 {status or 'any'} jobs, got {len(jobs)}")

    return request


def _get(ids: list[str], rng: random.Random) -> Request:
    def request(client: httpx.Client) -> None:
        job_id = rng.choice(ids)
        response = client.get(f"/api/jobs/{job_id}")
        response.raise_for_status()
        if response.json()["id"] != job_id:
            raise RuntimeError(f"GET /api/jobs/{job_id} answered another job")

    return request


def _reconcile() -> Request:
    def request(client: httpx.Client) -> None:
        response = client.post("/api/reconcile")
        response.raise_for_status()
        if response.json()["looked_up"] != 0:
            raise RuntimeError(f"POST /api/reconcile looked jobs up: {response.json()}")

    return request


async def time_store(database: Path, counts: dict[str, int]) -> list[tuple[str, str, int | None, list[float]]]:
    """Time the Store's own queries behind the slow requests, STORE_REPEATS times each, on a freshly opened Store."""
    store = await Store.open(database)
    try:
        queries: list[tuple[str, str, int | None, Callable[[], Awaitable[object]]]] = [
            ("list_succeeded", "Store.list_jobs(status=succeeded)", counts["succeeded"],
             lambda: store.list_jobs(status=JobStatus.SUCCEEDED, limit=50)),
            ("list_submitted", "Store.list_jobs(status=submitted)", 0,
             lambda: store.list_jobs(status=JobStatus.SUBMITTED, limit=50)),
            ("awaiting", "Store.due_lookups (the deadline worker's read)", 0,
             lambda: store.due_lookups()),
        ]  # fmt: skip
        timings = []
        for key, label, matching, query in queries:
            samples = []
            for _ in range(STORE_REPEATS):
                started = time.perf_counter()
                await query()
                samples.append(time.perf_counter() - started)
            timings.append((key, label, matching, samples))
        return timings
    finally:
        await store.close()


def _wait_until_up(client: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"reelhook exited with {server.returncode} before serving (see reelhook.log)")
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("reelhook did not answer /healthz within 60 s")


def _row(label: str, matching: int | None, samples: list[float]) -> dict[str, Any]:
    return {
        "request": label,
        "matching jobs": matching,
        "requests": len(samples),
        "p50 ms": round(percentile(samples, 50) * 1000, 1),
        "p99 ms": round(percentile(samples, 99) * 1000, 1),
        "max ms": round(max(samples) * 1000, 1),
    }


# -- building the database ------------------------------------------------------------------------------------------


def build_database(path: Path, jobs: int, rng: random.Random) -> Build:
    """Create the database with reelhook's own migrations, then bulk-insert `jobs` realistic jobs and their videos."""
    started = time.perf_counter()
    asyncio.run(_migrate(path))
    ids = [uuid.uuid4().hex for _ in range(jobs)]
    statuses = [status for status, percent in MIX for _ in range(jobs * percent // 100)]
    statuses += ["succeeded"] * (jobs - len(statuses))
    rng.shuffle(statuses)
    now = time.time()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        # Build-time settings only: no journal and no fsync while filling a file nobody else has open. The database
        # goes back to WAL, reelhook's mode, before it is served.
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-1000000", "temp_store=MEMORY"):
            db.execute(f"PRAGMA {pragma}")
        db.execute("BEGIN")
        db.executemany(
            """INSERT INTO jobs (id, provider, action, status, params, provider_job_id, parent_id, root_id, depth,
                                 rule, origin, error, progress, result, attempts, next_attempt_at, created_at,
                                 updated_at, reconciled_at)
               VALUES (?, ?, 'generate', ?, ?, ?, NULL, ?, 0, NULL, NULL, ?, ?, ?, ?, NULL, ?, ?, ?)""",
            _job_rows(ids, statuses, now, rng),
        )
        videos = db.executemany(
            """INSERT INTO videos (job_id, idx, url, status, path, sha256, bytes, attempts, next_attempt_at, error,
                                   updated_at)
               VALUES (?, ?, ?, 'downloaded', ?, ?, ?, 1, NULL, NULL, ?)""",
            _video_rows(ids, statuses, now, jobs, rng),
        ).rowcount
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()
    counts = {status: statuses.count(status) for status, _ in MIX}
    return Build(counts=counts, videos=videos, seconds=time.perf_counter() - started, ids=ids)


async def _migrate(path: Path) -> None:
    store = await Store.open(path)
    await store.close()


def _created_at(number: int, jobs: int, now: float) -> float:
    # Jobs arrive in order over the last 30 days, so row order is time order, as in a real database.
    return now - SPAN + SPAN * number / jobs


def _job_rows(ids: list[str], statuses: list[str], now: float, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    jobs = len(ids)
    for number, (job_id, status) in enumerate(zip(ids, statuses, strict=True)):
        provider = PROVIDERS[number % len(PROVIDERS)]
        created = _created_at(number, jobs, now)
        prompt = f"{rng.choice(_SUBJECTS)} {rng.choice(_ACTIONS)} {rng.choice(_PLACES)}, {rng.choice(_STYLES)}"
        params = json.dumps({"prompt": prompt, "aspect_ratio": "16:9"})
        provider_job_id = None if status == "queued" else f"{rng.getrandbits(128):032x}"
        error = "provider reported failure: the prompt was refused by moderation" if status == "failed" else None
        progress = {"succeeded": 100, "failed": None, "running": rng.randrange(0, 100, 5), "queued": None}[status]
        result = json.dumps({"quota": 3}) if status in ("succeeded", "failed") else "{}"
        attempts = 0 if status == "queued" else 1
        updated = created + (rng.uniform(30, 180) if status in ("succeeded", "failed") else 5.0)
        # A running job older than its callback grace was looked up once at a past start-up: reconciled_at says so,
        # and keeps this start-up from asking the simulators about thirty thousand jobs while we measure.
        reconciled = updated + 900 if status == "running" else None
        yield (job_id, provider, status, params, provider_job_id, job_id, error, progress, result, attempts,
               created, updated, reconciled)  # fmt: skip


def _video_rows(
    ids: list[str], statuses: list[str], now: float, jobs: int, rng: random.Random
) -> Iterator[tuple[Any, ...]]:
    for number, (job_id, status) in enumerate(zip(ids, statuses, strict=True)):
        if status != "succeeded":
            continue
        provider = PROVIDERS[number % len(PROVIDERS)]
        updated = _created_at(number, jobs, now) + 200
        for index in range(VIDEOS_PER_JOB):
            yield (
                job_id,
                index,
                f"https://cdn.{provider}.example/video/{job_id}/{index}.mp4?Expires=1767225600&Signature=abcdef012345",
                f"/srv/reelhook/data/media/{job_id}/{job_id}/{index}.mp4",
                f"{rng.getrandbits(256):064x}",
                rng.randrange(3_000_000, 12_000_000),
                updated,
            )
