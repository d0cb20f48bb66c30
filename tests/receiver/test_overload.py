"""Callback slots: past a job's share 429, past the service's limit 503, both with Retry-After and at once; what
got a slot completes; other routes take none."""

from __future__ import annotations

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from receiver.overload import HookSlots, take_hook_slot
from receiver.serving import running

pytestmark = pytest.mark.anyio


class Slow:
    """An app whose hook requests wait until released, recording which ones completed."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.entered = 0
        self.completed: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/hooks/{name}", self.hook, methods=["POST"]),
                Route("/healthz", lambda request: PlainTextResponse("ok")),
            ]
        )

    async def hook(self, request: Request) -> Response:
        name = request.path_params["name"]
        refused = take_hook_slot(request, job_id=name.rstrip("0123456789"))  # a1, a2: two callbacks for job a
        if refused is not None:
            return refused
        self.entered += 1
        await self.release.wait()
        self.completed.append(request.path_params["name"])
        return PlainTextResponse("stored")


async def test_past_a_jobs_share_429_past_the_limit_503_and_the_rest_complete() -> None:
    slow = Slow()
    slots = HookSlots(slow.app, limit=3, per_job=2, retry_after=7)
    async with running(slots) as url, httpx.AsyncClient(base_url=url) as client:
        results: dict[str, httpx.Response] = {}

        async def post(name: str) -> None:
            results[name] = await client.post(f"/hooks/{name}", content=b"{}")

        async with anyio.create_task_group() as tg:
            for name in ("a1", "a2", "b1"):
                tg.start_soon(post, name)
            with anyio.fail_after(5):
                while slow.entered < 3:
                    await anyio.sleep(0.01)
            assert (slots.in_progress, dict(slots.by_job)) == (3, {"a": 2, "b": 1})
            third = await client.post("/hooks/a3", content=b"{}")
            assert (third.status_code, third.headers["retry-after"]) == (429, "7")  # job a has its share
            assert third.json()["error"] == "too_many_requests"
            shed = await client.post("/hooks/c1", content=b"{}")
            assert (shed.status_code, shed.headers["retry-after"]) == (503, "7")  # the service is full
            assert shed.json()["error"] == "overloaded"
            assert (await client.get("/healthz")).status_code == 200  # takes no slot
            assert (slots.in_progress, dict(slots.by_job)) == (3, {"a": 2, "b": 1})  # the refused took none
            slow.release.set()
        assert sorted(slow.completed) == ["a1", "a2", "b1"] and {r.status_code for r in results.values()} == {200}
        assert (slots.in_progress, dict(slots.by_job)) == (0, {})
        again = await client.post("/hooks/c1", content=b"{}")
        assert again.status_code == 200 and slow.completed[-1] == "c1"


async def test_the_service_sheds_hooks_past_its_setting_and_refuses_bad_tokens_at_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from receiver.app import create_app
    from receiver.rules import RuleSet
    from storage import Store
    from tests.receiver.conftest import make_settings

    async with await Store.open(tmp_path / "db.sqlite3") as store:
        app = create_app(make_settings(tmp_path, max_hook_requests=1), store=store, rules=RuleSet.empty())
        gate = anyio.Event()

        async def body():  # type: ignore[no-untyped-def]
            yield b"{"
            await gate.wait()  # the first callback holds its place while it uploads
            yield b"}"

        async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
            token = app.state.service.signer.sign_hook_token("no-such-job", "ttapi")  # valid: its body gets read
            other = app.state.service.signer.sign_hook_token("other-job", "ttapi")
            async with anyio.create_task_group() as tg:
                first: list[httpx.Response] = []
                tg.start_soon(lambda: _post(client, f"/hooks/ttapi/{token}", body(), first))
                with anyio.fail_after(5):
                    while True:  # until the first request holds the only place
                        shed = await client.post(f"/hooks/ttapi/{other}", content=b"{}")
                        if shed.status_code == 503:
                            break
                        await anyio.sleep(0.01)
                assert shed.headers["retry-after"] == "5"
                assert (await client.get("/healthz")).status_code == 200
                forged = await client.post("/hooks/ttapi/forged", content=b"{}")
                assert forged.status_code == 403  # checked before any slot is asked for
                gate.set()
            assert first[0].status_code == 400  # the held callback ran its course: "{}" is no TTAPI callback


async def _post(client: httpx.AsyncClient, path: str, content, out: list[httpx.Response]) -> None:  # type: ignore[no-untyped-def]
    out.append(await client.post(path, content=content))
