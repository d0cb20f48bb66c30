"""Issue 11: REELHOOK_PUBLIC_URL=auto asks a local ngrok or cloudflared agent for the tunnel's URL as paid jobs leave.

The agents are fakes on real uvicorn on 127.0.0.1, answering what the real ones answer: ngrok's agent API
(`/api/endpoints`, and `/api/tunnels` of older agents, shaped as in ngrok's docs, agent/api.mdx) and cloudflared's
metrics server (`/quicktunnel`, written by cloudflared's metrics/metrics.go as `{"hostname":"%s"}` in text/plain).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from receiver.app import create_app
from receiver.rules import RuleSet
from receiver.serving import running
from receiver.settings import ProviderSettings, Secret, Settings, SettingsError
from receiver.tunnel import PublicUrl
from storage import Store
from tests.e2e.conftest import wait_until
from tests.receiver.conftest import AUTH, FakeTTAPI, make_settings
from tests.receiver.test_frames import PNG, upload
from tests.receiver.web.test_dashboard import sign_in

pytestmark = pytest.mark.anyio

JOB = {"provider": "ttapi", "prompt": "a lighthouse", "image_url": "https://img.example/a.png"}


def ngrok_endpoint(url: str, upstream: str = "http://localhost:8000") -> dict[str, Any]:
    """One entry of `GET /api/endpoints`, as in ngrok's docs."""
    return {"name": "reelhook", "uri": "/api/endpoints/reelhook", "url": url,
            "upstream": {"url": upstream, "protocol": "https"}, "inspect": True, "traffic_policy": "",
            "pooling_enabled": True}  # fmt: skip


def ngrok_tunnel(public_url: str, addr: str = "localhost:8000") -> dict[str, Any]:
    """One entry of the older `GET /api/tunnels`, as in ngrok's docs."""
    counts = {"count": 0, "rate1": 0, "rate5": 0, "rate15": 0, "p50": 0, "p90": 0, "p95": 0, "p99": 0}
    return {"name": "command_line", "uri": "/api/tunnels/command_line", "public_url": public_url,
            "proto": public_url.split(":", 1)[0], "config": {"addr": addr, "inspect": True},
            "metrics": {"conns": counts | {"gauge": 0}, "http": counts}}  # fmt: skip


@dataclass
class FakeNgrok:
    """The ngrok agent's local API. `endpoints=None` is an agent from before endpoints: it answers 404 there."""

    endpoints: list[dict[str, Any]] | None = field(default_factory=list)
    tunnels: list[dict[str, Any]] = field(default_factory=list)
    asked: int = 0

    def app(self) -> Starlette:
        async def endpoints(request: Request) -> Response:
            self.asked += 1
            if self.endpoints is None:
                return PlainTextResponse("404 page not found", status_code=404)
            return JSONResponse({"endpoints": self.endpoints})

        async def tunnels(request: Request) -> Response:
            return JSONResponse({"tunnels": self.tunnels, "uri": "/api/tunnels"})

        return Starlette(routes=[Route("/api/endpoints", endpoints), Route("/api/tunnels", tunnels)])


def fake_cloudflared(hostname: str) -> Starlette:
    async def quicktunnel(request: Request) -> Response:
        return PlainTextResponse('{"hostname":"%s"}' % hostname)  # noqa: UP031  # as cloudflared's Fprintf

    return Starlette(routes=[Route("/quicktunnel", quicktunnel)])


