"""A fake TTAPI that speaks its Midjourney video contract (seed 000, providers.md §2) over real HTTP.

It takes `submit` and `extend`, answers `{"status":"SUCCESS","message":"","data":{"jobId":…}}`, and calls the job's
`hookUrl` back: once while it runs (`status` ON_QUEUE, `data.progress` a string such as "50", since the seed's
progress is the string "100" and its enum says "Completeness: 0-100"; seed 000 says only "task completion or failed
notification", which does not rule progress reports out, and a third party reports them), then with the result in
the seed's "Async callback & fetch json" shape. A failed job's callback is TTAPI's failure envelope,
`{"status":"FAILED","message":<reason>,"data":null}` (providers.md §2.4-2.5: `message` "returns specific error reason
on failure"), which names no job. `GET /midjourney/video/fetch?jobId=` answers the same bodies; seed 000's heading
says GET, so a POST is answered 405 in TTAPI's envelope. The videos live on its own CDN (`/cdn/<jobId>/<i>.mp4`).
Its image API (seed 001) comes from `ImageEndpoints` (ttapi_image.py), with the same key, errors, queue and
deliveries, and its own `GET /midjourney/v1/fetch`: each fetch knows only its own API's jobs.

TTAPI's own misbehaviour is here on purpose: a wrong `TT-API-KEY` (401), a full queue (499 "Queue exhausted" while
`max_in_flight` jobs are in progress: "The max job in progressing is 10", seeds 000 and 001), and callbacks not
answered 200 delivered again (three deliveries in all, as TTAPI's founder describes).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from submitter.simulators import SAMPLE_MP4, video_bytes
from submitter.simulators.base import FAILED, SUCCEEDED, Delivery, SimJob, Submission, read_json
from submitter.simulators.ttapi_image import STATUS, ImageEndpoints

BAD_KEY = "Wrong TT-API-KEY or email is not activated."
OPTIONS = {"mode": ("fast",), "manual": ("low", "high"), "resolution": ("sd", "hd"), "bs": (1, 2, 4)}
OPTIONS_EXTEND = {"manual": ("low", "high"), "animateMode": ("auto", "manual"), "bs": (1, 2, 4)}

__all__ = ["SAMPLE_MP4", "Delivery", "SimJob", "Submission", "TTAPISimulator", "video_bytes"]


class TTAPISimulator(ImageEndpoints):
    name = "ttapi"

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/midjourney/video/submit", self._submit, methods=["POST"]),
            Route("/midjourney/video/extend", self._submit, methods=["POST"]),
            Route("/midjourney/video/fetch", self._fetch, methods=["GET", "POST"]),
            *self.image_routes(),
            Route("/midjourney/v1/fetch", self._fetch, methods=["GET", "POST"]),  # POST: 405, in TTAPI's envelope
        ]

    def authorized(self, request: Request) -> bool:
        return self.api_key is None or request.headers.get("TT-API-KEY") == self.api_key

    def error(self, status_code: int, message: str) -> Response:
        return JSONResponse({"status": "FAILED", "message": message, "data": None}, status_code=status_code)

    def unauthorized(self) -> Response:
        return self.error(401, BAD_KEY)

    def queue_full(self) -> Response:
        return self.error(499, "Queue exhausted")

    def payload(self, job: SimJob) -> dict[str, Any]:
        if job.status == FAILED:  # the documented failure envelope (providers.md §2.4-2.5): no job id
            return {"status": "FAILED", "message": job.message, "data": None}
        if job.ext == "png":
            return self.image_payload(job)
        status = STATUS.get(job.status, "ON_QUEUE")
        progress = {"SUCCESS": "100", "FAILED": "0"}.get(status, "50")
        data: dict[str, Any] = {"action": job.kind, "jobId": job.job_id, "progress": progress, "prompt": job.prompt}
        if status == "SUCCESS":
            data["quota"] = "30"
        data["videos"] = list(job.media)
        data["hookUrl"] = job.hook_url
        message = "success" if status == "SUCCESS" else ""
        return {"status": status, "message": message, "jobId": job.job_id, "data": data}

    async def _submit(self, request: Request) -> Response:
        body = await read_json(request)
        extend = request.url.path.endswith("/extend")
        refused = self.refuse(request, body, lambda: self._problem(body, extend))
        if refused is not None:
            return refused
        parent = self.job(body["jobId"]) if extend else None
        job = self.accept(
            request,
            body,
            kind="extend" if extend else "generate",
            hook_url=body.get("hookUrl"),
            prompt=parent.prompt if parent else body["prompt"],
            count=body.get("bs"),
        )
        return JSONResponse({"status": "SUCCESS", "message": "", "data": {"jobId": job.job_id}})

    def _problem(self, body: dict[str, Any], extend: bool) -> str | None:
        required = {"jobId": str, "index": int} if extend else {"prompt": str, "imageUrl": str}
        for name, kind in required.items():
            if body.get(name) in (None, ""):
                return f"{name} is required"
            if not isinstance(body[name], kind):
                return f"{name} must be a {kind.__name__}"
        if not isinstance(body.get("hookUrl", ""), str):
            return "hookUrl must be a string"
        for name, allowed in (OPTIONS_EXTEND if extend else OPTIONS).items():
            if name in body and body[name] not in allowed:
                return f"{name} must be one of {', '.join(map(str, allowed))}"
        if extend:
            parent = self.known(body["jobId"])
            if parent is None or parent.ext != "mp4":
                return "job not found"
            if parent.status != SUCCEEDED:
                return "the previous task must be in completed status"
            index = body["index"]
            if isinstance(index, bool) or not 0 <= index < len(parent.media):
                return f"index must be 0-{len(parent.media) - 1}"
        return None

    async def _fetch(self, request: Request) -> Response:
        if request.method != "GET":  # both seeds' headings: "GET {Domain}/…/fetch"
            return self.error(405, f"Request method '{request.method}' is not supported; use GET")
        if not self.authorized(request):
            return self.unauthorized()
        job_id: object = request.query_params.get("jobId")
        if job_id is None and request.url.path.startswith("/midjourney/v1/"):
            job_id = (await read_json(request)).get("jobId")  # seed 001 lists jobId under "Request Body" of its GET
        if not isinstance(job_id, str) or not job_id:
            return self.error(400, "jobId is required")
        job = self.known(job_id)
        if job is None or (job.ext == "png") != request.url.path.startswith("/midjourney/v1/"):
            return self.error(400, "job not found")
        return JSONResponse(self.payload(job))
