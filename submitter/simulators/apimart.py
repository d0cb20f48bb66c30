"""A fake APIMart that speaks its Midjourney video contract (seed 004, providers.md §5) over real HTTP.

It takes `POST /v1/midjourney/generations/video` with `Authorization: Bearer <key>`, checks the seed's rules
(`image_urls` xor `task_id`, `index` 0-3, `animate_mode=auto` needs `task_id`+`index`, `batch_size` 1/2/4, only the
listed `video_type` values, a prompt unless `task_id`), answers `{"code":200,"data":[{"status":"submitted",
"task_id":"task_…"}]}`, and `delay` seconds later POSTs the task object to `<webhook>/callback`, bare as the docs'
example shows, or wrapped in `{"code":200,"data":…}` with `wrap_callbacks=True`. `GET /v1/tasks/{id}` answers the
wrapped form. A job has `batch_size` videos (default 1) on its own CDN.

APIMart's habits are here on purpose: its error envelope `{"error":{"code","message","param","type"}}` (401 with an
empty code and type `apimart_error`, as observed), 429 while `max_in_flight` jobs are running (APIMart states no
concurrency limit, only a per-minute cap answered 429), no progress callbacks (only terminal states are pushed), and
a callback answered 4xx is dropped while no answer or a 5xx is tried again, three more times.

Task ids are `task_` + the base simulator's job id; `job()`, `known()` and `deliver()` take either form. A task id
can also name an imagine: `add_imagine()` registers a finished one with four tiles, so a test can animate it.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from submitter.simulators.base import FAILED, SUCCEEDED, SimJob, Simulator, read_json

PREFIX = "task_"
MAX_FRAME_BYTES = 12 * 1024 * 1024
VIDEO_TYPES = ("vid_1.1_i2v_480", "vid_1.1_i2v_720", "vid_1.1_i2v_start_end_480", "vid_1.1_i2v_start_end_720")
OPTIONS = {"motion": ("low", "high"), "animate_mode": ("manual", "auto"), "batch_size": (1, 2, 4)}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "apimart_error",
    402: "payment_required",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "bad_gateway",
}
EXPIRES_AFTER = 24 * 3600

__all__ = ["APIMartSimulator"]


class APIMartSimulator(Simulator):
    name = "apimart"
    max_deliveries = 4  # the first POST and three retries (~10 s, 30 s, 60 s; here `delay` apart)
    sends_progress = (
        False  # providers.md §5.4: "Only terminal states pushed (completed/failed); nothing while processing"
    )

    def __init__(self, *, wrap_callbacks: bool = False, videos_per_job: int = 1, **options: Any) -> None:
        super().__init__(videos_per_job=videos_per_job, **options)
        self.wrap_callbacks = wrap_callbacks
        self.imagines: dict[str, str] = {}  # task id -> prompt, each a finished imagine with 4 tiles

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/midjourney/generations/video", self._submit, methods=["POST"]),
            Route("/v1/tasks/{task_id}", self._fetch, methods=["GET"]),
        ]

    def authorized(self, request: Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def error(self, status_code: int, message: str) -> Response:
        kind = ERROR_TYPES.get(status_code, "apimart_error")
        envelope = {
            "code": "" if status_code == 401 else kind,
            "message": f"{message} (request id: {uuid.uuid4().hex[:24]})",
            "param": "",
            "type": kind,
        }
        return JSONResponse({"error": envelope}, status_code=status_code)

    def unauthorized(self) -> Response:
        return self.error(401, "invalid API key")

    def queue_full(self) -> Response:
        return self.error(429, "too many requests, please retry later")

    def redeliver(self, status_code: int | None) -> bool:
        return status_code is None or status_code >= 500  # a 4xx means "bad address": APIMart gives up

    def delivery_url(self, job: SimJob) -> str:
        assert job.hook_url is not None
        return job.hook_url.rstrip("/") + "/callback"  # `https://x/api/` -> `https://x/api/callback`

    def finished(self, job: SimJob) -> dict[str, Any]:
        return {"completed": int(time.time())}

    def payload(self, job: SimJob) -> dict[str, Any]:
        task = self.task(job)
        return {"code": 200, "data": task} if self.wrap_callbacks else task

    def task(self, job: SimJob) -> dict[str, Any]:
        """The task object `GET /v1/tasks/{id}` answers inside `data`, and the callback carries."""
        task: dict[str, Any] = {"id": PREFIX + job.job_id, "status": "processing", "progress": 50}
        task["created"] = job.extra["created"]
        completed = job.extra.get("completed", job.extra["created"])
        if job.status == FAILED:  # providers.md §5.4, the English webhook page's failure example
            error = {"message": job.message, "type": "task_failed", "param": "", "code": "task_failed"}
            task |= {"status": "failed", "progress": 100, "completed": completed, "error": error}
        elif job.status == SUCCEEDED:
            videos = [{"url": [url], "expires_at": completed + EXPIRES_AFTER} for url in job.media]
            task |= {"status": "completed", "progress": 100, "completed": completed, "actual_time": 1}
            task |= {"cost": 0.2 * job.count, "credits_cost": 2.0 * job.count, "result": {"videos": videos}}
        return task

    def job(self, job_id: str) -> SimJob:
        return super().job(job_id.removeprefix(PREFIX))

    async def deliver(self, job_id: str, *, times: int = 1, concurrently: bool = False) -> list[int | None]:
        return await super().deliver(job_id.removeprefix(PREFIX), times=times, concurrently=concurrently)

    def known(self, job_id: object) -> SimJob | None:
        return super().known(job_id.removeprefix(PREFIX) if isinstance(job_id, str) else job_id)

    def add_imagine(self, task_id: str | None = None, *, prompt: str = "a lighthouse at dusk --v 7") -> str:
        """Register a finished APIMart imagine (four tiles) that a video request may animate; its task id."""
        task_id = task_id or PREFIX + uuid.uuid4().hex[:26].upper()
        self.imagines[task_id] = prompt
        return task_id

    async def _submit(self, request: Request) -> Response:
        body = await read_json(request)
        refused = self.refuse(request, body, lambda: self._problem(body))
        if refused is not None:
            return refused
        end = bool(body.get("end_url"))
        video_type = body.get("video_type") or "vid_1.1_i2v_480"
        if end and "start_end" not in video_type:  # "when set, video_type auto-upgrades to start_end_*"
            video_type = video_type.replace("i2v_", "i2v_start_end_")
        job = self.accept(
            request,
            body,
            kind="video",
            hook_url=body.get("webhook"),
            prompt=body.get("prompt") or self.imagines.get(body.get("task_id") or "", ""),
            count=body.get("batch_size"),
            extra={"created": int(time.time()), "video_type": video_type},
        )
        return JSONResponse({"code": 200, "data": [{"status": "submitted", "task_id": PREFIX + job.job_id}]})

    def _problem(self, body: dict[str, Any]) -> str | None:
        image_urls, task_id, index = body.get("image_urls"), body.get("task_id"), body.get("index")
        if image_urls is None and task_id is None:
            return "text-to-video is not supported: image_urls or task_id is required"
        if image_urls is not None and task_id is not None:
            return "image_urls and task_id cannot be used together"
        if image_urls is not None:
            if not isinstance(image_urls, list) or len(image_urls) != 1 or not _is_text(image_urls[0]):
                return "image_urls must hold exactly one image URL (the first frame)"
        elif not _is_text(task_id) or task_id not in self.imagines:
            return f"task_id {task_id!r}: no finished imagine task"
        if index is not None and (task_id is None or not isinstance(index, int) or not 0 <= index <= 3):
            return "index must be 0-3, together with task_id"
        if not isinstance(body.get("prompt", ""), str) or (task_id is None and not body.get("prompt")):
            return "prompt is required when task_id is not given"
        for name, allowed in OPTIONS.items():
            if name in body and (isinstance(body[name], bool) or body[name] not in allowed):
                return f"{name} must be one of {', '.join(map(str, allowed))}"
        if body.get("animate_mode") == "auto" and (task_id is None or index is None):
            return "animate_mode=auto requires task_id and index"
        if "video_type" in body and body["video_type"] not in VIDEO_TYPES:
            return "only the listed video_type values are supported; extend-style values are not accepted"
        for name in ("end_url", "webhook"):
            if name in body and not _is_text(body[name]):
                return f"{name} must be a URL"
        for url in [*(image_urls or []), body.get("end_url")]:
            if _data_size(url) > MAX_FRAME_BYTES:
                return "each frame must be at most 12 MiB"
        return None

    async def _fetch(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.unauthorized()
        job = self.known(request.path_params["task_id"])
        if job is None:
            return self.error(404, "task not found")
        return JSONResponse({"code": 200, "data": self.task(job)})


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _data_size(url: object) -> int:
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        return 0
    try:
        return len(base64.b64decode(url.partition(";base64,")[2]))
    except (binascii.Error, ValueError):
        return 0
