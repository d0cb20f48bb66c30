"""Issue 12: three `reelhook serve` processes on one PostgreSQL and one bucket keep every promise of one.

The pieces are real and each runs as it would in production: three instances (each its own process and data dir)
on one PostgreSQL and one SeaweedFS bucket, one simulator process per provider that all of them call as they would
call the real provider (so it sees the total in flight and every submission), and a load balancer in front
(tests/e2e/balancer.py) that sends each request to a random instance and each callback to two at once. A rules
file makes chains (generate, then extend, then extend again). Mid-work, while jobs are in flight and files are
downloading, one instance is SIGKILLed and started again.

When everything has settled, the promises are checked where they show (tests/e2e/promises.py): at the simulators
(never more than the limit in flight, no job sent twice, no file fetched twice but the killed instance's), in the
bucket (every file once, with the sha256 the database records), in the database (every rule's follow-up exactly
once per source, nothing left queued, unclaimed or pending). Every broken promise is collected and named, so a
failure says all that went wrong at once.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from receiver.serving import bind_socket, running, socket_url
from tests.e2e.balancer import Balancer
from tests.e2e.conftest import API_TOKEN, NOTIFY_SECRET, SECRET, TT_KEY, server
from tests.e2e.promises import ENDED, Promises, count_unfinished, database_rows, in_the_bucket, in_the_queues
from tests.postgres import PostgresServer
from tests.seaweed import S3Server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(150)]  # SETTLE_TIMEOUT and the servers' start

INSTANCES = 3
PROVIDERS = ("ttapi", "acedata")  # the two that extend, so rules can make chains on both
ROOTS = 4  # jobs submitted per provider, at once; each grows a chain of three
LIMIT = 2  # REELHOOK_<PROVIDER>_MAX_IN_FLIGHT; the simulators themselves would take 50
SIM_DELAY = 0.3  # seconds a simulated job takes
# Seconds for everything to settle after the restart (about 10 are needed). The restarted instance takes back what it
# had claimed at once (its claimant name); waiting out the leases instead (downloads 60 s, events 120 s) fails this.
SETTLE_TIMEOUT = 60.0
RULES = """
[limits]
max_depth = 2

[[rule]]
name = "extend-first"
on = "job.succeeded"
when.action = "generate"
extend.index = 0

