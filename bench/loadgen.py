"""`python -m bench.loadgen URL REQUESTS --concurrency N [--warmup K] [--duration S] [--out FILE]`: an HTTP load
generator, meant to run in its own process beside the server it measures.

REQUESTS is a JSON-lines file, one request per line: `{"path": "/hooks/…", "body": "<text>"}` (POSTed as
application/json). N workers share one httpx client with N keep-alive connections; each worker takes the next line
and sends it as soon as its previous request is answered (a closed loop), so at most N requests are in flight. The
first K lines warm up (connections opened, code paths hot) and are not measured; the rest are sent until the file
ends or S seconds have passed. The report is JSON: the measured requests' latencies in ms (send to full response),
how many got each status (0: the request failed), and the measured phase's wall time and the generator's own CPU
time in it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

HEADERS = {"content-type": "application/json"}


def read_requests(path: Path) -> list[tuple[str, bytes]]:
    lines = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [(line["path"], line["body"].encode()) for line in lines]


async def send_all(
    clients: Sequence[httpx.AsyncClient], requests: Sequence[tuple[str, bytes]], duration: float | None
) -> tuple[list[float], Counter[int], float]:
    """Send `requests` from `concurrency` workers; (latencies in ms, count per status, wall seconds)."""
    pending: Iterator[tuple[str, bytes]] = iter(requests)  # shared: each worker takes the next request
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    deadline = started + duration if duration else float("inf")

    async def worker(client: httpx.AsyncClient) -> None:
        for path, body in pending:
            if time.perf_counter() >= deadline:
                return
            sent = time.perf_counter()
            try:
                response = await client.post(path, content=body, headers=HEADERS)
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            latencies.append((time.perf_counter() - sent) * 1000)
            statuses[status] += 1

    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(worker, client)
    return latencies, statuses, time.perf_counter() - started


async def generate(
    url: str, requests: Sequence[tuple[str, bytes]], *, concurrency: int, warmup: int, duration: float | None
) -> dict[str, Any]:
    # A client per worker, each with one connection: one shared pool of N connections costs the generator time
    # that grows with N on every request (httpcore scans its pool), which at 128 made it the bottleneck.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, limits=limits, timeout=60))
            for _ in range(concurrency)
        ]
        _, warm_statuses, warm_elapsed = await send_all(clients, requests[:warmup], None)
        cpu = time.process_time()
        latencies, statuses, elapsed = await send_all(clients, requests[warmup:], duration)
        cpu = time.process_time() - cpu
    return {
        "url": url,
        "concurrency": concurrency,
        "warmup": {
            "requests": sum(warm_statuses.values()),
            "elapsed_s": warm_elapsed,
            "statuses": _keyed(warm_statuses),
        },
        "requests": len(latencies),
        "elapsed_s": elapsed,
        "cpu_s": cpu,  # the generator's own CPU time in the measured phase
        "statuses": _keyed(statuses),
        "latencies_ms": latencies,
    }


def _keyed(statuses: Counter[int]) -> dict[str, int]:
    return {str(status): count for status, count in sorted(statuses.items())}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("requests", type=Path, help="JSON lines: {path, body}")
    parser.add_argument("--concurrency", type=int, default=1, help="workers, each with its own connection")
    parser.add_argument("--warmup", type=int, default=0, help="requests sent first and not measured")
    parser.add_argument("--duration", type=float, help="stop measuring after this many seconds")
    parser.add_argument("--out", type=Path, help="write the JSON report here (default: stdout)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    requests = read_requests(args.requests)
    report = anyio.run(
        lambda: generate(args.url, requests, concurrency=args.concurrency, warmup=args.warmup, duration=args.duration)
    )
    text = json.dumps(report)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
