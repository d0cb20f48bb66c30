"""A fake AceData Cloud that speaks its Midjourney Videos contract (seed 002, providers.md §3) over real HTTP.

`POST /midjourney/videos` takes `action` `generate` (needs `prompt` and `image_url`) or `extend` (needs the
`video_id` of a finished job and a `video_index` into its videos, 0 by default). With a `callback_url` it answers
`{"task_id": …}` at once and, `delay` seconds later, POSTs the seed's result body there; without one it holds the
request until the job is done and answers that body itself, as AceData does. Each finished job gets a fresh
numeric-string `video_id`, the name an extend uses. `POST /midjourney/tasks` `{"action": "retrieve", "id": …}`
answers the task record (`id`, `request`, `response`, `created_at`, and `finished_at` once done); `retrieve_batch`
answers `{"items", "count"}`. The videos live on the simulator's CDN (`/cdn/<task_id>/<i>.mp4`) where AceData's
live on `storage.fonedis.cc`; the cover (`image_url`) is the first frame the job was given.

While a job runs it calls back once with `{"task_id", "trace_id", "progress"}` and no `success` (AceData documents
none: seed 002 says only that the result is sent "when the task is completed", which does not rule one out; a
`success` key would claim a result). A failed job calls back with the seed's error envelope, `{"success": false,
"error": {"code", "message"}, "trace_id"}` (seed 002 "Error Handling"), which names no task; with
`failure_names_task=True` it adds `task_id`, the shape AceData's concepts page gives (providers.md §3.4).

Refusals use the seed's envelope `{"success": false, "error": {"code", "message"}, "trace_id"}`: 401
`invalid_token` for a wrong Bearer token, 400 `bad_request` for a bad body, 429 `too_many_requests` while
`max_in_flight` jobs are running (a limit AceData does not state; 429 is its documented rate-limit answer). AceData
documents no callback retry policy; this one delivers until a 2xx answer (its docs ask receivers to "return 2xx
quickly"), three deliveries in all, like the base.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from submitter.simulators.base import FAILED, SUCCEEDED, SimJob, Simulator, read_json

CODES = {400: "bad_request", 401: "invalid_token", 403: "used_up", 404: "not_found", 429: "too_many_requests"}
CODES |= {500: "api_error", 504: "timeout"}
OPTIONS = {"mode": ("fast", "turbo"), "resolution": ("480p", "720p"), "loop": (True, False)}
COVER_SIZE = (560, 688)  # the seed's cover size


class AceDataSimulator(Simulator):
    name = "acedata"
    _last_video_id = 0  # the last video_id handed out, per instance once set

    def __init__(self, *, failure_names_task: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.failure_names_task = failure_names_task
        video_ids = [int(job.extra["video_id"]) for job in self.jobs() if "video_id" in job.extra]
        self._last_video_id = max(video_ids, default=0)  # a restarted simulator never hands one out twice

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/midjourney/videos", self._submit, methods=["POST"]),
            Route("/midjourney/tasks", self._retrieve, methods=["POST"]),
        ]

    def authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return self.api_key is None or (scheme.lower() == "bearer" and token == self.api_key)

    def error(self, status_code: int, message: str) -> Response:
        code = CODES.get(status_code, "api_error" if status_code >= 500 else "bad_request")
        body = {"success": False, "error": {"code": code, "message": message}, "trace_id": str(uuid.uuid4())}
        return JSONResponse(body, status_code=status_code)

    def unauthorized(self) -> Response:
        return self.error(401, "invalid or missing authorization token")

    def queue_full(self) -> Response:
        return self.error(429, "too many requests, you have exceeded the rate limit")

    def redeliver(self, status_code: int | None) -> bool:
        return status_code is None or not 200 <= status_code < 300

    def finished(self, job: SimJob) -> dict[str, Any]:
        if job.status == FAILED:
            return {"finished_at": time.time()}
        # Like the seed's "1751816807896311": microseconds since the epoch, made unique.
        self._last_video_id = max(self._last_video_id + 1, time.time_ns() // 1000)
        return {"video_id": str(self._last_video_id), "finished_at": time.time()}

    def payload(self, job: SimJob) -> dict[str, Any]:
        if job.status == FAILED:  # seed 002 "Error Response Example"
            failure: dict[str, Any] = {"success": False, "error": {"code": "api_error", "message": job.message}}
            named = {"task_id": job.job_id} if self.failure_names_task else {}
            return failure | named | {"trace_id": str(uuid.uuid4())}
        if job.status != SUCCEEDED:
            return {"task_id": job.job_id, "trace_id": str(uuid.uuid4()), "progress": 50}
        width, height = COVER_SIZE
        return {
            "image_url": job.extra["image_url"],
            "image_width": width,
            "image_height": height,
            "progress": 100,
            "video_id": job.extra["video_id"],
            "video_urls": list(job.media),
            "task_id": job.job_id,
            "success": True,
        }

    async def _submit(self, request: Request) -> Response:
        body = await read_json(request)
        refused = self.refuse(request, body, lambda: self._problem(body))
        if refused is not None:
            return refused
        parent = self._video(body.get("video_id")) if body["action"] == "extend" else None
        job = self.accept(
            request,
            body,
            kind=body["action"],
            hook_url=body.get("callback_url"),
            prompt=body.get("prompt") or (parent.prompt if parent else ""),
            extra={"image_url": parent.extra["image_url"] if parent else body["image_url"], "created_at": time.time()},
        )
        if job.hook_url is not None:
            return JSONResponse({"task_id": job.job_id})
        await anyio.sleep(self.delay)  # no callback_url: AceData answers only once the video is made
        await self.deliver(job.job_id)
        return JSONResponse(self.payload(self.job(job.job_id)))

    def _problem(self, body: dict[str, Any]) -> str | None:
        action = body.get("action")
        if action not in ("generate", "extend"):
            return "action must be generate or extend"
        required = ("video_id",) if action == "extend" else ("prompt", "image_url")
        for name in required:
            if body.get(name) in (None, ""):
                return f"{name} is required"
        for name in ("prompt", "image_url", "end_image_url", "video_id", "callback_url"):
            if name in body and not isinstance(body[name], str):
                return f"{name} must be a string"
        for name, allowed in OPTIONS.items():
            if name in body and (body[name] not in allowed or type(body[name]) is not type(allowed[0])):
                return f"{name} must be one of {', '.join(map(str, allowed))}"
        if action == "extend":
            parent = self._video(body["video_id"])
            if parent is None:
                return f"video {body['video_id']} not found"
            index = body.get("video_index", 0)
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(parent.media):
                return f"video_index must be 0-{len(parent.media) - 1}"
        return None

    def _video(self, video_id: object) -> SimJob | None:
        """The finished job whose result has this `video_id`."""
        return next((job for job in self.jobs() if job.extra.get("video_id") == video_id), None)

    async def _retrieve(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.unauthorized()
        body = await read_json(request)
        if body.get("action") == "retrieve_batch":
            ids = body.get("ids")
            if not isinstance(ids, list):
                return self.error(400, "ids must be a list of task ids")
            items = [self._record(job) for job in map(self.known, ids) if job is not None]
            return JSONResponse({"items": items, "count": len(items)})
        if body.get("action") != "retrieve":
            return self.error(400, "action must be retrieve or retrieve_batch")
        job = self.known(body.get("id") or body.get("task_id"))  # the concept docs spell it task_id
        if job is None:
            return self.error(404, "task not found")
        return JSONResponse(self._record(job))

    def _record(self, job: SimJob) -> dict[str, Any]:
        record: dict[str, Any] = {"id": job.job_id, "request": job.body, "type": "videos"}
        record["created_at"] = job.extra["created_at"]
        if job.status in (SUCCEEDED, FAILED):
            record["response"] = self.payload(job)
            record["finished_at"] = job.extra.get("finished_at", time.time())
        return record
