"""Engines and instances: callback ingest on the SQLite engine and on the PostgreSQL engine side by side in one run,
then 1, 2 and 3 `reelhook serve` instances on one PostgreSQL, every rate as a ratio to the single SQLite instance.

Each configuration gets a fresh database (a SQLite file; a new database on one PostgreSQL 16 from the `pgserver`
wheel, started in the benchmark's temp dir as tests/postgres.py does) holding its own SUBMITTED TTAPI jobs, and its
instances (each its own data dir, the same secret, API token and notification secret). The callbacks are those of
bench/ingest.py: a distinct signed success callback per job, each sent once, videos refused at once so that the
background work (video failures, events) runs without network traffic. Then, on new instances of the same
configuration (allowed to fetch from loopback), sustained callbacks with downloads: each callback's four 1 MiB
videos are real files on a local static server (bench/static.py, sendfile), downloaded, hashed and fsynced.

Several instances are loaded by one wrk per instance, side by side, each sending its own share of the callbacks over
its share of the connections, rather than through a load balancer: a Python balancer on the same 2 cores would cost
more per request than an instance does and measure itself. The rate is all the callbacks answered over the longest
wrk's window (first request sent to last answer).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from bench import wrk
from bench.callbacks import (
    NOWHERE,
    Level,
    callback_requests,
    cpu_seconds,
    prepare_jobs,
    server_env,
    wait_quiet,
    wait_ready,
)
from bench.common import Result, counts, listening_socket, reelhook_server, url_of
from bench.downloads import VIDEOS_PER_JOB, MiB, static_server, write_source
from receiver.settings import Settings

NOTIFY_SECRET = "whsec_cmVlbGhvb2stYmVuY2gtbm90aWZ5LXNlY3JldC0zMmI="  # whsec_ + base64 of 32 bytes


@dataclass(frozen=True)
class Config:
    engine: str  # "SQLite" or "PostgreSQL"
    instances: int

    @property
    def label(self) -> str:
        return f"{self.engine} × {self.instances}"


CONFIGS = (Config("SQLite", 1), Config("PostgreSQL", 1), Config("PostgreSQL", 2), Config("PostgreSQL", 3))


def levels(quick: bool) -> list[Level]:
    """Per level: connections (over all instances), warm-up callbacks, measured callbacks (each sent once)."""
    if quick:
        return [Level(16, 30, 150), Level(128, 130, 300)]
    return [Level(16, 100, 600), Level(128, 150, 600)]  # PostgreSQL drains ~13 callbacks/s: ~1 min a level


def download_levels(quick: bool) -> list[Level]:
    """The sustained run with real downloads: 16 connections, each callback's four 1 MiB videos fetched."""
    return [Level(16, 8, 40)] if quick else [Level(16, 16, 200)]


