"""A provider that takes a submission and then drops the connection before answering gets it once, not twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from receiver.app import create_app
from receiver.rules import RuleSet
from receiver.serving import bind_socket, running, socket_url
from receiver.settings import Secret
from submitter.simulators.ttapi import TTAPISimulator
from tests.e2e.conftest import API_TOKEN, TT_KEY, assert_videos_on_disk, settings_for, wait_until

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def dropping_proxy(upstream: str) -> AsyncIterator[str]:
    """Forwards each HTTP request to `upstream`, lets it answer, then hangs up without passing the answer on."""
    forwarded: list[bytes] = []

    async def handle(client: SocketStream) -> None:
        async with client:
            raw = b""
            while b"\r\n\r\n" not in raw:
                raw += await client.receive()
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in lines[1:])
            length = int(headers.get("content-length", headers.get("Content-Length", "0")))
            while len(body) < length:
                body += await client.receive()
            async with httpx.AsyncClient() as http:
                keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")}
                await http.request(method, upstream + path, content=body, headers=keep)
            forwarded.append(body)
            # The provider has the job; we close without a byte of its answer.

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


async def test_an_answer_lost_after_acceptance_is_not_a_reason_to_send_again(
    tmp_path: Path, database_url: str | None
) -> None:
    sim = TTAPISimulator(api_key=TT_KEY, auto_deliver=False)
    async with running(sim.app) as sim_url, dropping_proxy(sim_url) as proxy_url:
        sock = bind_socket()
        database = {"database_url": Secret(database_url)} if database_url else {}
        settings = settings_for(tmp_path / "data", socket_url(sock), {"ttapi": proxy_url}, **database)
        app = create_app(settings, rules=RuleSet.empty(), trusted_origins={sim_url})
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with running(app, sock) as url, httpx.AsyncClient(base_url=url, headers=headers) as api:
            job = (await api.post("/api/jobs", json={"prompt": "p", "image_url": "https://img.example/a.png"})).json()

            async def answer_lost() -> bool:
                return "outcome unknown" in ((await api.get(f"/api/jobs/{job['id']}")).json()["error"] or "")

            await wait_until(answer_lost)
            held = (await api.get(f"/api/jobs/{job['id']}")).json()
            assert (held["status"], held["provider_job_id"]) == ("submitted", None)  # held, not queued to resend
            [accepted] = sim.submissions
            assert await sim.deliver(str(accepted.job_id)) == [200]  # the provider's callback, as it would come

            async def downloaded() -> bool:
                shown = (await api.get(f"/api/jobs/{job['id']}")).json()
                return bool(shown["videos"]) and all(v["status"] == "downloaded" for v in shown["videos"])

            await wait_until(downloaded)
            shown = (await api.get(f"/api/jobs/{job['id']}")).json()

    assert [s.status_code for s in sim.submissions] == [200]  # the provider got it once
    assert shown["status"] == "succeeded" and shown["provider_job_id"] == accepted.job_id  # bound by its callback
    assert_videos_on_disk(shown, tmp_path / "data")
