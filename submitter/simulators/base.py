"""What every provider simulator shares: the job table, the CDN, callback delivery with retries, and the knobs.

A simulator subclass describes only its provider's wire format: its routes, how it authenticates, its error body,
its callback payload (and headers, for a provider that signs), and where it delivers. Everything that makes a
simulator useful to a test is here, once: `reject_next`, `fail_job_when`, a queue limit, `deliver()` on demand
(concurrently if asked), and records of every submission, delivery, CDN hit and request.

Deliveries run in a task group owned by the app's lifespan, so they need the app served with its lifespan on
(uvicorn, `receiver.serving.running`); shutting the app down cancels deliveries still waiting.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import httpx
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from submitter.simulators import media_bytes

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


@dataclass(frozen=True)
class Submission:
    path: str
    body: dict[str, Any]  # {} when the body was not a JSON object
    status_code: int
    job_id: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    job_id: str
    url: str
    status_code: int | None  # None: the connection failed
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SimJob:
    job_id: str
    kind: str  # the provider's name for what was asked (generate, extend, imagine, upsample1, ...)
    body: dict[str, Any]
    hook_url: str | None
    prompt: str
    base_url: str
    count: int  # how many files it will have
    ext: str = "mp4"
    status: str = PENDING
    message: str = ""
    media: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)  # provider fields fixed at submit time


async def read_json(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


class RequestLog:
    """Records each HTTP request's method and path, so a test can tell what a provider was (not) asked."""

    def __init__(self, app: ASGIApp, requests: list[tuple[str, str]]) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