[[rule]]
name = "extend-again"
on = "job.succeeded"
when.action = "extend"
extend.index = 1
"""
PROMISES = Promises(limit=LIMIT, roots=ROOTS * len(PROVIDERS), follows={0: "extend-first", 1: "extend-again"})
IMAGE = "https://img.example/frame.png"  # the providers are simulated: nobody fetches it


async def test_three_instances_one_killed_mid_work_keep_every_promise(
    tmp_path: Path, postgres_server: PostgresServer, s3_server: S3Server
) -> None:
    database = postgres_server.new_database(migrated=False)  # the instances migrate it, all at once
    database_url = postgres_server.url(database)
    media_url = s3_server.fresh_url()
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    instance_socks = [bind_socket() for _ in range(INSTANCES)]
    instance_urls = [socket_url(sock) for sock in instance_socks]
    balancer = Balancer(instance_urls)
    try:
        with ExitStack() as processes:
            sims = {name: processes.enter_context(simulator(name, tmp_path)) for name in PROVIDERS}
            async with AsyncExitStack() as stack:
                public_url = await stack.enter_async_context(running(balancer.app))
                env = instance_env(database_url, s3_server.env(media_url), public_url, sims, rules)
                started = [
                    processes.enter_context(instance(env, i, sock, tmp_path)) for i, sock in enumerate(instance_socks)
                ]
                http = await stack.enter_async_context(
                    httpx.AsyncClient(headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)
                )
                for url in instance_urls:
                    await wait_for(lambda url=url: healthy(http, url), 60, f"instance {url} to answer /healthz")

                async with anyio.create_task_group() as tg:  # all at once, as a studio's scripts would
                    for provider, n in itertools.product(PROVIDERS, range(ROOTS)):
                        tg.start_soon(submit, http, public_url, provider, n)

                # Mid-work: jobs are in flight at the provider and files are downloading. The victim is the instance
                # the latest callback went to: it has a download to do, or is doing it.
                await wait_for(lambda: downloading(http, sims), 30, "a first download to start")
                hooked = [target for target, path in balancer.forwarded if path.startswith("/hooks/")]
                victim = instance_urls.index(hooked[-1])
                started[victim].send_signal(signal.SIGKILL)
                started[victim].wait()
                # Started again on the same socket (what waited in its backlog meanwhile is served) and data dir.
                processes.enter_context(instance(env, victim, instance_socks[victim], tmp_path))

                settled = await settle(http, instance_urls, sims, database_url)
                observed = {name: (await http.get(f"{url}/_simulator/observed")).json() for name, url in sims.items()}
                problems = (
                    [] if settled else [f"not settled within {SETTLE_TIMEOUT} s: {await unsettled(database_url)}"]
                )
                problems += PROMISES.at_the_provider(observed)
                jobs, videos = await database_rows(database_url)
                problems += PROMISES.of_the_rules(jobs, observed)
                problems += await in_the_bucket(s3_server, media_url, jobs, videos)
                problems += await in_the_queues(database_url)
        if problems:
            logs = ", ".join(str(tmp_path / f"instance-{i}.log") for i in range(INSTANCES))
            broken = "\n".join(f"- {problem}" for problem in problems)
            pytest.fail(f"{len(problems)} promise(s) broken (instance logs: {logs}):\n{broken}", pytrace=False)
    finally:
        for sock in instance_socks:
            sock.close()
        postgres_server.drop_database(database)


# -- the processes ------------------------------------------------------------------------------------------------


@contextmanager
def simulator(provider: str, tmp_path: Path) -> Iterator[str]:
    """`python -m submitter.simulators PROVIDER` in its own process, on a socket bound here; yields its URL."""
    sock = bind_socket()
    url = socket_url(sock)
    with sock, open(tmp_path / f"simulator-{provider}.log", "ab") as out:
        command = [
            sys.executable, "-m", "submitter.simulators", provider, "--fd", str(sock.fileno()),
            "--api-key", TT_KEY, "--delay", str(SIM_DELAY), "--max-in-flight", "50", "--videos-per-job", "2",
        ]  # fmt: skip
        process = subprocess.Popen(command, pass_fds=[sock.fileno()], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield url  # the process holds the socket now
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def instance(
    env: dict[str, str], number: int, sock: socket.socket, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    data_dir = tmp_path / f"instance-{number}"
    with server(env | {"REELHOOK_DATA_DIR": str(data_dir)}, sock.fileno(), tmp_path / f"instance-{number}.log") as p:
        yield p


def instance_env(
    database_url: str,
    s3_env: dict[str, str],
    public_url: str,
    sims: dict[str, str],
    rules: Path,
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REELHOOK_DATABASE_URL": database_url,
        "REELHOOK_PUBLIC_URL": public_url,  # the balancer: callbacks land on a random instance, or two
        "REELHOOK_SECRET": SECRET,
        "REELHOOK_API_TOKEN": API_TOKEN,
        "REELHOOK_NOTIFY_SECRET": NOTIFY_SECRET,
        "REELHOOK_RULES": str(rules),
        "REELHOOK_ALLOW_PRIVATE_URLS": "1",  # the simulators' CDN is on loopback
        **s3_env,
    }
    for name, url in sims.items():
        prefix = f"REELHOOK_{name.upper()}"
        env |= {
            f"{prefix}_API_KEY": TT_KEY,  # a key: the instances treat the simulator as the real provider
            f"{prefix}_BASE_URL": url,
            f"{prefix}_MAX_IN_FLIGHT": str(LIMIT),
            # A job whose instance died after claiming it is "outcome unknown": looked up soon, given up on soon.
            f"{prefix}_CALLBACK_GRACE": "3",
            f"{prefix}_GIVE_UP_AFTER": "20",
        }
    return env


async def submit(http: httpx.AsyncClient, public_url: str, provider: str, n: int) -> None:
    body = {"provider": provider, "prompt": f"{provider} take {n}", "image_url": IMAGE}
    created = await http.post(f"{public_url}/api/jobs", json=body)
    assert created.status_code == 201, created.text


# -- waiting ------------------------------------------------------------------------------------------------------


async def wait_for(condition: Any, timeout: float, what: str) -> None:
    """Poll another process's observable state until `condition()`; another process offers no event to await."""
    with anyio.move_on_after(timeout) as scope:
        while not await condition():
            await anyio.sleep(0.1)
    if scope.cancelled_caught:
        pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)


async def healthy(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(f"{url}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def downloading(http: httpx.AsyncClient, sims: dict[str, str]) -> bool:
    for url in sims.values():
        if (await http.get(f"{url}/_simulator/observed")).json()["cdn_hits"]:
            return True
    return False


async def settle(http: httpx.AsyncClient, instances: list[str], sims: dict[str, str], database_url: str) -> bool:
    """Until every instance's API says nothing is queued, in flight or downloading, no event waits, every chain is
    complete and the simulators are idle: True; False at SETTLE_TIMEOUT (the checks then say what is wrong)."""
    turn = itertools.cycle(instances)
    with anyio.move_on_after(SETTLE_TIMEOUT):
        while True:
            try:
                status = (await http.get(f"{next(turn)}/api/status")).json()
                idle = all([(await http.get(f"{url}/_simulator/observed")).json()["idle"] for url in sims.values()])
            except httpx.HTTPError:  # the restarted instance is not up yet
                status, idle = None, False
            if status is not None and idle and quiet(status) and not await unsettled(database_url):
                return True
            await anyio.sleep(0.2)
    return False


def quiet(status: dict[str, Any]) -> bool:
    busy = ("in_flight", "queued", "downloads_pending")
    providers = status["providers"]
    return not status["notifications_pending"] and not any(p.get(key) for p in providers for key in busy)


async def unsettled(database_url: str) -> dict[str, int]:
    """What is still to do, read from the database: work not finished, and chains not yet followed up."""
    jobs, videos = await database_rows(database_url)
    open_jobs = [job for job in jobs if job["status"] not in ENDED]
    pending_videos = [video for video in videos if video["status"] not in ("downloaded", "failed")]
    missing = PROMISES.missing_followups(jobs)
    counts = await count_unfinished(database_url)
    found = {"jobs not ended": len(open_jobs), "downloads not done": len(pending_videos), **counts}
    found["follow-ups missing"] = len(missing)
    return {name: count for name, count in found.items() if count}
