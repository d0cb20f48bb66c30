"""What the provider tests share: a job builder, a refusal catcher, a recording callback receiver, and serving.

`serving` runs a simulator beside that receiver on loopback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from receiver.serving import running
from storage import Job, JobStatus
from submitter.providers import ProviderError
from submitter.simulators.base import Simulator


def make_job(provider: str, action: str = "generate", params: dict[str, Any] | None = None, **fields: Any) -> Job:
    """A queued job with nothing behind it (no provider id, parent, result or attempts); `fields` override any of it."""
    job_id = fields.pop("id", "job-1")
    defaults: dict[str, Any] = {
        "status": JobStatus.QUEUED,
        "provider_job_id": None,
        "parent_id": None,
        "root_id": job_id,
        "depth": 0,
        "rule": None,
        "origin": None,
        "error": None,
        "progress": None,
        "result": {},
        "attempts": 0,
        "next_attempt_at": None,
        "created_at": 1.0,
        "updated_at": 1.0,
    }
    params = {} if params is None else params
    return Job(id=job_id, provider=provider, action=action, params=params, **(defaults | fields))


def refusal(parse: Callable[..., object], *args: object) -> ProviderError:
    """The ProviderError that `parse(*args)` raises (a module's parse_submit_response on a refusal, say)."""
    with pytest.raises(ProviderError) as caught:
        parse(*args)
    return caught.value


class Recorder:
    """A callback receiver on any path: records every POST and answers the scripted statuses in turn, then 200.

    With `barrier` set, each request waits until `barrier` requests are waiting at once (504 if they never are),
    which only concurrent deliveries can satisfy.
    """

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.statuses = list(statuses)
        self.paths: list[str] = []
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.queries: list[dict[str, str]] = []
        self.barrier = 0
        self.waiting = 0
        self.gate = anyio.Event()
        self.app = Starlette(routes=[Route("/{path:path}", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        self.paths.append(request.url.path)
        self.bodies.append(await request.body())
        self.headers.append(dict(request.headers))
        self.queries.append(dict(request.query_params))
        if self.barrier:
            self.waiting += 1
            if self.waiting >= self.barrier:
                self.gate.set()
            with anyio.move_on_after(2):
                await self.gate.wait()
            if not self.gate.is_set():
                return Response("nobody else came", status_code=504)
        return Response("ok", status_code=self.statuses.pop(0) if self.statuses else 200)

    @property
    def calls(self) -> list[tuple[str, bytes]]:
        """(path, body) of each POST, in order."""
        return list(zip(self.paths, self.bodies, strict=True))

    @property
    def content_types(self) -> list[str | None]:
        return [headers.get("content-type") for headers in self.headers]

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.bodies]


async def until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(2):
        while not condition():
            await anyio.sleep(0.002)


@contextlib.asynccontextmanager
async def serving(
    sim: Simulator, recorder: Recorder, auth: Mapping[str, str] | None = None, *, hook_path: str = "/hook"
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The recorder and the simulator on loopback; yields a client for the simulator and the hook URL.

    The client sends `auth` (the provider's key header) with every request. Both servers stop at once: a uvicorn
    shutdown takes a few of its 0.1 s ticks, and tests should stay quick.
    """
    stop = anyio.Event()

    async def serve(app: ASGIApp, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        async with running(app) as base_url:
            task_status.started(base_url)
            await stop.wait()

    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        hook_base, sim_base = await tg.start(serve, recorder.app), await tg.start(serve, sim.app)
        try:
            async with httpx.AsyncClient(base_url=sim_base, headers=auth) as client:
                yield client, f"{hook_base}{hook_path}"
        except Exception as exc:  # stop the servers gently, then fail as the test failed (not as a task group)
            failure = exc
        finally:
            stop.set()
    if failure is not None:
        raise failure
