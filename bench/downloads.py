"""Download throughput and memory: reelhook's downloader against curl, on the same files from the same local server.

Three cases: a batch of 5 MiB videos fetched four at a time (the Downloader's default concurrency), the same batch
two at a time, and one large file (1 GiB; 100 MiB with --quick). Each is fetched, round after round, by curl and by
reelhook from one static server (bench/static.py: the stdlib's threaded http.server answering with sendfile, in its
own process), and the rounds alternate which client goes first.

All the files come from one origin, and the Downloader lets at most `per_origin` of its slots fetch from one origin
(2 by default). So each case runs both clients with the same number of downloads at once, N: reelhook with
concurrency = per_origin = N, curl as N processes. (Until December 2026 reelhook ran with its default per-origin
limit, two at a time, against four curls: unfair to reelhook.) The two-at-a-time case is what the service's defaults
give from a single origin.

reelhook runs in a child process per round, `python -m bench.downloads --worker SPEC`, so its peak RSS (VmHWM) is its
own and starts from nothing each time: it opens a real Store on a fresh SQLite file, records the jobs the way a
callback does (create_job, claim_submission, record_callback with a SUCCEEDED result naming the URLs), builds the
Downloader on `guarded_client` as the service does, and times `run_once()` until nothing is left. Then it checks
every video is downloaded and that each file's sha256 on disk matches the source's.

reelhook fsyncs each file (and its directory) before recording it; curl does not. So curl's time is taken to the
moment its files are fsynced too, which is the same durability and keeps the page cache from carrying one round's
unwritten megabytes into the next; its time without the fsyncs is reported beside it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench.common import REPO, Result, listening_socket, peak_rss_mib, url_of
from receiver.downloads import Downloader
from receiver.guarded_http import guarded_client
from receiver.posterqueue import PosterQueue
from receiver.workers import Worker
from storage import CallbackResult, JobStatus, NewJob, Store, VideoStatus
from storage.media.local import LocalMediaStore

MiB = 1024 * 1024
WRITE = 8 * MiB  # source files are written in blocks this size
FTYP = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00"  # the downloader keeps only bodies that look like what the URL says
CONCURRENCY = 4  # the Downloader's default, which the service uses
VIDEOS_PER_JOB = 4  # a Midjourney video job gives four
CURL = "/usr/bin/curl"
WORKER_TIMEOUT = 600.0


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    files: int
    size: int  # bytes, each
    at_once: int = CONCURRENCY  # reelhook's concurrency and per_origin; curl's processes

    def names(self) -> list[str]:
        return [f"{self.key}-{number:03d}.mp4" for number in range(self.files)]


def run(workdir: Path, quick: bool) -> Result:
    cases = (
        Case("batch", "5 MiB videos, 4 at once", 8 if quick else 40, 5 * MiB),
        Case("batch2", "5 MiB videos, 2 at once (per-origin default)", 8 if quick else 40, 5 * MiB, at_once=2),
        Case("large", "one large video", 1, (100 if quick else 1024) * MiB),
    )
    rounds = 1 if quick else 3
    source = workdir / "source"
    source.mkdir()
    digests: dict[str, str] = {}
    started = time.perf_counter()
    for case in cases:
        for name in case.names():
            digests[name] = write_source(source / name, case.size, seed=len(digests))
    created = time.perf_counter() - started

    rows: list[dict[str, Any]] = []
    headline: dict[str, Any] = {}
    with static_server(source, workdir / "static.log") as base_url:
        for case in cases:
            urls = [f"{base_url}/{name}" for name in case.names()]
            expected = {url: digests[name] for url, name in zip(urls, case.names(), strict=True)}
            ours: list[dict[str, Any]] = []
            theirs: list[tuple[float, float, float]] = []
            for round_number in range(rounds):
                order = ("reelhook", "curl") if round_number % 2 == 0 else ("curl", "reelhook")
                for client in order:
                    out = workdir / f"{client}-{case.key}-{round_number}"
                    if client == "reelhook":
                        ours.append(fetch_with_reelhook(urls, expected, out, at_once=case.at_once))
                    else:
                        theirs.append(fetch_with_curl(urls, expected, out, at_once=case.at_once))
            total = case.files * case.size / MiB
            our_s = statistics.median(sample["seconds"] for sample in ours)
            curl_s = statistics.median(seconds for seconds, _, _ in theirs)
            curl_nosync_s = statistics.median(seconds for _, seconds, _ in theirs)
            gib = case.files * case.size / 1024**3
            our_cpu = statistics.median(sample["cpu_s"] for sample in ours) / gib
            curl_cpu = statistics.median(cpu for _, _, cpu in theirs) / gib
            peak = max(sample["peak_rss_mib"] for sample in ours)
            ratio = (total / our_s) / (total / curl_s)
            rows.append({
                "case": case.label,
                "files": case.files,
                "at once": case.at_once,
                "total MiB": round(total),
                "reelhook s": round(our_s, 2),
                "reelhook MiB/s": round(total / our_s, 1),
                "curl s": round(curl_s, 2),
                "curl MiB/s": round(total / curl_s, 1),
                "ratio": round(ratio, 2),
                "reelhook peak RSS MiB": round(peak, 1),
                "curl s (no fsync)": round(curl_nosync_s, 2),
                "reelhook CPU s/GiB": round(our_cpu, 2),
                "curl CPU s/GiB": round(curl_cpu, 2),
            })  # fmt: skip
            headline[f"{case.key}_ratio"] = round(ratio, 2)
            headline[f"{case.key}_reelhook_mib_s"] = round(total / our_s, 1)
            headline[f"{case.key}_curl_mib_s"] = round(total / curl_s, 1)
            headline[f"{case.key}_peak_rss_mib"] = round(peak, 1)
            headline[f"{case.key}_reelhook_cpu_s_per_gib"] = round(our_cpu, 2)
    headline["rss_growth_mib"] = round(headline["large_peak_rss_mib"] - headline["batch_peak_rss_mib"], 1)

    batch, _, large = cases
    method = (
        f"Source files in the bench's temporary directory: {batch.files} × {batch.size // MiB} MiB and 1 ×"
        f" {large.size // MiB} MiB, random bytes (one os.urandom MiB, stamped with file and block numbers so no two"
        f" blocks are alike, behind an MP4 'ftyp' header), written in 8 MiB blocks and fsynced ({created:.0f} s)."
        " Served by bench/static.py, a separate process: the stdlib's ThreadingHTTPServer over HTTP/1.1 with"
        " keep-alive, sending bodies with socket.sendfile (zero-copy: in a one-off check on this machine it served"
        " ~2.9 GB/s to curl writing to /dev/null, where a Starlette FileResponse under uvicorn, with only h11"
        " installed, served ~450 MB/s, slower than curl writes to disk, so it would have measured itself). Each"
        f" case runs {rounds} round(s), alternating which client goes first; the table gives the medians."
        " reelhook: a fresh child process per round (`python -m bench.downloads --worker`) opens a Store on a new"
        f" SQLite file, records jobs of {VIDEOS_PER_JOB} videos as a provider callback would (create_job,"
        " claim_submission, record_callback with a SUCCEEDED result naming the URLs), and times"
        " Downloader.run_once() until it returns 0:"
        " Downloader(concurrency=N, per_origin=N, allow_private=True) on guarded_client(allow_private=True,"
        " timeout=30 s/10 s connect) as the service builds it (bodies read by receiver/fetching.py's reader threads,"
        " which write a body straight into its .part), so the time includes the fsyncs, sidecars and SQLite commits"
        " of each video; the posters worker runs beside it, as in the service (these files are random bytes, so each"
        " poster fails fast). Its peak RSS is that process's VmHWM after the downloads; then it checks every"
        " video is downloaded and its file's sha256 matches the source. curl: the URLs split round-robin over"
        " N curl processes at once (`curl -sS --fail --remote-name-all --output-dir`, each reusing its"
        " connection), timed until every file is fsynced (the same durability as reelhook; 'curl s (no fsync)' is"
        " the same run without that), then checked by sha256. ratio = reelhook MiB/s ÷ curl MiB/s. CPU s/GiB: user +"
        " system CPU of the reelhook worker process (all its threads) while downloading, and of the curl processes,"
        " per GiB fetched; reelhook's includes hashing, which curl does not do."
    )
    return Result(
        name="downloads",
        title="Downloads: reelhook's downloader against curl, same files, same local server",
        rows=rows,
        headline=headline,
        method=method,
    )


# -- source files and the server ------------------------------------------------------------------------------------


def write_source(path: Path, size: int, *, seed: int) -> str:
    """Write `size` cheap random bytes to `path`, fsynced; return their sha256."""
    block = bytearray(os.urandom(MiB) * (WRITE // MiB))
    digest = hashlib.sha256()
    written = 0
    with open(path, "wb") as file:
        while written < size:
            length = min(WRITE, size - written)
            for offset in range(0, length, MiB):  # a stamp per MiB, so no two blocks of any file are alike
                stamp = f"{seed:08x}:{(written + offset) // MiB:08x}".encode()
                block[offset + 16 : offset + 16 + len(stamp)] = stamp
            block[:16] = FTYP if written == 0 else bytes(16)
            view = memoryview(block)[:length]
            digest.update(view)
            file.write(view)
            written += length
        file.flush()
        os.fsync(file.fileno())
    return digest.hexdigest()


@contextmanager
def static_server(directory: Path, log: Path) -> Iterator[str]:
    """bench/static.py serving `directory` in its own process; yields its base URL."""
    sock = listening_socket()
    try:
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.static", "--fd", str(sock.fileno()), "--directory", str(directory)],
                pass_fds=[sock.fileno()],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        try:
            yield url_of(sock)  # the socket listens already: a client may connect before the server is up
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        sock.close()


# -- the two clients ------------------------------------------------------------------------------------------------


def fetch_with_curl(
    urls: Sequence[str], expected: dict[str, str], out: Path, *, at_once: int = CONCURRENCY
) -> tuple[float, float, float]:
    """Fetch with `at_once` curl processes; return seconds to all fsynced, to all written, and curl's CPU seconds."""
    out.mkdir()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    groups = [list(urls[start::at_once]) for start in range(min(at_once, len(urls)))]
    started = time.perf_counter()
    processes = [
        subprocess.Popen([CURL, "-sS", "--fail", "--remote-name-all", "--output-dir", str(out), *group])
        for group in groups
    ]
    try:
        for process in processes:
            if process.wait(timeout=WORKER_TIMEOUT) != 0:
                raise RuntimeError(f"curl exited with {process.returncode} (see its message above)")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    written = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for path in out.iterdir():
        _fsync(path)
    _fsync(out)
    synced = time.perf_counter() - started
    for url, sha256 in expected.items():
        path = out / url.rsplit("/", 1)[1]
        if file_sha256(path) != sha256:
            raise RuntimeError(f"curl's copy of {url} does not match the source")
    _remove(out)
    return synced, written, cpu


