"""A small loopback load balancer for the multi-instance test: what a studio puts in front of N reelhook instances.

Each request goes to a random instance. A callback (`/hooks/*`) goes to two instances at once and is answered by
whichever instance answers first, as a provider's re-delivery racing its first delivery would land: the other
forward still runs to the end (in the balancer's own task group), so both instances really receive it. An
instance that is down (SIGKILLed, its socket still held by the test) answers nothing until it is back: its forward
waits in the backlog, and a callback still has its other instance. The balancer answers 502 itself only when no
instance answered.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Sequence

import anyio
import httpx
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BALANCER_ERROR = "x-balancer-error"
HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


class Balancer:
    def __init__(self, instances: Sequence[str], *, timeout: float = 30.0) -> None:
        self.instances = list(instances)
        self.timeout = timeout
        self.forwarded: list[tuple[str, str]] = []  # (instance, path) of every forward, for a failing test to show
        self._http: httpx.AsyncClient | None = None
        self._tasks: TaskGroup | None = None
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
        self.app = Starlette(routes=[Route("/{path:path}", self._forward, methods=methods)], lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=self.timeout) as http, anyio.create_task_group() as tasks:
            self._http, self._tasks = http, tasks
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if request.url.path.startswith("/hooks/"):
            targets = random.sample(self.instances, 2)
        else:
            targets = [random.choice(self.instances)]
        where = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        send, answers = anyio.create_memory_object_stream[Response](len(targets))
        assert self._tasks is not None
        for target in targets:
            self._tasks.start_soon(self._one, target, request.method, where, headers, body, send.clone())
        send.close()
        failed = None
        async with answers:
            async for answer in answers:  # the first instance's answer; the other forward carries on
                if BALANCER_ERROR not in answer.headers:
                    return answer
                failed = answer  # a load balancer answers 502 only when no instance would answer
        assert failed is not None
        return failed

    async def _one(
        self,
        target: str,
        method: str,
        where: str,
        headers: dict[str, str],
        body: bytes,
        answers: MemoryObjectSendStream[Response],
    ) -> None:
        assert self._http is not None
        self.forwarded.append((target, where))
        async with answers:
            try:
                got = await self._http.request(method, target + where, headers=headers, content=body)
                answer = Response(got.content, got.status_code, {"content-type": got.headers.get("content-type", "")})
            except httpx.HTTPError as exc:
                answer = Response(f"{target}: {type(exc).__name__}", 502, {BALANCER_ERROR: "1"}, "text/plain")
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                answers.send_nowait(answer)
