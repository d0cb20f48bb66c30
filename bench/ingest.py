"""Callback ingest: how many provider callbacks reelhook stores durably and answers per second, at 1, 16 and 128
connections, as a ratio to a bare Starlette route served the same way (same uvicorn, loop and parser), with the
CPU that each request costs the server and the generator side by side.

The load generator is wrk (bench/wrk.py): it costs a small fraction of what the server spends per request, so the
ratio is the server's. Each callback is a distinct signed hook request for its own SUBMITTED job
(bench/callbacks.py), sent once. Where wrk is missing (`make bench` installs it with apt-get as root), the httpx
generator stands in and every row says "httpx (generator-limited)": it costs more per request than the bare route
does, so the bare rate, and with it the ratio, is then the generator's limit.

After each level the table says how long reelhook's background work (video failures, events) took to drain once
the senders stopped, and the rate it can keep up including that work ("sustained").
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from bench import wrk
from bench.bare import bare_server
from bench.callbacks import (
    BACKLOG_LIMIT,
    Level,
    answered_200,
    callback_requests,
    count_callbacks,
    cpu_seconds,
    load,
    prepare_jobs,
    server_env,
    wait_quiet,
    wait_ready,
)
from bench.common import Result, listening_socket, percentile, reelhook_server, url_of
from receiver.connections import ConnectionLimits, parser_of
from receiver.serving import loop_factory
from receiver.settings import Settings

HTTPX = "httpx (generator-limited)"


@dataclass(frozen=True)
class Pair:
    """reelhook and the bare route, each in its own process."""

    url: str
    bare_url: str
    pid: int
    bare_pid: int
    database: Path


def levels(quick: bool) -> list[Level]:
    """Per level: connections, warm-up callbacks, measured callbacks (each sent once)."""
    if quick:
        return [Level(1, 30, 200), Level(16, 60, 400), Level(128, 200, 600)]
    return [Level(1, 200, 1500), Level(16, 300, 3000), Level(128, 500, 3000)]


def bare_seconds(quick: bool) -> tuple[int, int]:
    """(warm-up, measured) seconds of wrk against the bare route at each level."""
    return (1, 3) if quick else (2, 10)


def run(workdir: Path, quick: bool) -> Result:
    plan, generator = levels(quick), "wrk" if wrk.available() else HTTPX
    data = workdir / "data"
    database = Settings(data_dir=data).database_path
    with closing(listening_socket()) as sock, closing(listening_socket()) as bare_sock:
        url, bare_url = url_of(sock), url_of(bare_sock)
        started = time.monotonic()
        jobs = anyio.run(prepare_jobs, database, sum(level.warmup + level.measured for level in plan))
        prepare_s = time.monotonic() - started
        if generator == HTTPX:
            print("   wrk is missing: the httpx generator stands in, and the ratios are its limit", flush=True)
        rows: list[dict[str, Any]] = []
        with (
            reelhook_server(server_env(data, url, max(level.senders for level in plan)), sock, workdir / "r.log") as s,
            bare_server(bare_sock, workdir / "bare.log") as bare,
        ):
            wait_ready(url, s, workdir / "r.log")
            wait_ready(bare_url, bare, workdir / "bare.log")
            remaining = iter(callback_requests(url, jobs))
            pair = Pair(url, bare_url, s.pid, bare.pid, database)
            for level in plan:
                lines = [next(remaining) for _ in range(level.warmup + level.measured)]
                measure = _measure_wrk if generator == "wrk" else _measure_httpx
                wait_quiet(database)
                ingest, bare_report, backlog_s = measure(workdir, pair, level, lines, quick)
                rows.append(row(level, generator, ingest, bare_report, backlog_s))
                print(f"   {level.senders:>3} connections: " + ", ".join(f"{k} {v}" for k, v in rows[-1].items()))
            stored = count_callbacks(database)
    sent = sum(level.warmup + level.measured for level in plan)
    headline: dict[str, Any] = {"generator": generator, "engine": engine()}
    for r in rows:
        n = r["conns"]
        headline |= {f"ratio_at_{n}": r["ingest/bare"], f"ingest_rps_at_{n}": r["ingest req/s"]}
        headline |= {f"ingest_p99_ms_at_{n}": r["ingest p99 ms"], f"sustained_rps_at_{n}": r["sustained req/s"]}
        headline |= {f"ingest_cpu_ms_at_{n}": r["ingest CPU ms"], f"all_cpu_ms_at_{n}": r["all CPU ms"]}
    headline |= {"callbacks_sent": sent, "callbacks_stored": stored, "prepare_s": round(prepare_s, 1)}
    return Result(
        name="ingest",
        title="Callback ingest: durably stored callbacks per second vs a bare Starlette route (same server settings)"
        + (", MEASURED WITH THE HTTPX GENERATOR: ratios are its limit (install wrk)" if generator == HTTPX else ""),
        rows=rows,
        headline=headline,
        method=method(plan, generator, quick, prepare_s, sent, stored),
    )


def engine() -> str:
    """The event loop and parser both servers run on: the same `reelhook serve` picks (receiver/serving.py)."""
    factory = loop_factory()
    loop = factory.__module__.partition(".")[0] if factory else "asyncio"
    return f"{loop} + {parser_of(ConnectionLimits().protocol())}"


def _measure_wrk(
    workdir: Path, pair: Pair, level: Level, lines: Sequence[tuple[str, str]], quick: bool
) -> tuple[dict[str, Any], dict[str, Any], float | None]:
    warm = wrk.write_lines(workdir / f"warm-{level.senders}.txt", list(lines[: level.warmup]))
    measured = wrk.write_lines(workdir / f"callbacks-{level.senders}.txt", list(lines[level.warmup :]))
    conns, cap = level.senders, 600  # wrk's -d is only an upper bound in "once" mode
    url, pid = pair.url, pair.pid
    all_cpu = cpu_seconds(pid)
    warm_report = wrk.load(url, warm, connections=conns, seconds=cap, mode="once", workdir=workdir)
    cpu = cpu_seconds(pid)
    ingest = wrk.load(url, measured, connections=conns, seconds=cap, mode="once", workdir=workdir)
    ingest["server_cpu_s"] = cpu_seconds(pid) - cpu
    backlog_s = wait_quiet(pair.database)
    ingest["all_cpu_s"] = cpu_seconds(pid) - all_cpu
    ingest["sent"] = warm_report["requests"] + ingest["requests"]
    ingest["busy_s"] = warm_report["elapsed_s"] + ingest["elapsed_s"]
    ingest["failed"] = wrk.failed(warm_report) + wrk.failed(ingest)
    warm_s, bare_s = bare_seconds(quick)
    wrk.load(pair.bare_url, measured, connections=conns, seconds=warm_s, mode="cycle", workdir=workdir)
    cpu = cpu_seconds(pair.bare_pid)
    bare = wrk.load(pair.bare_url, measured, connections=conns, seconds=bare_s, mode="cycle", workdir=workdir)
    bare["server_cpu_s"] = cpu_seconds(pair.bare_pid) - cpu
    bare["failed"] = wrk.failed(bare)
    return ingest, bare, backlog_s


def _measure_httpx(
    workdir: Path, pair: Pair, level: Level, lines: Sequence[tuple[str, str]], quick: bool
) -> tuple[dict[str, Any], dict[str, Any], float | None]:
    file = workdir / f"requests-{level.senders}.jsonl"
    file.write_text("".join(json.dumps({"path": path, "body": body}) + "\n" for path, body in lines))
    cpu = cpu_seconds(pair.pid)
    ingest = _flatten(load(pair.url, file, level, workdir / f"ingest-{level.senders}.json"))
    ingest["server_cpu_s"] = None  # with httpx, warm-up and measured are one run: only the total is known
    backlog_s = wait_quiet(pair.database)
    ingest["all_cpu_s"] = cpu_seconds(pair.pid) - cpu
    cpu = cpu_seconds(pair.bare_pid)
    bare = _flatten(load(pair.bare_url, file, level, workdir / f"bare-{level.senders}.json"))
    bare["server_cpu_s"] = cpu_seconds(pair.bare_pid) - cpu
    return ingest, bare, backlog_s


def _flatten(report: dict[str, Any]) -> dict[str, Any]:
    """A bench/loadgen.py report in bench/wrk.py's shape (sent, failed and busy_s including the warm-up)."""
    sent = int(report["requests"] + report["warmup"]["requests"])
    return {
        "requests": report["requests"],
        "elapsed_s": report["elapsed_s"],
        "p50_ms": percentile(report["latencies_ms"], 50),
        "p99_ms": percentile(report["latencies_ms"], 99),
        "generator_cpu_s": report["cpu_s"],  # the measured phase's, as wrk's covers its own run
        "sent": sent,
        "busy_s": report["warmup"]["elapsed_s"] + report["elapsed_s"],
        "failed": sent - answered_200(report),
    }


