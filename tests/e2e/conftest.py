"""Whole-flow fixtures: the TTAPI simulator and reelhook, each on real uvicorn on 127.0.0.1, talking real HTTP."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from receiver.app import create_app
from receiver.rules import RuleSet
from receiver.serving import bind_socket, running, socket_url
from receiver.settings import ProviderSettings, Secret, Settings
from submitter.simulators import media_bytes
from submitter.simulators.base import Simulator
from submitter.simulators.registry import SIMULATORS
from submitter.simulators.ttapi import TTAPISimulator

NOTIFY_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes
API_TOKEN = "e2e-api-token"
TT_KEY = "e2e-ttapi-key"
SECRET = "e2e-secret-0123456789abcdef"


@dataclass
class Deployment:
    sim: TTAPISimulator
    sim_url: str
    url: str
    api: httpx.AsyncClient
    data_dir: Path
    sims: dict[str, Simulator]

    async def submit(self, prompt: str = "a lighthouse at dusk", **extra: Any) -> dict[str, Any]:
        body = {"provider": "ttapi", "prompt": prompt, "image_url": "https://img.example/frame.png", **extra}
        response = await self.api.post("/api/jobs", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def jobs(self) -> list[dict[str, Any]]:
        return list((await self.api.get("/api/jobs", params={"limit": 500})).json()["jobs"])

    def extends(self) -> list[dict[str, Any]]:
        return [s.body for s in self.sim.submissions if s.path.endswith("/extend") and s.status_code == 200]


async def wait_until(condition: Callable[[], Awaitable[bool]], *, timeout: float = 15.0) -> None:
    """Wait for an observable outcome (never for a fixed time)."""
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(0.02)


def settings_for(data_dir: Path, public_url: str, sim_urls: dict[str, str], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "public_url": public_url,
        "secrets": (Secret(SECRET),),
        "api_token": Secret(API_TOKEN),
        "notify_secret": Secret(NOTIFY_SECRET),
        "providers": {name: ProviderSettings(Secret(TT_KEY), url) for name, url in sim_urls.items()},
    }
    return Settings(**(values | overrides))


@asynccontextmanager
async def deployment(
    tmp_path: Path,
    *,
    rules: str = "",
    options: dict[str, dict[str, Any]] | None = None,
    trusted: tuple[str, ...] = (),
    callback_grace: float | None = None,
    provider_settings: dict[str, Any] | None = None,
    **ttapi_options: Any,
) -> AsyncIterator[Deployment]:
    """reelhook on real uvicorn with every provider's simulator beside it (each on its own port, key TT_KEY).

    `ttapi_options` configure the TTAPI simulator; `options` the others, by provider name. `callback_grace` sets
    every provider's REELHOOK_<PROVIDER>_CALLBACK_GRACE (how late a callback may be before it is looked up), and
    `provider_settings` any other ProviderSettings field of every provider (give_up_after, max_in_flight, ...).
    """
    per_provider = {name: {"delay": 0.02} for name in SIMULATORS} | {"ttapi": {"delay": 0.02} | ttapi_options}
    for name, extra in (options or {}).items():
        per_provider[name] = per_provider[name] | extra
    sims = {name: SIMULATORS[name](api_key=TT_KEY, **per_provider[name]) for name in SIMULATORS}
    async with AsyncExitStack() as stack:
        sim_urls = {name: await stack.enter_async_context(running(sim.app)) for name, sim in sims.items()}
        sock = bind_socket()
        stack.callback(sock.close)  # running() closes it too; this covers a create_app that raises
        url = socket_url(sock)
        settings = settings_for(tmp_path / "data", url, sim_urls)
        overrides = (provider_settings or {}) | ({} if callback_grace is None else {"callback_grace": callback_grace})
        if overrides:
            providers = {name: replace(p, **overrides) for name, p in settings.providers.items()}
            settings = replace(settings, providers=providers)
        app = create_app(settings, rules=RuleSet.parse(rules), trusted_origins={*sim_urls.values(), *trusted})
        await stack.enter_async_context(running(app, sock))
        api = await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"})
        )
        yield Deployment(sims["ttapi"], sim_urls["ttapi"], url, api, settings.data_dir, sims)  # type: ignore[arg-type]


def expected_sha256(provider_job_id: str, index: int, ext: str = "mp4") -> str:
    return hashlib.sha256(media_bytes(provider_job_id, index, ext)).hexdigest()


def assert_videos_on_disk(job: dict[str, Any], data_dir: Path) -> None:
    """Every file downloaded, at its place under media/, with exactly the bytes the simulator's CDN served."""
    assert job["videos"], job
    for video in job["videos"]:
        path = data_dir.resolve() / "media" / video["key"]
        ext = path.suffix.lstrip(".")
        assert video["status"] == "downloaded", video
        assert video["key"] == f"{job['root_id']}/{job['id']}/{video['index']}.{ext}"
        content = path.read_bytes()
        # The simulators write the id of the job into each file, so the bytes prove whose file it is.
        cdn_id = video["url"].split("/cdn/", 1)[1].split("/", 1)[0]
        assert job["provider_job_id"].endswith(cdn_id)  # APIMart prefixes its task ids with task_
        assert hashlib.sha256(content).hexdigest() == video["sha256"] == expected_sha256(cdn_id, video["index"], ext)
        assert video["bytes"] == len(content)
        assert content[4:8] == b"ftyp" if ext == "mp4" else content.startswith(b"\x89PNG")


@contextmanager
def server(env: dict[str, str], sock_fd: int, log: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`reelhook serve` in its own process, on a socket the test bound (so restarts keep the address)."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "receiver.cli", "serve", "--fd", str(sock_fd)],
            env=env,
            pass_fds=[sock_fd],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    listening = bind_socket()
    yield listening
    listening.close()
