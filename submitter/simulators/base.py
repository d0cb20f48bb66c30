"""What every provider simulator shares: the job's life, its slot, the CDN, and the knobs a test turns.

A simulator subclass describes only its provider's wire format: its routes, how it authenticates, its error body,
its callback payload (and headers, for a provider that signs), and where it delivers. The rest is here, once.

A job's life, as a provider lives it: taken (it holds one of `max_in_flight` slots), running (one progress
callback, for a provider whose documents do not rule them out), ended (succeeded or failed: its slot is free
whether or not anyone has heard), then its callback, tried again while the provider would. The slot follows the
job, not the callback: a provider counts the jobs it is working on, and a job whose callback nobody answers is
not one of them. State lives in `state.py` (in memory, or in a file that survives a restart), callback sending in
`delivery.py`, and the fault switches (5xx after taking a job, no callback, a late one, a failed job, repeats) in
`faults.py`.

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
from pathlib import Path
from typing import Any, ClassVar

import anyio
import httpx
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from submitter.simulators import read_json
from submitter.simulators.cdn import media_file
from submitter.simulators.delivery import Courier, Delivery, Message
from submitter.simulators.faults import Faults, FaultSwitch
from submitter.simulators.observation import observation_route
from submitter.simulators.state import FAILED, PENDING, SUCCEEDED, JobTable, SimJob
from submitter.simulators.traffic import RequestLog, Submission, Taken

__all__ = ["FAILED", "PENDING", "SUCCEEDED", "Delivery", "Faults", "SimJob", "Simulator", "Submission", "read_json"]


class Simulator:
    name: ClassVar[str]
    max_deliveries: ClassVar[int] = 3
    sends_progress: ClassVar[bool] = True  # one progress callback before the result
    excess_waits: ClassVar[bool] = False  # a job over the limit waits for a slot rather than being refused

    def __init__(
        self,
        *,
        api_key: str | None = None,
        delay: float = 0.05,
        auto_deliver: bool = True,
        max_in_flight: int = 10,
        videos_per_job: int = 4,
        http: httpx.AsyncClient | None = None,
        state_dir: Path | None = None,
        faults: Faults | None = None,
        progress_callbacks: bool | None = None,
    ) -> None:
        self.api_key = api_key
        self.progress_callbacks = self.sends_progress if progress_callbacks is None else progress_callbacks
        self.delay = delay
        self.auto_deliver = auto_deliver
        self.max_in_flight = max_in_flight
        self.videos_per_job = videos_per_job
        self.submissions: list[Submission] = []
        self.cdn_hits: collections.Counter[str] = collections.Counter()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, fetches included
        self._given_http = http
        self._courier = Courier(self.name)
        self.deliveries: list[Delivery] = self._courier.deliveries
        self._switch = FaultSwitch(faults)
        self._tasks: TaskGroup | None = None
        self._jobs = JobTable(state_dir / f"{self.name}.json" if state_dir is not None else None)
        self._remembered = {job.job_id for job in self._jobs}  # from before a restart, on an old address
        self._base_url: str | None = None
        self._in_flight: set[str] = {job.job_id for job in self._jobs if not job.ended}
        self.peak_in_flight = len(self._in_flight)  # the most slots ever in use at once (observation only)
        self._running = 0
        self._rejections: collections.deque[tuple[int, str]] = collections.deque()
        self._failures: list[tuple[str, str]] = []
        routes = [*self.routes(), Route("/cdn/{job_id}/{filename}", self._cdn, methods=["GET"]), self._switch.route()]
        routes.append(observation_route(self))
        self.app = Starlette(
            routes=routes,
            middleware=[Middleware(RequestLog, requests=self.requests, reached_at=self.reached_at)],
            exception_handlers={Taken: self._taken},
            lifespan=self._lifespan,
        )

    # -- what a provider subclass describes ---------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def authorized(self, request: Request) -> bool:
        raise NotImplementedError

    def error(self, status_code: int, message: str) -> Response:
        """The provider's error answer."""
        raise NotImplementedError

    def payload(self, job: SimJob) -> dict[str, Any]:
        """The callback body (a progress report while the job runs), which is also the fetch answer."""
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
        """Provider fields a job gains when it ends (AceData's `video_id`); merged into `extra`."""
        return {}

    # -- knobs for tests ----------------------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The switches each new job takes a copy of; set them here or by `POST /_simulator/faults`."""
        return self._switch.current

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._switch.current = faults

    @property
    def in_flight(self) -> int:
        """Jobs taken and not ended: the slots in use."""
        return len(self._in_flight)

    @property
    def idle(self) -> bool:
        """No job running and no callback being sent: everything it will do on its own is done."""
        return self._running == 0 and self._courier.sending == 0

    def job(self, job_id: str) -> SimJob:
        return self._jobs[job_id]

    def waiting(self, job_id: str) -> bool:
        """Whether the job was taken but waits for a slot (`excess_waits`)."""
        return not self._jobs[job_id].ended and job_id not in self._in_flight

    def jobs(self) -> list[SimJob]:
        return list(self._jobs)

    def reject_next(self, status_code: int, message: str = "rejected by the simulator") -> None:
        """Queue one answer for the next submission: HTTP `status_code` with the provider's error body."""
        self._rejections.append((status_code, message))

    def fail_job_when(self, prompt_contains: str, message: str = "prompt violation") -> None:
        """Jobs whose prompt contains `prompt_contains` end failed with `message`."""
        self._failures.append((prompt_contains, message))

    async def deliver(self, job_id: str, *, times: int = 1, concurrently: bool = False) -> list[int | None]:
        """End the job if it has not ended, POST its callback `times` times now; the status codes, in order."""
        job = self._finish(job_id)
        if job.hook_url is None:
            return []

        return await self._courier.repeat(job_id, lambda: self._message(job_id), times, concurrently=concurrently)

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
        elif len(self._in_flight) >= self.max_in_flight and not self.excess_waits:
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
        """Take the job. With the `taken_then_status` fault on, raises `Taken` after taking it."""
        faults = self.faults
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
            faults=faults.as_dict(),
        )
        self._jobs.put(job)
        if len(self._in_flight) < self.max_in_flight:
            self._take_slot(job.job_id)  # else it waits for a slot (`excess_waits`)
        status_code = faults.taken_then_status or 200
        query = dict(request.query_params)
        self.submissions.append(Submission(request.url.path, body, status_code, job.job_id, query))
        if self.auto_deliver:
            if self._tasks is None:
                raise RuntimeError(f"the {self.name} simulator delivers only while its app runs with its lifespan")
            self._tasks.start_soon(self._run, job.job_id)
        if faults.taken_then_status is not None:
            raise Taken(faults.taken_then_status)
        return job

    def known(self, job_id: object) -> SimJob | None:
        return self._jobs.get(job_id) if isinstance(job_id, str) else None

    def reached_at(self, base_url: str) -> None:
        """The simulator is served at `base_url`: jobs remembered from before a restart move their files there."""
        if self._base_url is None:
            self._base_url = base_url
            self._jobs.rebase(base_url, self._remembered)

    # -- machinery ----------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            self._courier.http = self._given_http
            if self._given_http is None:
                self._courier.http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
            self._tasks = await stack.enter_async_context(anyio.create_task_group())
            if self.auto_deliver:  # a restarted provider still finishes the jobs it had taken
                for job in self._jobs:
                    if not job.ended:
                        self._tasks.start_soon(self._run, job.job_id)
            try:
                yield
            finally:
                self._tasks.cancel_scope.cancel()  # a stopped provider sends nothing more
                self._tasks = None
        self._courier.http = self._given_http

    async def _taken(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Taken)
        return self.error(exc.status_code, "gateway timeout")

    async def _cdn(self, request: Request) -> Response:
        self.cdn_hits[request.url.path] += 1
        return media_file(self._jobs.get(request.path_params["job_id"]), request.path_params["filename"])

    def _take_slot(self, job_id: str) -> None:
        self._in_flight.add(job_id)
        self.peak_in_flight = max(self.peak_in_flight, len(self._in_flight))

    def _finish(self, job_id: str) -> SimJob:
        job = self._jobs[job_id]
        if job.ended:
            return job
        matched = (text for needle, text in self._failures if needle in job.prompt)
        failure = job.faults.get("fail") or next(matched, None)
        job = dataclasses.replace(job, status=FAILED, message=failure) if failure else job
        job = job if failure else dataclasses.replace(job, status=SUCCEEDED)
        job = dataclasses.replace(job, extra={**job.extra, **self.finished(job)})
        self._jobs.put(job)
        self._in_flight.discard(job_id)  # the job ended: its slot is free, whoever has heard of it
        return job

    async def _run(self, job_id: str) -> None:
        self._running += 1
        try:
            while job_id not in self._in_flight and not self._jobs[job_id].ended:  # waiting for a slot
                if len(self._in_flight) < self.max_in_flight:
                    self._take_slot(job_id)
                else:
                    await anyio.sleep(min(self.delay, 0.05) or 0.01)
            while job_id in self._remembered and self._base_url is None:  # its files' address is not known yet
                await anyio.sleep(0.05)
            job = self._jobs[job_id]
            calls_back = job.hook_url is not None and not job.faults.get("no_callback")
            await anyio.sleep(self.delay / 2)
            if calls_back and self.progress_callbacks and not self._jobs[job_id].ended:
                await self._send(job_id, attempts=1)  # a progress report is sent once, never tried again
            await anyio.sleep(self.delay / 2)
            self._finish(job_id)
            if calls_back:
                await anyio.sleep(job.faults.get("callback_delay", 0.0))
                await self._send(job_id, attempts=self.max_deliveries)
        finally:
            self._running -= 1

    async def _send(self, job_id: str, *, attempts: int) -> None:
        for _ in range(self._jobs[job_id].faults.get("repeat", 1)):
            message = self._frozen_message(job_id)
            await self._courier.send(job_id, message, attempts=attempts, again=self.redeliver, pause=self.delay)

    def _frozen_message(self, job_id: str) -> Callable[[], Message]:
        """This moment's message, re-stamped (for a signing provider) at each attempt but with the same body."""
        job = self._jobs[job_id]
        body = json.dumps(self.payload(job)).encode()
        return lambda: Message(self.delivery_url(job), body, self.delivery_headers(job, body))

    def _message(self, job_id: str) -> Message:
        return self._frozen_message(job_id)()
