"""A fake WaveSpeed AI that speaks its Midjourney image-to-video contract (seed 003, providers.md §4) over real HTTP.

`POST /api/v3/midjourney/image-to-video?webhook=<url>` takes `image` and `prompt` (required, seed 003) with
`resolution`, `motion` and the seed's Midjourney knobs, checked against the seed's table; fields it does not know are
dropped, as WaveSpeed drops undeclared fields. It answers the envelope `{"code":200,"message":"success","data":
{prediction}}` with `status` "created" and empty `outputs`, and POSTs the bare prediction object to the `webhook`
URL: once while it runs (`status` "processing"; the docs say the webhook fires "when complete (or failed)", which
names the events that carry a result but does not say no other is sent, so one progress report is sent, and
`sends_progress = False` is the switch if a live key shows otherwise), then with `status` completed or failed
(`error` the reason, `outputs` empty: providers.md §4.4).

Each callback is signed as WaveSpeed signs: `webhook-id`, `webhook-timestamp` and `webhook-signature: v3,<hex
HMAC-SHA256>` keyed by `webhook_secret` without its `whsec_` prefix, as text. The `webhook-id` names the message,
not the attempt: a redelivery keeps it (Standard Webhooks: "the same when the same webhook is being resent") and is
signed again with a fresh timestamp. The signature is computed here the way WaveSpeed's own Python sample does,
independently of submitter/providers/wavespeed.py, so a test of one checks the other.
`GET /api/v3/webhook/secret` answers that secret; `GET /api/v3/predictions/{id}/result` (and `/predictions/{id}`)
answer the prediction in the envelope. Videos live on its own CDN (`/cdn/<id>/<i>.mp4`).

One video per job by default: the docs describe "a ~5 s clip" priced per video, and the newest page says only
"video URL(s)". Concurrency as WaveSpeed's account levels describe it: jobs over `max_in_flight` are taken and wait
("excess concurrent tasks wait"), staying `created` until a slot frees. Misbehaviour on purpose: a wrong Bearer key
(401), and a callback not answered 2xx delivered again, four deliveries in all (a third party reports "3 retries";
WaveSpeed documents none).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from submitter.simulators.base import FAILED, SUCCEEDED, Faults, SimJob, Simulator, read_json

MODEL = "midjourney/image-to-video"
STATUS = {SUCCEEDED: "completed", FAILED: "failed"}  # anything else: processing
OPTIONS: dict[str, tuple[object, ...]] = {
    "resolution": ("480p", "720p"),
    "motion": ("low", "high"),
    "aspect_ratio": ("1:1", "4:3", "3:4", "2:3", "16:9", "1:2"),
    "quality": (0.25, 0.5, 1, 2),
    "version": ("6", "6.1", "7"),
    "niji": ("close", "5", "6"),
    "enable_base64_output": (True, False),
}
RANGES = {"stylize": (0, 1000), "chaos": (0, 100), "weird": (0, 3000), "seed": (-1, 2147483647)}


def new_webhook_secret() -> str:
    # Like a Standard Webhooks secret, the part after `whsec_` is valid base64, so a verifier that decodes it
    # (the wrong thing for WaveSpeed) gets a key and a wrong answer rather than an error.
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def message_id(job: SimJob) -> str:
    """The `webhook-id` of the job's message in its current state: the same for every (re)delivery of it."""
    state = STATUS.get(job.status, "processing")
    return "msg_" + hashlib.sha256(f"{job.job_id}/{state}".encode()).hexdigest()[:27]