class Simulator:
    name: ClassVar[str]
    max_deliveries: ClassVar[int] = 3

    def __init__(
        self,
        *,
        api_key: str | None = None,
        delay: float = 0.05,
        auto_deliver: bool = True,
        max_in_flight: int = 10,
        videos_per_job: int = 4,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.api_key = api_key
        self.delay = delay
        self.auto_deliver = auto_deliver
        self.max_in_flight = max_in_flight
        self.videos_per_job = videos_per_job
        self.submissions: list[Submission] = []
        self.deliveries: list[Delivery] = []
        self.cdn_hits: collections.Counter[str] = collections.Counter()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, fetches included
        self._given_http = http
        self._http = http
        self._tasks: TaskGroup | None = None
        self._jobs: dict[str, SimJob] = {}
        self._in_flight: set[str] = set()
        self._rejections: collections.deque[tuple[int, str]] = collections.deque()
        self._failures: list[tuple[str, str]] = []
        cdn = Route("/cdn/{job_id}/{filename}", self._cdn, methods=["GET"])
        log = Middleware(RequestLog, requests=self.requests)
        self.app = Starlette(routes=[*self.routes(), cdn], middleware=[log], lifespan=self._lifespan)

    # -- what a provider subclass describes ---------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def authorized(self, request: Request) -> bool:
        raise NotImplementedError

    def error(self, status_code: int, message: str) -> Response:
        """The provider's error answer."""
        raise NotImplementedError

    def payload(self, job: SimJob) -> dict[str, Any]:
        """The callback body, which is also the fetch answer."""
        raise NotImplementedError

    def unauthorized(self) -> Response:
        return self.error(401, "unauthorized")

    def queue_full(self) -> Response:
        return self.error(429, "too many requests")

    def redeliver(self, status_code: int | None) -> bool:
        """Whether a delivery answered so is tried again (TTAPI: anything but 200)."""
        return status_code != 200

    def delivery_url(self, job: SimJob) -> str:
        assert job.hook_url is not None
        return job.hook_url

    def delivery_headers(self, job: SimJob, body: bytes) -> dict[str, str]:
        return {"content-type": "application/json"}

    def finished(self, job: SimJob) -> dict[str, Any]:
        """Provider fields a finished job gains (AceData's `video_id`); merged into `extra`."""
        return {}

    # -- knobs for tests ----------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def job(self, job_id: str) -> SimJob:
        return self._jobs[job_id]

    def jobs(self) -> list[SimJob]:
        return list(self._jobs.values())

    def reject_next(self, status_code: int, message: str = "rejected by the simulator") -> None:
        """Queue one answer for the next submission: HTTP `status_code` with the provider's error body."""
        self._rejections.append((status_code, message))

    def fail_job_when(self, prompt_contains: str, message: str = "prompt violation") -> None:
        """Jobs whose prompt contains `prompt_contains` end failed with `message`."""
        self._failures.append((prompt_contains, message))

    async def deliver(self, job_id: str, *, times: int = 1, concurrently: bool = False) -> list[int | None]:
        """Finish the job if it is not finished, POST its callback `times` times now; the status codes, in order."""
        job = self._finish(job_id)
        if job.hook_url is None:
            return []
        if not concurrently:
            return [await self._post(job_id) for _ in range(times)]
        codes: list[int | None] = [None] * times

        async def post(i: int) -> None:
            codes[i] = await self._post(job_id)

        async with anyio.create_task_group() as tg:
            for i in range(times):
                tg.start_soon(post, i)
        return codes

    # -- helpers for a subclass's routes ------------------------------------------------------------------------

    def refuse(self, request: Request, body: dict[str, Any], validate: Callable[[], str | None]) -> Response | None:
        """The answer that refuses this submission, in the provider's order of checks, or None to accept it."""
        path = request.url.path
        response: Response | None = None
        if self._rejections:
            response = self.error(*self._rejections.popleft())
        elif not self.authorized(request):
            response = self.unauthorized()
        elif (problem := validate()) is not None:
            response = self.error(400, problem)
        elif len(self._in_flight) >= self.max_in_flight:
            response = self.queue_full()
        if response is not None:
            self.submissions.append(Submission(path, body, response.status_code, query=dict(request.query_params)))
        return response

    def accept(
        self,
        request: Request,
        body: dict[str, Any],
        *,
        kind: str,
        hook_url: str | None,
        prompt: str,
        count: int | None = None,
        ext: str = "mp4",
        extra: Mapping[str, Any] | None = None,
    ) -> SimJob:
        job = SimJob(
            job_id=str(uuid.uuid4()),
            kind=kind,
            body=body,
            hook_url=hook_url or None,
            prompt=prompt,
            base_url=str(request.base_url).rstrip("/"),
            count=self.videos_per_job if count is None else count,
            ext=ext,
            extra=dict(extra or {}),
        )
        self._jobs[job.job_id] = job
        self._in_flight.add(job.job_id)
        self.submissions.append(Submission(request.url.path, body, 200, job.job_id, dict(request.query_params)))
        if self.auto_deliver:
            if self._tasks is None:
                raise RuntimeError(f"the {self.name} simulator delivers only while its app runs with its lifespan")
            self._tasks.start_soon(self._run, job.job_id)
        return job

    def known(self, job_id: object) -> SimJob | None:
        return self._jobs.get(job_id) if isinstance(job_id, str) else None

    # -- machinery ----------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if self._given_http is None:
                self._http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
            self._tasks = await stack.enter_async_context(anyio.create_task_group())
            try:
                yield
            finally:
                self._tasks.cancel_scope.cancel()  # a stopped provider sends nothing more
                self._tasks = None
        self._http = self._given_http

    async def _cdn(self, request: Request) -> Response:
        self.cdn_hits[request.url.path] += 1
        job = self._jobs.get(request.path_params["job_id"])
        stem, _, ext = request.path_params["filename"].partition(".")
        if job is None or job.status != SUCCEEDED or not stem.isdigit() or ext != job.ext or int(stem) >= job.count:
            return Response(b"not found", status_code=404, media_type="text/plain")
        media_type = "image/png" if ext == "png" else "video/mp4"
        return Response(media_bytes(job.job_id, int(stem), ext), media_type=media_type)

    def _finish(self, job_id: str) -> SimJob:
        job = self._jobs[job_id]
        if job.status != PENDING:
            return job
        failure = next((message for needle, message in self._failures if needle in job.prompt), None)
        if failure is not None:
            job = dataclasses.replace(job, status=FAILED, message=failure)
        else:
            media = tuple(f"{job.base_url}/cdn/{job_id}/{i}.{job.ext}" for i in range(job.count))
            job = dataclasses.replace(job, status=SUCCEEDED, media=media)
            job = dataclasses.replace(job, extra={**job.extra, **self.finished(job)})
        self._jobs[job_id] = job
        if job.hook_url is None:  # nobody to tell: the slot frees when the job ends
            self._in_flight.discard(job_id)
        return job

    async def _run(self, job_id: str) -> None:
        await anyio.sleep(self.delay)
        if self._finish(job_id).hook_url is None:
            return
        for attempt in range(self.max_deliveries):
            if attempt:
                await anyio.sleep(self.delay)
            if not self.redeliver(await self._post(job_id)):
                break
        self._in_flight.discard(job_id)  # acknowledged, or the provider gave up: the slot is free either way

    async def _post(self, job_id: str) -> int | None:
        if self._http is None:
            raise RuntimeError(f"the {self.name} simulator has no HTTP client: pass http= or run it with its lifespan")
        job = self._jobs[job_id]
        url, body = self.delivery_url(job), json.dumps(self.payload(job)).encode()
        headers = self.delivery_headers(job, body)
        try:
            response = await self._http.post(url, content=body, headers=headers)
            status_code: int | None = response.status_code
        except httpx.HTTPError:
            status_code = None
        self.deliveries.append(Delivery(job_id, url, status_code, body, headers))
        if status_code is not None and 200 <= status_code < 300:
            self._in_flight.discard(job_id)
        return status_code
