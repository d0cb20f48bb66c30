"""Downloads while hostile origins drip: honest throughput with 0, 1 and 2 drip origins holding their slots.

A drip origin answers 200 with a large Content-Length and then one byte a second, forever. Each holds at most the
Downloader's per-origin share of its slots (2 of 4 by default) until the attempt's deadline (a 15 s head start at
32 KiB/s minimum) ends it; it is then retried with backoff, and holds its slots again. The honest files come from
bench/static.py in its own process, as in bench/downloads.py; the drips are asyncio servers inside the worker, on
ports of their own (so each is an origin of its own), and cost it next to nothing.

The worker is a child process per round (`python -m bench.drips --worker SPEC`): it records one job of four videos
per drip origin first (so the drips are first in the queue, the worst order), then the honest jobs, and runs the
Downloader, with the service's settings, under the service's Worker loop, until every honest video is downloaded.
The figure is honest MiB/s, and its ratio to the same with no drips. It is reported, not asserted.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.common import REPO, Result
from bench.downloads import VIDEOS_PER_JOB, MiB, static_server, write_source
from receiver.downloads import Downloader
from receiver.guarded_http import guarded_client
from receiver.workers import Worker
from storage import CallbackResult, JobStatus, NewJob, Store, VideoStatus

WORKER_TIMEOUT = 600.0
DRIP_EVERY = 1.0  # seconds between bytes


def run(workdir: Path, quick: bool) -> Result:
    files, size = (8, 5 * MiB) if quick else (16, 5 * MiB)
    rounds = 1 if quick else 3
    source = workdir / "source"
    source.mkdir()
    names = [f"honest-{number:03d}.mp4" for number in range(files)]
    for seed, name in enumerate(names):
        write_source(source / name, size, seed=seed)
    total = files * size / MiB
    rows: list[dict[str, Any]] = []
    headline: dict[str, Any] = {}
    with static_server(source, workdir / "static.log") as base_url:
        urls = [f"{base_url}/{name}" for name in names]
        baseline = 0.0
        for drips in (0, 1, 2):
            seconds = statistics.median(
                fetch(urls, drips, workdir / f"drips-{drips}-{round_number}")["seconds"]
                for round_number in range(rounds)
            )
            rate = total / seconds
            baseline = baseline or rate
            rows.append({
                "drip origins": drips,
                "drip slots held (at most)": min(4, 2 * drips),
                "honest files": files,
                "honest MiB": round(total),
                "seconds": round(seconds, 2),
                "honest MiB/s": round(rate, 1),
                "ratio to no drips": round(rate / baseline, 3),
            })  # fmt: skip
            headline[f"drips_{drips}_mib_s"] = round(rate, 1)
            headline[f"drips_{drips}_ratio"] = round(rate / baseline, 3)
    method = (
        f"{files} honest files of {size // MiB} MiB (random bytes behind an MP4 head, bench/downloads.py's"
        " write_source) served by bench/static.py in its own process. A fresh child process per round records one"
        f" job of {VIDEOS_PER_JOB} videos per drip origin (each an asyncio server on its own port answering 200 with"
        f" a 1 GB Content-Length, then one byte every {DRIP_EVERY:g} s), then the honest jobs, and runs"
        " Downloader(allow_private=True) with its defaults (the service's: 4 slots, 2 per origin, 32 KiB/s"
        " minimum average after a 15 s head start, 600 s ceiling) on guarded_client under receiver.workers.Worker,"
        " timing until every honest video's row says downloaded. ratio = honest"
        f" MiB/s ÷ the same with no drips; median of {rounds} round(s). Reported, not asserted."
    )
    return Result(
        name="drips",
        title="Downloads while drip origins hold their per-origin slots",
        rows=rows,
        headline=headline,
        method=method,
    )


def fetch(urls: Sequence[str], drips: int, out: Path) -> dict[str, Any]:
    out.mkdir()
    spec = out / "spec.json"
    fields = {"db": str(out / "db.sqlite3"), "media": str(out / "media"), "urls": list(urls), "drips": drips}
    spec.write_text(json.dumps(fields))
    done = subprocess.run(
        [sys.executable, "-m", "bench.drips", "--worker", str(spec)],
        cwd=REPO,
        capture_output=True,
        timeout=WORKER_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the drip worker failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}")
    report: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return report


# -- the worker -----------------------------------------------------------------------------------------------------


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 1000000000\r\n\r\n")
        while not reader.at_eof():
            writer.write(b"\x00")
            await writer.drain()
            await asyncio.sleep(DRIP_EVERY)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def record_job(store: Store, urls: Sequence[str], label: str) -> str:
    job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": label}))
    await store.claim_submission(job.id)
    result = CallbackResult(provider_job_id=label, status=JobStatus.SUCCEEDED, media_urls=tuple(urls))
    await store.record_callback(job.id, "ttapi", body=b"{}", headers=(), result=result)
    return job.id


async def download(spec: dict[str, Any]) -> dict[str, Any]:
    urls: list[str] = spec["urls"]
    servers = [await asyncio.start_server(drip, "127.0.0.1", 0) for _ in range(spec["drips"])]
    store = await Store.open(spec["db"])
    try:
        for number, server in enumerate(servers):
            port = server.sockets[0].getsockname()[1]
            await record_job(store, [f"http://127.0.0.1:{port}/{i}.mp4" for i in range(4)], f"drip-{number}")
        honest = [
            await record_job(store, urls[start : start + VIDEOS_PER_JOB], f"honest-{start}")
            for start in range(0, len(urls), VIDEOS_PER_JOB)
        ]
        arrived = asyncio.Event()
        honest_urls = set(urls)
        count = 0

        async def on_progress() -> None:
            nonlocal count
            videos = [video for job_id in honest for video in await store.get_videos(job_id)]
            count = sum(1 for video in videos if video.url in honest_urls and video.status is VideoStatus.DOWNLOADED)
            if count == len(urls):
                arrived.set()

        timeout = httpx.Timeout(30.0, connect=10.0)
        async with guarded_client(allow_private=True, allowed_origins=(), timeout=timeout) as http:
            checks: set[asyncio.Task[None]] = set()

            def on_recorded() -> None:
                task = asyncio.ensure_future(on_progress())
                checks.add(task)
                task.add_done_callback(checks.discard)

            downloader = Downloader(store, http, Path(spec["media"]), allow_private=True, on_recorded=on_recorded)
            worker = Worker("downloads", downloader.run_once, downloader.next_due)
            started = time.perf_counter()
            loop = asyncio.ensure_future(worker.run())
            try:
                await asyncio.wait_for(arrived.wait(), WORKER_TIMEOUT)
            finally:
                seconds = time.perf_counter() - started
                loop.cancel()
                await asyncio.gather(loop, *checks, return_exceptions=True)
    finally:
        await store.close()
        for server in servers:
            server.close()
    return {"seconds": seconds, "files": count}


def worker_main(argv: Sequence[str]) -> None:
    if len(argv) != 2 or argv[0] != "--worker":
        sys.exit("usage: python -m bench.drips --worker SPEC.json (bench/drips.py writes the spec)")
    spec = json.loads(Path(argv[1]).read_text())
    print(json.dumps(asyncio.run(download(spec))), flush=True)


if __name__ == "__main__":
    worker_main(sys.argv[1:])
