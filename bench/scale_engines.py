"""The jobs API over a million jobs (100,000 with --quick) on SQLite and on PostgreSQL side by side, as ratios.

Both databases hold the same rows, made by bench/scale.py's generators from the same seed: the SQLite file built as
bench/scale.py builds it, the PostgreSQL database (pgserver's PostgreSQL 16, as in bench/engines.py) migrated by
reelhook's PostgreSQL engine and filled with COPY, then ANALYZEd (PostgreSQL's autovacuum would do so soon after
such a load; SQLite's file is measured as built, as reelhook ships it). Each is served by one `reelhook serve` and
asked the same requests by one httpx client, one at a time.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg

from bench import scale
from bench.common import Result, listening_socket, reelhook_server, url_of
from bench.engines import NOTIFY_SECRET, postgres
from storage.engine import open_store

SEED = 20260101
JOBS, QUICK_JOBS = 1_000_000, 100_000


def run(workdir: Path, quick: bool) -> Result:
    jobs = QUICK_JOBS if quick else JOBS
    requests, budget = (50, 3.0) if quick else (scale.REQUESTS, scale.BUDGET)
    (workdir / "sqlite").mkdir()
    database = workdir / "sqlite" / "reelhook.sqlite3"
    build = scale.build_database(database, jobs, random.Random(SEED))
    rows: list[dict[str, Any]] = []
    with postgres(workdir / "pg") as new_database:
        url = new_database("scale")
        started = time.perf_counter()
        _build_postgres(url, build.ids)
        pg_build_s = time.perf_counter() - started
        sqlite = _measure(
            workdir / "sqlite.log", {"REELHOOK_DATA_DIR": str(workdir / "sqlite")}, build, requests, budget
        )
        env = {"REELHOOK_DATA_DIR": str(workdir / "pg-data"), "REELHOOK_DATABASE_URL": url}
        env |= {"REELHOOK_SECRET": "bench-scale-secret-0123456789", "REELHOOK_NOTIFY_SECRET": NOTIFY_SECRET}
        pg = _measure(workdir / "pg.log", env, build, requests, budget)
    for label, matching in sqlite:
        s, p = sqlite[label, matching], pg[label, matching]
        rows.append(
            {"request": label, "matching": matching}
            | {"SQLite p50 ms": s[0], "SQLite p99 ms": s[1], "PostgreSQL p50 ms": p[0], "PostgreSQL p99 ms": p[1]}
            | {"PostgreSQL ÷ SQLite (p50)": round(p[0] / s[0], 2) if s[0] else None}
        )
    return Result(
        name="scale_engines",
        title=f"Scale on both engines: the jobs API over {jobs:,} stored jobs, PostgreSQL beside SQLite",
        rows=rows,
        headline={"jobs": jobs, "sqlite_build_s": round(build.seconds, 1), "postgres_build_s": round(pg_build_s, 1)}
        | {f"{row['request']} pg/sqlite p50": row["PostgreSQL ÷ SQLite (p50)"] for row in rows},
        method=__doc__.split("\n\n", 1)[1].replace("\n", " ").strip()  # type: ignore[union-attr]
        + f" Up to {requests} timed requests per kind (fewer if a kind used {budget:.0f} s), after"
        f" {scale.WARM_UP} untimed ones; the list requests ask for the first page of 50. Latency ratios: above 1"
        " is slower on PostgreSQL.",
    )


def _build_postgres(url: str, ids: list[str]) -> None:
    """The same rows as the SQLite file (same seed, same generators), through reelhook's migrations and COPY."""

    async def migrate() -> None:
        async with await open_store(url):
            pass

    anyio.run(migrate)
    rng = random.Random(SEED)
    # scale.build_database's ids (uuid4, not drawn from the rng), then its draws from the same seed, in its order
    jobs = len(ids)
    statuses = [status for status, percent in scale.MIX for _ in range(jobs * percent // 100)]
    statuses += ["succeeded"] * (jobs - len(statuses))
    rng.shuffle(statuses)
    now = time.time()
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        columns = "id, provider, status, params, provider_job_id, root_id, error, progress, result, attempts,"
        columns += " created_at, updated_at, reconciled_at, action, depth"
        with cursor.copy(f"COPY jobs ({columns}) FROM STDIN".encode()) as copy:
            for row in scale._job_rows(ids, statuses, now, rng):
                copy.write_row((*row, "generate", 0))
        columns = "job_id, idx, url, path, sha256, bytes, updated_at, status, attempts"
        with cursor.copy(f"COPY videos ({columns}) FROM STDIN".encode()) as copy:
            for row in scale._video_rows(ids, statuses, now, jobs, rng):
                copy.write_row((*row, "downloaded", 1))
        conn.commit()
        conn.autocommit = True
        cursor.execute(b"ANALYZE")


def _measure(
    log: Path, env: dict[str, str], build: scale.Build, requests: int, budget: float
) -> dict[tuple[str, int | None], tuple[float, float]]:
    """(p50, p99) ms per kind of request, through one `reelhook serve` on the database `env` names."""
    env = env | {"REELHOOK_API_TOKEN": scale.TOKEN}
    rng = random.Random(SEED)
    out: dict[tuple[str, int | None], tuple[float, float]] = {}
    sock = listening_socket()
    headers = {"authorization": f"Bearer {scale.TOKEN}"}
    try:
        with (
            reelhook_server(env, sock, log) as server,
            httpx.Client(base_url=url_of(sock), headers=headers, timeout=120) as client,
        ):
            scale._wait_until_up(client, server)
            kinds: list[tuple[str, int | None, scale.Request]] = [
                (f"GET /api/jobs?status={s}", build.counts[s], scale._list(s))
                for s in ("succeeded", "failed", "running", "queued")
            ]
            kinds += [("GET /api/jobs (no status)", sum(build.counts.values()), scale._list(None))]
            kinds += [("GET /api/jobs/{id}", 1, scale._get(build.ids, rng))]
            for label, matching, request in kinds:
                row = scale._row(label, matching, scale.measure(client, request, requests, budget))
                out[label, matching] = (row["p50 ms"], row["p99 ms"])
    finally:
        sock.close()
    return out