def run(workdir: Path, quick: bool) -> Result:
    if wrk.available() is None:
        return Result("engines", "Engines and instances: NOT RUN, wrk is missing (apt-get install wrk)")
    plan = levels(quick)
    rows: list[dict[str, Any]] = []
    with postgres(workdir / "pg") as new_database:
        for number, config in enumerate(CONFIGS):
            database: Path | str = Settings(data_dir=workdir / "sqlite").database_path
            if config.engine == "PostgreSQL":
                database = new_database(f"bench_{number}")
            for level, report in measure(workdir / f"run-{number}", config, database, plan):
                rows.append({"config": config.label, "videos": "refused", "conns": level.senders} | report)
                print("   " + ", ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
            with static_server(_sources(workdir / "cdn"), workdir / "static.log") as media:
                for level, report in measure(
                    workdir / f"downloads-{number}", config, database, download_levels(quick), media
                ):
                    rows.append({"config": config.label, "videos": "4 × 1 MiB", "conns": level.senders} | report)
                    print("   " + ", ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    base = {(row["videos"], row["conns"]): row for row in rows if row["config"] == CONFIGS[0].label}
    for row in rows:
        sqlite = base[row["videos"], row["conns"]]
        row["ingest ÷ SQLite"] = _ratio(row["ingest req/s"], sqlite["ingest req/s"])
        row["sustained ÷ SQLite"] = _ratio(row["sustained req/s"], sqlite["sustained req/s"])
    headline = {
        f"{row['config']} @{row['conns']}, videos {row['videos']}": {
            k: row[k] for k in ("ingest ÷ SQLite", "sustained ÷ SQLite")
        }
        for row in rows
    }
    return Result(
        name="engines",
        title="Engines and instances: callback ingest on SQLite and PostgreSQL, 1-3 instances on one PostgreSQL,"
        " as ratios to one SQLite instance",
        rows=rows,
        headline=headline,
        method=method(plan, quick),
    )


def measure(
    workdir: Path, config: Config, database: Path | str, plan: Sequence[Level], media: str | None = None
) -> Iterator[tuple[Level, dict[str, Any]]]:
    """Start `config.instances` instances on `database` and load them at each level, one wrk per instance. With
    `media` (the static server's URL), each callback's four videos are real files there, downloaded by reelhook;
    without, they point at a port where nothing answers and are refused at once."""
    workdir.mkdir(parents=True)
    jobs = anyio.run(prepare_jobs, database, sum(level.warmup + level.measured for level in plan))
    if media is not None:
        _link_videos(workdir.parent / "cdn", [provider_job_id for _, provider_job_id in jobs])
    with ExitStack() as stack:
        socks = [stack.enter_context(closing(listening_socket())) for _ in range(config.instances)]
        urls = [url_of(sock) for sock in socks]
        servers = []
        for i, (sock, url) in enumerate(zip(socks, urls, strict=True)):
            env = server_env(workdir / f"data-{i}", url, max(level.senders for level in plan))
            env["REELHOOK_NOTIFY_SECRET"] = NOTIFY_SECRET
            if media is not None:
                env["REELHOOK_ALLOW_PRIVATE_URLS"] = "1"  # the files are on a loopback server
            if isinstance(database, str):
                env["REELHOOK_DATABASE_URL"] = database
            else:
                env["REELHOOK_DATA_DIR"] = str(database.parent)  # the file prepare_jobs filled
            log = workdir / f"r{i}.log"
            servers.append(stack.enter_context(reelhook_server(env, sock, log)))
            wait_ready(url, servers[-1], log)
        # Every instance signs with the same secret, so a callback's path is valid at any of them.
        remaining = iter(callback_requests(urls[0], jobs, media or NOWHERE))
        for level in plan:
            warm = [next(remaining) for _ in range(level.warmup)]
            measured = [next(remaining) for _ in range(level.measured)]
            wait_quiet(database)
            started = time.monotonic()
            _side_by_side(workdir, urls, warm, level.senders)
            cpu = sum(cpu_seconds(server.pid) for server in servers)
            reports = _side_by_side(workdir, urls, measured, level.senders)
            ingest_cpu = sum(cpu_seconds(server.pid) for server in servers) - cpu
            backlog_s = wait_quiet(database)
            answered = sum(report["requests"] for report in reports)
            window = max(report["elapsed_s"] for report in reports)
            [downloaded] = counts(database, ["SELECT count(*) FROM videos WHERE status = 'downloaded'"])
            busy = time.monotonic() - started
            yield (
                level,
                {
                    "ingest req/s": round(answered / window, 1) if window else None,
                    "p99 ms": round(max(report["p99_ms"] for report in reports), 1),
                    "errors": sum(wrk.failed(report) for report in reports),
                    "backlog s": None if backlog_s is None else round(backlog_s, 1),
                    "sustained req/s": round((len(warm) + len(measured)) / busy, 1) if backlog_s is not None else None,
                    "server CPU ms": round(ingest_cpu * 1000 / answered, 2) if answered else None,
                    "downloaded so far": downloaded,
                },
            )


def _side_by_side(workdir: Path, urls: Sequence[str], lines: Sequence[tuple[str, str]], connections: int) -> list[Any]:
    """One wrk per instance at once, instance i sending every n-th line over its share of the connections."""
    n = len(urls)
    reports: list[Any] = [None] * n
    failures: list[BaseException] = []

    def one(i: int) -> None:
        try:
            own = workdir / f"wrk-{i}"
            own.mkdir(exist_ok=True)
            requests = wrk.write_lines(own / "lines.txt", list(lines[i::n]))
            conns = max(1, connections // n + (1 if i < connections % n else 0))
            reports[i] = wrk.load(urls[i], requests, connections=conns, seconds=600, mode="once", workdir=own)
        except BaseException as exc:
            failures.append(exc)

    # an instance with no line of its own (fewer lines than instances) is not loaded: wrk refuses an empty file
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n) if lines[i::n]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [report for report in reports if report is not None]


def _sources(directory: Path) -> Path:
    """Four 1 MiB videos (they start as an MP4 does, which the downloader checks) in `directory`/src."""
    (directory / "src").mkdir(parents=True, exist_ok=True)
    for i in range(VIDEOS_PER_JOB):
        write_source(directory / "src" / f"{i}.mp4", MiB, seed=i)
    return directory


def _link_videos(directory: Path, provider_job_ids: Sequence[str]) -> None:
    """Each job's videos at cdn/<provider job id>/<i>.mp4, as hard links to the four sources (no disk per job)."""
    for provider_job_id in provider_job_ids:
        (directory / "cdn" / provider_job_id).mkdir(parents=True)
        for i in range(VIDEOS_PER_JOB):
            os.link(directory / "src" / f"{i}.mp4", directory / "cdn" / provider_job_id / f"{i}.mp4")


@contextmanager
def postgres(data_dir: Path) -> Iterator[Any]:
    """A PostgreSQL 16 from the `pgserver` wheel in `data_dir`; yields a function that creates a database and
    returns its URL. Stopped when the block ends."""
    import psycopg

    # pgserver's import warns that XDG_RUNTIME_DIR is unset; its socket path must stay short, hence a /tmp dir
    with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="reelhook-bench-pg-") as short:
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(Path(short) if len(str(data_dir)) > 60 else data_dir, cleanup_mode="stop")
        try:

            def new_database(name: str) -> str:
                with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {name}".encode())
                return str(server.get_uri(name))

            yield new_database
        finally:
            server.cleanup()


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 2) if value and base else None


def method(plan: Sequence[Level], quick: bool) -> str:
    counts = "; ".join(f"{level.senders}: {level.warmup} warm-up + {level.measured} measured" for level in plan)
    return (
        f"Callbacks per level (connections: warm-up + measured, each callback sent once): {counts}. "
        'wrk (bench/wrk.py, "once" mode) drives each instance; with several instances, one wrk per instance runs at'
        " the same time with its share of the callbacks and of the connections (no load balancer: a Python one on"
        " these cores would measure itself). ingest req/s: callbacks answered over the longest wrk window; sustained"
        " req/s: the level's callbacks (warm-up included) over the time from the first sent until the background work"
        " (video failures or downloads, events) had drained in the database (with videos of 4 × 1 MiB from a local"
        ' static server, the same files hard-linked per job; "downloaded so far" counts the database\'s downloaded'
        " videos, a check that the run did download); server CPU: per measured callback, while they were sent (not"
        " the background work after), reelhook processes only, PostgreSQL's own is not counted."
        f" The machine has {os.cpu_count()} cores: with more instances than cores, the instances, wrk"
        " and PostgreSQL share them, so 2 and 3 instances measure contention, not scale-out capacity."
        + (" Quick run: small counts, the ratios are noisy." if quick else "")
    )