class WaveSpeedSimulator(Simulator):
    name = "wavespeed"
    max_deliveries = 4
    excess_waits = True  # providers.md §4.5: "excess concurrent tasks wait"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        webhook_secret: str | None = None,
        delay: float = 0.05,
        auto_deliver: bool = True,
        max_in_flight: int = 10,
        videos_per_job: int = 1,
        http: httpx.AsyncClient | None = None,
        state_dir: Path | None = None,
        faults: Faults | None = None,
        progress_callbacks: bool | None = None,
    ) -> None:
        self.webhook_secret = webhook_secret or new_webhook_secret()
        super().__init__(
            api_key=api_key,
            delay=delay,
            auto_deliver=auto_deliver,
            max_in_flight=max_in_flight,
            videos_per_job=videos_per_job,
            http=http,
            state_dir=state_dir,
            faults=faults,
            progress_callbacks=progress_callbacks,
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v3/midjourney/image-to-video", self._submit, methods=["POST"]),
            Route("/api/v3/webhook/secret", self._secret, methods=["GET"]),
            Route("/api/v3/predictions/{job_id}/result", self._result, methods=["GET"]),
            Route("/api/v3/predictions/{job_id}", self._result, methods=["GET"]),
        ]

    def authorized(self, request: Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def error(self, status_code: int, message: str) -> Response:
        return JSONResponse({"code": status_code, "message": message, "data": None}, status_code=status_code)

    def unauthorized(self) -> Response:
        return self.error(401, "Unauthorized: invalid or missing API key")

    def redeliver(self, status_code: int | None) -> bool:
        return status_code is None or not 200 <= status_code < 300

    def payload(self, job: SimJob) -> dict[str, Any]:
        status = STATUS.get(job.status, "created" if self.waiting(job.job_id) else "processing")
        took = 0 if status in ("created", "processing") else int(self.delay * 1000)
        return {
            "id": job.job_id,
            "model": MODEL,
            "outputs": list(job.media),
            "urls": {"get": f"{job.base_url}/api/v3/predictions/{job.job_id}/result"},
            "has_nsfw_contents": [False] * len(job.media),
            "status": status,
            "created_at": job.extra["created_at"],
            "error": job.message if status == "failed" else "",
            "executionTime": took,
            "timings": {"inference": took},
        }

    def delivery_headers(self, job: SimJob, body: bytes) -> dict[str, str]:
        webhook_id, timestamp = message_id(job), str(int(time.time()))
        key = self.webhook_secret.removeprefix("whsec_").encode()
        content = f"{webhook_id}.{timestamp}.{body.decode()}".encode()
        signature = hmac.new(key, content, hashlib.sha256).hexdigest()
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": f"v3,{signature}",
        }

    async def _submit(self, request: Request) -> Response:
        body = await read_json(request)
        refused = self.refuse(request, body, lambda: self._problem(body))
        if refused is not None:
            return refused
        created_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        job = self.accept(
            request,
            body,
            kind="image-to-video",
            hook_url=request.query_params.get("webhook"),
            prompt=body["prompt"],
            extra={"created_at": created_at},
        )
        prediction = self.payload(job) | {"status": "created", "executionTime": 0, "timings": {"inference": 0}}
        return self._envelope(prediction)

    def _problem(self, body: dict[str, Any]) -> str | None:
        for name in ("image", "prompt"):
            if body.get(name) in (None, ""):
                return f"{name} is required"
            if not isinstance(body[name], str):
                return f"{name} must be a string"
        for name, allowed in OPTIONS.items():
            value = body.get(name)  # a boolean only where the seed says boolean (in Python, True == 1)
            if name in body and (isinstance(value, bool) != isinstance(allowed[0], bool) or value not in allowed):
                return f"{name} must be one of {', '.join(map(str, allowed))}"
        for name, (low, high) in RANGES.items():
            value = body.get(name)
            if name in body and (type(value) is not int or not low <= value <= high):
                return f"{name} must be an integer in {low} ~ {high}"
        return None

    async def _secret(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.unauthorized()
        return JSONResponse({"code": 200, "data": {"secret": self.webhook_secret}})  # the shape observed in use

    async def _result(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.unauthorized()
        job = self.known(request.path_params["job_id"])
        if job is None:
            return self.error(404, "prediction not found")
        return self._envelope(self.payload(job))

    def _envelope(self, prediction: dict[str, Any]) -> Response:
        return JSONResponse({"code": 200, "message": "success", "data": prediction})
