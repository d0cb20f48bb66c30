"""Callbacks under hostile connections: a legitimate provider's p99 with slow clients pushing every limit, over
the same run without them (a ratio, reported, not asserted).

The hostile mix runs for the whole measured run, each connection reopened as soon as the server closes it:
leaked tokens dribbling bodies at one byte a second (twice each job's share of callback slots per token), forged
tokens doing the same, heads dripped a byte a second, enough of all of them to keep the open-connection cap full,
and replay storms: a finished job's callback padded to 512 KiB, sent again as fast as the server answers (the
database's growth over the attacked run is reported: re-deliveries are counted, not stored). reelhook runs with its
default deadlines and limits, so each hostile connection lasts as long as they allow.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio

from bench.callbacks import (
    API_TOKEN,
    NOWHERE,
    SECRET,
    TT_KEY,
    Level,
    answered_200,
    load,
    prepare_jobs,
    wait_quiet,
    wait_ready,
    write_requests,
)
from bench.common import Result, listening_socket, percentile, reelhook_server, url_of
from receiver.settings import SEVEN_DAYS, Settings
from submitter.tokens import HookSigner

LEAKED_TOKENS = 4
PER_JOB = 8  # REELHOOK_MAX_HOOK_REQUESTS_PER_JOB's default
MAX_CONNECTIONS = 512  # REELHOOK_MAX_CONNECTIONS's default
FORGED = 100
DRIPS = MAX_CONNECTIONS  # with the others, more than the cap: the server evicts all the time
REPLAYERS = 4  # connections replaying one finished job's padded callback back to back
REPLAY_PAD = 512 * 1024


def run(workdir: Path, quick: bool) -> Result:
    level = Level(16, 50, 500) if quick else Level(16, 200, 3000)
    data = workdir / "data"
    database = Settings(data_dir=data).database_path
    with closing(listening_socket()) as sock:
        url = url_of(sock)
        jobs = anyio.run(prepare_jobs, database, 2 * (level.warmup + level.measured) + LEAKED_TOKENS)
        leaked, legit = jobs[:LEAKED_TOKENS], jobs[LEAKED_TOKENS:]
        files = write_requests(workdir, url, legit, [level, level])
        signer = HookSigner([SECRET], max_age=SEVEN_DAYS)
        tokens = [signer.sign_hook_token(job_id, "ttapi") for job_id, _ in leaked]
        replay = json.loads(files[0].read_text().splitlines()[0])  # a legitimate callback, finished in the calm run
        padded = json.loads(replay["body"]) | {"pad": "x" * REPLAY_PAD}
        replay_request = (
            f"POST {replay['path']} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(json.dumps(padded))}\r\n\r\n"
            + json.dumps(padded)
        ).encode()
        env = {
            "REELHOOK_DATA_DIR": str(data),
            "REELHOOK_SECRET": SECRET,
            "REELHOOK_API_TOKEN": API_TOKEN,
            "REELHOOK_TTAPI_API_KEY": TT_KEY,
            "REELHOOK_TTAPI_BASE_URL": NOWHERE,
            "REELHOOK_PUBLIC_URL": url,
        }
        with reelhook_server(env, sock, workdir / "reelhook.log") as server:
            wait_ready(url, server, workdir / "reelhook.log")
            wait_quiet(database)
            calm = load(url, files[0], level, workdir / "calm.json")
            wait_quiet(database)
            size_before = _database_bytes(database)
            mix = Hostile(sock.getsockname()[:2], tokens, replay_request)
            mix.start()
            try:
                attacked = load(url, files[1], level, workdir / "attacked.json")
            finally:
                seen = mix.stop()
            wait_quiet(database)
            grown_mib = (_database_bytes(database) - size_before) / 2**20
    calm_p99 = percentile(calm["latencies_ms"], 99)
    attacked_p99 = percentile(attacked["latencies_ms"], 99)
    rows: list[dict[str, Any]] = [
        _row("without hostile connections", calm, {}),
        _row("with hostile connections", attacked, seen),
    ]
    ratio = round(attacked_p99 / calm_p99, 2) if calm_p99 else None
    return Result(
        name="hostile",
        title="Legitimate callbacks under slow and hostile connections (p99 with them / without)",
        rows=rows,
        headline={
            "p99_ratio": ratio,
            "calm_p99_ms": round(calm_p99, 2),
            "attacked_p99_ms": round(attacked_p99, 2),
            "replays_answered": seen.get("replay 200", 0),
            "database_growth_mib_under_attack": round(grown_mib, 1),
        },
        method=(
            f"`reelhook serve` with default limits; {level.senders} legitimate senders (bench/loadgen.py, closed"
            f" loop, keep-alive), {level.warmup} warm-up + {level.measured} measured TTAPI callbacks, each for its"
            f" own job, first alone, then while a thread in the bench process keeps open: {LEAKED_TOKENS} leaked"
            f" tokens x {2 * PER_JOB} connections dribbling a body at 1 byte/s, {FORGED} forged-token connections"
            f" doing the same, {DRIPS} connections dripping a head at 1 byte/s, and {REPLAYERS} connections"
            f" replaying one finished job's callback padded to {REPLAY_PAD // 1024} KiB back to back; each reopened"
            " as soon as the server closes it. 'hostile opened' and 'hostile answers' count what the hostile clients"
            " saw; the database's growth is measured over the attacked run (the legitimate callbacks included)."
        ),
    )


def _row(name: str, report: dict[str, Any], seen: dict[str, int]) -> dict[str, Any]:
    sent = report["requests"] + report["warmup"]["requests"]
    return {
        "run": name,
        "requests": report["requests"],
        "p50 ms": round(percentile(report["latencies_ms"], 50), 2),
        "p99 ms": round(percentile(report["latencies_ms"], 99), 2),
        "max ms": round(max(report["latencies_ms"], default=0.0), 2),
        "non-200": sent - answered_200(report),
        "hostile opened": seen.get("opened", 0),
        "hostile answers": ", ".join(f"{k}: {v}" for k, v in sorted(seen.items()) if k != "opened") or "-",
    }


class Hostile:
    """The hostile mix, in a thread with its own event loop until `stop()`."""

    def __init__(self, address: tuple[str, int], tokens: list[str], replay: bytes) -> None:
        self.host, self.port = address
        self.tokens = tokens
        self.replay = replay
        self.seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=anyio.run, args=(self._main,), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(timeout=30)
        return dict(self.seen)

    async def _main(self) -> None:
        body_head = "POST /hooks/ttapi/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
        async with anyio.create_task_group() as tg:
            for token in self.tokens:
                for _ in range(2 * PER_JOB):
                    tg.start_soon(self._keep, body_head.format(token).encode(), b"x" * 100_000)
            for i in range(FORGED):
                tg.start_soon(self._keep, body_head.format(f"forged-{i}").encode(), b"x" * 100_000)
            for _ in range(DRIPS):
                tg.start_soon(self._keep, b"", b"POST /hooks/ttapi/x HTTP/1.1\r\n" + b"X-Drip: " + b"x" * 100_000)
            for _ in range(REPLAYERS):
                tg.start_soon(self._replay)
            while not self._stop.is_set():
                await anyio.sleep(0.1)
            tg.cancel_scope.cancel()

    async def _keep(self, head: bytes, drip: bytes) -> None:
        """One hostile connection after another: send `head`, then `drip` a byte a second until closed."""
        while True:
            try:
                async with await anyio.connect_tcp(self.host, self.port) as stream:
                    self.seen["opened"] += 1
                    async with anyio.create_task_group() as tg:

                        async def dribble() -> None:
                            try:
                                await stream.send(head) if head else None
                                for byte in drip:
                                    await anyio.sleep(1)
                                    await stream.send(bytes([byte]))
                            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                                pass

                        tg.start_soon(dribble)
                        answer = b""
                        try:
                            while True:
                                answer += await stream.receive()
                        except (OSError, anyio.EndOfStream, anyio.BrokenResourceError):
                            pass
                        status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
                        self.seen[status] += 1
                        tg.cancel_scope.cancel()
            except OSError:
                self.seen["connect failed"] += 1
            await anyio.sleep(0.05)

    async def _replay(self) -> None:
        """One finished job's callback, again and again, each as soon as the last was answered."""
        while True:
            try:
                async with await anyio.connect_tcp(self.host, self.port) as stream:
                    await stream.send(self.replay)
                    answer = b""
                    while b"\r\n\r\n" not in answer:
                        answer += await stream.receive()
                    status = answer.split(b" ", 2)[1].decode()
                    self.seen[f"replay {status}"] += 1
            except (OSError, anyio.EndOfStream, anyio.BrokenResourceError):
                self.seen["replay failed"] += 1
                await anyio.sleep(0.05)


def _database_bytes(database: Path) -> int:
    return sum(path.stat().st_size for path in database.parent.glob(database.name + "*"))
