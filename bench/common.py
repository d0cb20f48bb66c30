"""What every benchmark shares: the result shape, percentiles, process memory, and a reelhook server process."""

from __future__ import annotations

import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    """One benchmark's report: a markdown table's rows, the headline numbers, and how it was measured."""

    name: str
    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    headline: dict[str, Any] = field(default_factory=dict)
    method: str = ""


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation; 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * p / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else 0.0


def peak_rss_mib(pid: int) -> float:
    """A live process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    memory = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory) / 1024 / 1024, 1),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


@contextmanager
def module_server(
    module: Sequence[str], sock: socket.socket, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m <module...> --fd N` in its own process on `sock` (so a load generator never shares its CPU time),
    stopped (SIGTERM, then SIGKILL) when the block ends."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *module, "--fd", str(sock.fileno())],
            env={"PATH": os.environ.get("PATH", ""), **(env or {})},
            pass_fds=[sock.fileno()],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def reelhook_server(env: Mapping[str, str], sock: socket.socket, log: Path) -> Any:
    """`reelhook serve` in its own process on `sock`."""
    return module_server(["receiver.cli", "serve"], sock, log, env)


PENDING_SQL = (
    "SELECT count(*) FROM videos WHERE status = 'pending'",
    "SELECT count(*) FROM events WHERE processed_at IS NULL",
    "SELECT count(*) FROM jobs WHERE status = 'queued'",
)


def pending_work(database: Path | str) -> int:
    """Videos still pending, events not yet processed and jobs not yet sent: reelhook's background backlog."""
    return sum(counts(database, PENDING_SQL))


def counts(database: Path | str, queries: Sequence[str]) -> list[int]:
    """Each `SELECT count(*)` query's answer, in the SQLite file at `database` or the PostgreSQL database at a
    `postgresql://` URL (the benchmarks' queries are the same SQL on both)."""
    if isinstance(database, str):
        import psycopg  # only the PostgreSQL benchmarks need it

        with psycopg.connect(database, autocommit=True) as conn:
            return [int(conn.execute(sql.encode()).fetchone()[0]) for sql in queries]  # type: ignore[index]
    with closing(sqlite3.connect(database, timeout=10, isolation_level=None)) as db:
        return [int(db.execute(sql).fetchone()[0]) for sql in queries]