def row(
    level: Level, generator: str, ingest: dict[str, Any], bare: dict[str, Any], backlog_s: float | None
) -> dict[str, Any]:
    def rate(report: dict[str, Any]) -> float:
        return report["requests"] / report["elapsed_s"] if report["elapsed_s"] else 0.0

    def ms(seconds: float | None, count: int) -> float | None:
        return None if seconds is None or not count else round(seconds * 1000 / count, 3)

    ingest_rate, bare_rate = rate(ingest), rate(bare)
    bare_cpu, gen_cpu = ms(bare["server_cpu_s"], bare["requests"]), ms(bare["generator_cpu_s"], bare["requests"])
    # Everything the callbacks caused, acknowledged and done in the background, from first request to quiet.
    busy_s = ingest["busy_s"] + (backlog_s or 0.0)
    return {
        "conns": level.senders,
        "callbacks": ingest["requests"],
        "ingest req/s": round(ingest_rate, 1),
        "bare req/s": round(bare_rate, 1),
        "ingest/bare": round(ingest_rate / bare_rate, 3) if bare_rate else None,
        "ingest p50 ms": round(ingest["p50_ms"], 2),
        "ingest p99 ms": round(ingest["p99_ms"], 2),
        "bare p50 ms": round(bare["p50_ms"], 2),
        "bare p99 ms": round(bare["p99_ms"], 2),
        "errors": ingest["failed"],
        "bare errors": bare["failed"],
        "backlog s": None if backlog_s is None else round(backlog_s, 1),
        "sustained req/s": round(ingest["sent"] / busy_s, 1) if backlog_s is not None else None,
        "ingest CPU ms": ms(ingest["server_cpu_s"], ingest["requests"]),
        "all CPU ms": ms(ingest["all_cpu_s"], ingest["sent"]),
        "bare CPU ms": bare_cpu,
        "gen CPU ms (ingest)": ms(ingest["generator_cpu_s"], ingest["requests"]),
        "gen CPU ms (bare)": gen_cpu,
        "gen/bare CPU": round(gen_cpu / bare_cpu, 2) if gen_cpu and bare_cpu else None,
        "generator": generator,
    }