def fetch_with_reelhook(
    urls: Sequence[str], expected: dict[str, str], out: Path, *, at_once: int = CONCURRENCY
) -> dict[str, Any]:
    """Run the worker below in a child process, `at_once` downloads at a time; return what it reports."""
    out.mkdir()
    spec = out / "spec.json"
    db, media = str(out / "reelhook.sqlite3"), str(out / "media")
    spec.write_text(json.dumps({"db": db, "media": media, "urls": expected, "at_once": at_once}))
    done = subprocess.run(
        [sys.executable, "-m", "bench.downloads", "--worker", str(spec)],
        cwd=REPO,
        capture_output=True,
        timeout=WORKER_TIMEOUT,  # run() kills the child on a timeout, or on any other exception
    )
    if done.returncode != 0:
        raise RuntimeError(f"the download worker failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}")
    report: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    _remove(out)
    return report


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    directory.rmdir()


# -- the worker: one reelhook downloader in its own process ---------------------------------------------------------


async def download(spec: dict[str, Any]) -> dict[str, Any]:
    """Record jobs naming `spec["urls"]`, download them all with the service's Downloader, check every file."""
    expected: dict[str, str] = spec["urls"]
    urls = list(expected)
    store = await Store.open(spec["db"])
    try:
        job_ids = []
        for start in range(0, len(urls), VIDEOS_PER_JOB):
            job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": f"bench video {start}"}))
            await store.claim_submission(job.id)
            result = CallbackResult(
                provider_job_id=f"bench-{start}",
                status=JobStatus.SUCCEEDED,
                media_urls=tuple(urls[start : start + VIDEOS_PER_JOB]),
            )
            await store.record_callback(job.id, "ttapi", body=b"{}", headers=(), result=result)
            job_ids.append(job.id)
        timeout = httpx.Timeout(30.0, connect=10.0)
        media = LocalMediaStore(Path(spec["media"]))
        async with (
            guarded_client(allow_private=True, allowed_origins=(), timeout=timeout) as http,
            anyio.create_task_group() as workers,
        ):
            # The posters worker runs beside the downloads as in the service, so their CPU is in the measure; the
            # time stops when the downloads are recorded, and the posters left are made after, untimed.
            posters = PosterQueue(media, on_offered=lambda: poster_worker.wake())
            poster_worker = Worker("posters", posters.run_once)
            workers.start_soon(poster_worker.run)
            at_once = spec.get("at_once", CONCURRENCY)  # every file comes from one origin: per_origin is the limit
            downloader = Downloader(
                store, http, media, allow_private=True, concurrency=at_once, per_origin=at_once, posters=posters
            )
            started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            while await downloader.run_once():
                pass
            seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
            await poster_worker.wait_idle()
            workers.cancel_scope.cancel()
        peak = peak_rss_mib(os.getpid())
        files = total = 0
        for job_id in job_ids:
            job = await store.get_job(job_id)
            assert job is not None
            for video in job.videos:
                if video.status is not VideoStatus.DOWNLOADED or video.path is None:
                    raise RuntimeError(f"{video.url}: {video.status} ({video.error})")
                if not (video.sha256 == expected[video.url] == file_sha256(Path(spec["media"]) / video.path)):
                    raise RuntimeError(f"{video.url}: the file at {video.path} does not match the source")
                files += 1
                total += video.bytes or 0
        if files != len(urls):
            raise RuntimeError(f"{len(urls)} URLs but {files} videos")
    finally:
        await store.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu_s": cpu, "peak_rss_mib": peak, "files": files, "bytes": total}


def worker_main(argv: Sequence[str]) -> None:
    if len(argv) != 2 or argv[0] != "--worker":
        sys.exit("usage: python -m bench.downloads --worker SPEC.json (bench/downloads.py writes the spec)")
    spec = json.loads(Path(argv[1]).read_text())
    print(json.dumps(asyncio.run(download(spec))), flush=True)


if __name__ == "__main__":
    worker_main(sys.argv[1:])