def refused_address() -> str:
    """A loopback host:port nothing listens on (an agent that is not running)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


# -- discovery ------------------------------------------------------------------------------------------------------


async def test_ngrok_endpoint_to_our_port_is_picked_among_several() -> None:
    agent = FakeNgrok([
        ngrok_endpoint("https://other-app.ngrok-free.app", "http://localhost:3000"),
        ngrok_endpoint("tcp://1.tcp.ngrok.io:12345", "8000"),
        ngrok_endpoint("https://ours.ngrok-free.app", "http://localhost:8000"),
    ])  # fmt: skip
    async with running(agent.app()) as url:
        source = PublicUrl(ngrok_api=url, port=8000)
        found = await source.find()
        await source.aclose()
    assert (found.url, found.source) == ("https://ours.ngrok-free.app", f"ngrok's agent API at {url}")


async def test_an_older_ngrok_agent_is_read_through_its_tunnels_api() -> None:
    agent = FakeNgrok(None, [ngrok_tunnel("http://d95211d2.ngrok.app"), ngrok_tunnel("https://d95211d2.ngrok.app")])
    async with running(agent.app()) as url:
        source = PublicUrl(ngrok_api=url, port=8000)
        assert await source.get() == "https://d95211d2.ngrok.app"
        await source.aclose()


async def test_cloudflared_quick_tunnel_is_found_when_ngrok_is_absent() -> None:
    async with running(fake_cloudflared("seasonal-deck-organisms-sf.trycloudflare.com")) as url:
        cloudflared = url.removeprefix("http://")
        source = PublicUrl(
            ngrok_api=f"http://{refused_address()}", cloudflared_metrics=[refused_address(), cloudflared]
        )
        found = await source.find()
        await source.aclose()
    assert found.url == "https://seasonal-deck-organisms-sf.trycloudflare.com"
    assert found.source == f"cloudflared's quick tunnel at {cloudflared}"


async def test_with_no_agent_it_says_where_it_looked() -> None:
    ngrok, cloudflared = f"http://{refused_address()}", refused_address()
    source = PublicUrl(ngrok_api=ngrok, cloudflared_metrics=[cloudflared])
    assert await source.get() is None
    await source.aclose()
    assert source.waiting == (
        f"waiting for a public URL (no ngrok/cloudflared tunnel found at ngrok at {ngrok} or cloudflared at"
        f" {cloudflared})"
    )


async def test_a_url_apimart_would_drop_is_not_used_when_apimart_is_paid() -> None:
    agent = FakeNgrok([ngrok_endpoint("https://ours.example:8443")])
    async with running(agent.app()) as url:
        for web_ports_only, expected in [(True, None), (False, "https://ours.example:8443")]:
            source = PublicUrl(ngrok_api=url, port=8000, web_ports_only=web_ports_only)
            assert await source.get() == expected
            await source.aclose()


# -- settings -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "discover", "public_url"),
    [
        ({"REELHOOK_TTAPI_API_KEY": "k"}, True, "http://127.0.0.1:8000"),  # a real provider and no URL: ask
        ({"REELHOOK_PUBLIC_URL": "auto"}, True, "http://127.0.0.1:8000"),
        ({"REELHOOK_PUBLIC_URL": "AUTO", "REELHOOK_APIMART_API_KEY": "k"}, True, "http://127.0.0.1:8000"),
        ({}, False, "http://127.0.0.1:8000"),  # simulators only: the local default, as before
        ({"REELHOOK_TTAPI_API_KEY": "k", "REELHOOK_TTAPI_BASE_URL": "http://127.0.0.1:9"}, False,
         "http://127.0.0.1:8000"),  # a key on a local simulator: not a provider that needs a tunnel
        ({"REELHOOK_TTAPI_API_KEY": "k", "REELHOOK_PUBLIC_URL": "https://h.example/"}, False, "https://h.example"),
    ],
)  # fmt: skip
def test_auto_is_the_default_once_a_real_provider_has_a_key(
    env: dict[str, str], discover: bool, public_url: str
) -> None:
    settings = Settings.from_env(env)
    assert (settings.discover_public_url, settings.public_url) == (discover, public_url)


def test_agent_addresses_are_settings() -> None:
    settings = Settings.from_env(
        {"REELHOOK_NGROK_API": "http://127.0.0.1:4041/", "REELHOOK_CLOUDFLARED_METRICS": "127.0.0.1:1, [::1]:2"}
    )
    assert (settings.ngrok_api, settings.cloudflared_metrics) == ("http://127.0.0.1:4041", ("127.0.0.1:1", "[::1]:2"))
    assert Settings.from_env({}).cloudflared_metrics == tuple(f"127.0.0.1:{p}" for p in range(20241, 20246))
    with pytest.raises(SettingsError, match="REELHOOK_CLOUDFLARED_METRICS must be host:port"):
        Settings.from_env({"REELHOOK_CLOUDFLARED_METRICS": "20241"})
    with pytest.raises(SettingsError, match="REELHOOK_NGROK_API must be an http"):
        Settings.from_env({"REELHOOK_NGROK_API": "127.0.0.1:4040"})


# -- the service ----------------------------------------------------------------------------------------------------


@dataclass
class Tunnelled:
    client: httpx.AsyncClient
    provider: FakeTTAPI
    agent: FakeNgrok
    app: Starlette

    async def submit(self) -> str:
        response = await self.client.post("/api/jobs", headers=AUTH, json=JOB)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        return dict((await self.client.get(f"/api/jobs/{job_id}", headers=AUTH)).json())

    async def status(self) -> dict[str, Any]:
        return dict((await self.client.get("/api/status", headers=AUTH)).json())

    def hook_urls(self) -> list[str]:
        return [json.loads(request.content)["hookUrl"] for request in self.provider.requests]


@asynccontextmanager
async def tunnelled(tmp_path: Path, agent: FakeNgrok) -> AsyncIterator[Tunnelled]:
    """reelhook with REELHOOK_PUBLIC_URL=auto, a paid TTAPI (a key; a fake peer that records what it is sent) and
    the fake ngrok agent; no cloudflared."""
    provider = FakeTTAPI()
    async with AsyncExitStack() as stack:
        agent_url = await stack.enter_async_context(running(agent.app()))
        store = await stack.enter_async_context(await Store.open(tmp_path / "reelhook.sqlite3"))
        http = await stack.enter_async_context(httpx.AsyncClient(transport=httpx.MockTransport(provider)))
        settings = make_settings(
            tmp_path, public_url="http://127.0.0.1:8000", discover_public_url=True, ngrok_api=agent_url,
            cloudflared_metrics=(refused_address(),),
            providers={"ttapi": ProviderSettings(Secret("tt-key"), "https://api.ttapi.io")},
        )  # fmt: skip
        app = create_app(settings, store=store, http=http, rules=RuleSet.empty())
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        )
        yield Tunnelled(client, provider, agent, app)


async def test_a_paid_job_waits_for_a_tunnel_then_leaves_with_its_url(tmp_path: Path) -> None:
    agent = FakeNgrok()  # the agent runs, with no tunnel yet
    async with tunnelled(tmp_path, agent) as rig:
        job_id = await rig.submit()
        await wait_until(lambda: _true(agent.asked > 0))  # the submitter asked as the job was about to leave
        await rig.app.state.service.wait_idle()
        assert rig.provider.requests == []
        assert (await rig.job(job_id))["status"] == "queued"
        settings = rig.app.state.service.settings
        assert (await rig.status())["public_url"] == {
            "url": None,
            "from": f"ngrok at {settings.ngrok_api} or cloudflared at {settings.cloudflared_metrics[0]}",
            "waiting": f"waiting for a public URL (no ngrok/cloudflared tunnel found at ngrok at {settings.ngrok_api}"
            f" or cloudflared at {settings.cloudflared_metrics[0]})",
        }

        await sign_in(rig)  # type: ignore[arg-type]  # it uses the client only
        overview = (await rig.client.get("/partials/overview")).text
        assert "<strong>waiting for a public URL (no ngrok/cloudflared tunnel found at" in overview

        agent.endpoints = [ngrok_endpoint("https://a1b2c3.ngrok-free.app")]  # the tunnel comes up
        await wait_until(lambda: _true(bool(rig.provider.requests)))  # the worker asks again on its own
        [hook_url] = rig.hook_urls()
        assert hook_url.startswith("https://a1b2c3.ngrok-free.app/hooks/ttapi/")
        assert (await rig.job(job_id))["status"] == "submitted"
        assert (await rig.status())["public_url"]["waiting"] is None


async def test_a_moved_tunnel_is_logged_and_noted_on_the_jobs_that_named_the_old_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = "https://old-name.ngrok-free.app", "https://new-name.ngrok-free.app"
    agent = FakeNgrok([ngrok_endpoint(old)])
    async with tunnelled(tmp_path, agent) as rig:
        first = await rig.submit()
        await wait_until(lambda: _true(len(rig.provider.requests) == 1))
        agent.endpoints = [ngrok_endpoint(new)]  # the agent restarted with a new random URL
        await wait_until(lambda: _status_url(rig, new))
        with caplog.at_level(logging.WARNING, logger="reelhook.tunnel"):
            second = await rig.submit()
            await wait_until(lambda: _true(len(rig.provider.requests) == 2))
        first_job, second_job = await rig.job(first), await rig.job(second)
    assert [url.split("/hooks/")[0] for url in rig.hook_urls()] == [old, new]
    assert [note["message"] for note in first_job["notes"]] == [
        f"callback URL {old}/hooks/… is no longer reachable (tunnel moved to {new}); it will be settled by lookup"
    ]
    assert first_job["status"] == "submitted"  # not resent: its deadline lookup settles it
    assert second_job["notes"] == []
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"PUBLIC URL CHANGED from {old} to {new}: 1 job(s) in flight" in warning


async def _true(value: bool) -> bool:
    return value


async def _status_url(rig: Tunnelled, url: str) -> bool:
    return bool((await rig.status())["public_url"]["url"] == url)


async def test_an_uploaded_frame_is_sent_under_the_tunnels_url(tmp_path: Path) -> None:
    # The provider fetches the frame through the same tunnel it calls back through, so both carry its URL.
    tunnel = "https://frame-host.ngrok-free.app"
    agent = FakeNgrok([ngrok_endpoint(tunnel)])
    async with tunnelled(tmp_path, agent) as rig:
        frame = (await upload(rig.client, PNG)).json()["frame"]
        response = await rig.client.post("/api/jobs", headers=AUTH, json={**JOB, "image_url": frame})
        assert response.status_code == 201, response.text
        await wait_until(lambda: _true(bool(rig.provider.requests)))
        image_url = httpx.URL(json.loads(rig.provider.requests[0].content)["imageUrl"])
        assert str(image_url).startswith(f"{tunnel}/frames/")
        fetched = await rig.client.get(image_url.copy_with(scheme="http", host="testserver"))
        assert (fetched.status_code, fetched.content) == (200, PNG)
