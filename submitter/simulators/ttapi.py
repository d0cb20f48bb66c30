"""A fake TTAPI that speaks its Midjourney video contract (seed 000, providers.md §2) over real HTTP.

It takes `submit` and `extend`, answers `{"status":"SUCCESS","message":"","data":{"jobId":…}}`, and `delay` seconds
later POSTs the job's result to its `hookUrl` in the seed's "Async callback & fetch json" shape; `fetch` answers the
same body. The videos live on its own CDN (`/cdn/<jobId>/<i>.mp4`, each a valid MP4 with its own sha256), addressed
by the base URL the submitting request used.

The misbehaviour reelhook must survive is here on purpose, each a knob a test can turn: a wrong `TT-API-KEY` (401),
a full queue (499 "Queue exhausted" once `max_in_flight` jobs await an acknowledged callback), `reject_next`,
`fail_job_when`, and callbacks not answered 200, delivered again (three deliveries in all, as TTAPI's founder
describes). `deliver()` re-sends a callback on demand, concurrently if asked, to exercise idempotent receivers.

Deliveries run in a task group owned by the app's lifespan, so they need the app served with its lifespan on
(uvicorn, `receiver.serving.running`); shutting the app down cancels deliveries still waiting.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from submitter.simulators import SAMPLE_MP4, video_bytes

MAX_DELIVERIES = 3
BAD_KEY = "Wrong TT-API-KEY or email is not activated."
OPTIONS = {"mode": ("fast",), "manual": ("low", "high"), "resolution": ("sd", "hd"), "bs": (1, 2, 4)}
OPTIONS_EXTEND = {"manual": ("low", "high"), "animateMode": ("auto", "manual"), "bs": (1, 2, 4)}

__all__ = ["SAMPLE_MP4", "Delivery", "SimJob", "Submission", "TTAPISimulator", "video_bytes"]


@dataclass(frozen=True)
class Submission:
    path: str
    body: dict[str, Any]  # {} when the body was not a JSON object
    status_code: int
    job_id: str | None = None


@dataclass(frozen=True)
class Delivery:
    job_id: str
    url: str
    status_code: int | None  # None: the connection failed
    body: bytes


@dataclass(frozen=True)
class SimJob:
    job_id: str
    kind: str  # generate | extend
    body: dict[str, Any]
    hook_url: str | None
    prompt: str
    base_url: str
    count: int  # how many videos it will have
    status: str = "ON_QUEUE"  # then SUCCESS or FAILED
    message: str = ""
    videos: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        """The callback body, which is also the fetch answer."""
        progress = {"SUCCESS": "100", "FAILED": "0"}.get(self.status, "50")
        data: dict[str, Any] = {"action": self.kind, "jobId": self.job_id, "progress": progress, "prompt": self.prompt}
        if self.status == "SUCCESS":
            data["quota"] = "30"
        data["videos"] = list(self.videos)
        data["hookUrl"] = self.hook_url
        message = "success" if self.status == "SUCCESS" else self.message
        return {"status": self.status, "message": message, "jobId": self.job_id, "data": data}


def _failed(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "FAILED", "message": message, "data": None}, status_code=status_code)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


class TTAPISimulator:
    """A fake TTAPI: serve `app` (with its lifespan) and point reelhook's TTAPI base URL at it."""

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
        self._given_http = http
        self._http = http
        self._tasks: TaskGroup | None = None
        self._jobs: dict[str, SimJob] = {}
        self._in_flight: set[str] = set()
        self._rejections: collections.deque[tuple[int, str]] = collections.deque()
        self._failures: list[tuple[str, str]] = []
        self.app = Starlette(
            routes=[
                Route("/midjourney/video/submit", self._submit, methods=["POST"]),
                Route("/midjourney/video/extend", self._submit, methods=["POST"]),
                Route("/midjourney/video/fetch", self._fetch, methods=["GET", "POST"]),
                Route("/cdn/{job_id}/{index:int}.mp4", self._cdn, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @property
    def in_flight(self) -> int:
        """Accepted jobs whose callback has not been answered 200 yet (nor given up on)."""
        return len(self._in_flight)

    def job(self, job_id: str) -> SimJob:
        return self._jobs[job_id]

    def reject_next(self, status_code: int, message: str = "rejected by the simulator") -> None:
        """Queue one answer for the next submit or extend: HTTP `status_code` with a FAILED body."""
        self._rejections.append((status_code, message))

    def fail_job_when(self, prompt_contains: str, message: str = "prompt violation") -> None:
        """Jobs whose prompt contains `prompt_contains` end FAILED with `message`."""
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

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            self._http = self._given_http or await stack.enter_async_context(httpx.AsyncClient(timeout=10))
            self._tasks = await stack.enter_async_context(anyio.create_task_group())
            try:
                yield
            finally:
                self._tasks.cancel_scope.cancel()  # a stopped provider sends nothing more
                self._tasks, self._http = None, self._given_http

    async def _submit(self, request: Request) -> Response:
        path = request.url.path
        body = await _json_object(request)
        response = self._reject(request, path, body)
        if response is not None:
            self.submissions.append(Submission(path, body, response.status_code))
            return response
        extend = path.endswith("/extend")
        parent = self._jobs[body["jobId"]] if extend else None
        job = SimJob(
            job_id=str(uuid.uuid4()),
            kind="extend" if extend else "generate",
            body=body,
            hook_url=body.get("hookUrl") or None,
            prompt=parent.prompt if parent else body["prompt"],
            base_url=str(request.base_url).rstrip("/"),
            count=body.get("bs") or self.videos_per_job,
        )
        self._jobs[job.job_id] = job
        self._in_flight.add(job.job_id)
        self.submissions.append(Submission(path, body, 200, job.job_id))
        if self.auto_deliver:
            if self._tasks is None:
                raise RuntimeError("the TTAPI simulator delivers callbacks only while its app runs with its lifespan")
            self._tasks.start_soon(self._run, job.job_id)
        return JSONResponse({"status": "SUCCESS", "message": "", "data": {"jobId": job.job_id}})

    def _reject(self, request: Request, path: str, body: dict[str, Any]) -> Response | None:
        if self._rejections:
            return _failed(*self._rejections.popleft())
        if self.api_key is not None and request.headers.get("TT-API-KEY") != self.api_key:
            return _failed(401, BAD_KEY)
        extend = path.endswith("/extend")
        required = {"jobId": str, "index": int} if extend else {"prompt": str, "imageUrl": str}
        for name, kind in required.items():
            if body.get(name) in (None, ""):
                return _failed(400, f"{name} is required")
            if not isinstance(body[name], kind):
                return _failed(400, f"{name} must be a {kind.__name__}")
        if not isinstance(body.get("hookUrl", ""), str):
            return _failed(400, "hookUrl must be a string")
        for name, allowed in (OPTIONS_EXTEND if extend else OPTIONS).items():
            if name in body and body[name] not in allowed:
                return _failed(400, f"{name} must be one of {', '.join(map(str, allowed))}")
        if extend:
            parent = self._jobs.get(body["jobId"])
            if parent is None:
                return _failed(400, "job not found")
            if parent.status != "SUCCESS":
                return _failed(400, "the previous task must be in completed status")
            index = body["index"]
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(parent.videos):
                return _failed(400, f"index must be 0-{len(parent.videos) - 1}")
        if len(self._in_flight) >= self.max_in_flight:
            return _failed(499, "Queue exhausted")
        return None

    async def _fetch(self, request: Request) -> Response:
        if self.api_key is not None and request.headers.get("TT-API-KEY") != self.api_key:
            return _failed(401, BAD_KEY)
        if request.method == "GET":
            job_id: object = request.query_params.get("jobId")
        else:
            job_id = (await _json_object(request)).get("jobId")
        if not isinstance(job_id, str) or not job_id:
            return _failed(400, "jobId is required")
        if job_id not in self._jobs:
            return _failed(400, "job not found")
        return JSONResponse(self._jobs[job_id].payload())

    async def _cdn(self, request: Request) -> Response:
        job_id, index = request.path_params["job_id"], request.path_params["index"]
        if request.method == "GET":
            self.cdn_hits[request.url.path] += 1
        job = self._jobs.get(job_id)
        if job is None or job.status != "SUCCESS" or index >= len(job.videos):
            return Response(b"not found", status_code=404, media_type="text/plain")
        return Response(video_bytes(job_id, index), media_type="video/mp4")

    def _finish(self, job_id: str) -> SimJob:
        job = self._jobs[job_id]
        if job.status != "ON_QUEUE":
            return job
        failure = next((message for needle, message in self._failures if needle in job.prompt), None)
        if failure is not None:
            job = dataclasses.replace(job, status="FAILED", message=failure)
        else:
            videos = tuple(f"{job.base_url}/cdn/{job_id}/{i}.mp4" for i in range(job.count))
            job = dataclasses.replace(job, status="SUCCESS", videos=videos)
        self._jobs[job_id] = job
        if job.hook_url is None:  # nobody to tell: the slot frees when the job ends
            self._in_flight.discard(job_id)
        return job

    async def _run(self, job_id: str) -> None:
        await anyio.sleep(self.delay)
        if self._finish(job_id).hook_url is None:
            return
        for attempt in range(MAX_DELIVERIES):
            if attempt:
                await anyio.sleep(self.delay)
            if await self._post(job_id) == 200:
                return
        self._in_flight.discard(job_id)  # TTAPI gives up after three deliveries

    async def _post(self, job_id: str) -> int | None:
        if self._http is None:
            raise RuntimeError("the TTAPI simulator has no HTTP client: pass http= or run its app with its lifespan")
        job = self._jobs[job_id]
        assert job.hook_url is not None
        body = json.dumps(job.payload()).encode()
        try:
            response = await self._http.post(job.hook_url, content=body, headers={"content-type": "application/json"})
            status_code: int | None = response.status_code
        except httpx.HTTPError:
            status_code = None
        self.deliveries.append(Delivery(job_id, job.hook_url, status_code, body))
        if status_code == 200:
            self._in_flight.discard(job_id)
        return status_code