def method(plan: Sequence[Level], generator: str, quick: bool, prepare_s: float, sent: int, stored: int) -> str:
    counts = "; ".join(f"{level.senders}: {level.warmup} warm-up + {level.measured} measured" for level in plan)
    warm_s, bare_s = bare_seconds(quick)
    if generator == "wrk":
        load_text = (
            "Load: wrk (Debian's package; bench/wrk.py), one thread, N keep-alive connections, each sending its next"
            " request as soon as the last is answered. A Lua script hands out requests written beforehand, each"
            " line once: when they run out a connection gets GET /healthz until the last callback is answered, and"
            " the rate is the answers over the script's window, first request to last answer. The bare route gets"
            f" the same requests round and round, {warm_s} s warm-up then {bare_s} s measured."
        )
    else:
        load_text = (
            "Load: wrk was not installed, so the httpx generator (bench/loadgen.py) sent them, N workers each with its"
            " keep-alive connection, closed loop. It costs more CPU per request than the bare route does ('gen/bare"
            " CPU' > 1), so the bare rate and the ratio are the GENERATOR's limit, not the server's."
        )
    return (
        "reelhook (`reelhook serve --fd`; SQLite in WAL, synchronous=FULL, on the local disk) and a bare Starlette"
        " route (`bench/bare.py`: reads the body, answers 200, stores nothing) each run in their own process,"
        f" served by `receiver.serving` the same way: {engine()}. Before reelhook starts, {sent} TTAPI jobs are"
        f" created through `Store` and marked SUBMITTED ({prepare_s:.0f} s). Every callback is a TTAPI SUCCESS"
        " callback in the seed's shape, with 4 video URLs on 127.0.0.1:9 (refused at once:"
        " REELHOOK_ALLOW_PRIVATE_URLS=0), to `/hooks/ttapi/{token}` of its own job with a valid token, sent once."
        f" Callbacks per level (connections: count): {counts}. {load_text} Latency is send to full response, timed"
        " by the generator. CPU columns are ms per request: 'ingest CPU' is reelhook's process (all threads, /proc)"
        " over the measured run only (the background work running meanwhile included); 'all CPU' is over warm-up,"
        " measured run and the backlog's drain, per callback, i.e. everything a callback sets off; 'bare CPU' is"
        " the bare route's; 'gen CPU' is the generator's own (rusage of its process). 'gen/bare CPU' near or above"
        " 1 would mean the bare rate is the generator's limit. 'backlog s' is how long the background work took to"
        f" drain after the senders stopped (blank: not within {BACKLOG_LIMIT:.0f} s); 'sustained req/s' is the"
        " callbacks sent over the time from the first request to quiet. 'errors' counts answers of 400 and above"
        f" and failed requests. {stored} callbacks were stored of {sent} sent. The 2 cores are shared by the server"
        " under test and the generator (the idle server of the pair uses none)."
    )
