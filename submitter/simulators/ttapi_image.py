"""TTAPI's Midjourney image endpoints (seed 001), the half of `TTAPISimulator` that makes pictures.

`/midjourney/v1/imagine`, `/action`, `/seed`, `/blend`, `/describe` and `/inpaint` answer like the video API
(`{"status":"SUCCESS","message":"","data":{"jobId":…}}`, or TTAPI's `{"status":"FAILED","message":…}` with 400) and
call back in the seed's "Async callback return json structure": `status`, `jobId`, `message`, and `data` with
`actions`, `jobId`, `progress`, `prompt`, `discordImage`, `cdnImage`, `hookUrl`, `components`, `seed`, `images`.

What a finished job holds, on the simulator's CDN as PNGs:
- a grid (imagine, blend, inpaint, variationN and the other grid buttons): four tiles `0-3.png` in `images`, the
  grid itself `4.png` in `cdnImage`, components U1-U4 and V1-V4;
- an upscale (upsampleN, upscale_*): one image, in `cdnImage` only (`images` is "only valid with the imagine
  command"), and the buttons Midjourney shows under an upscaled image;
- seed and describe: no image (their one CDN file is never named); the seed in `seed`, or four prompts in `prompt`.
`discordImage` always names a Discord URL nobody serves: Discord's links expire, and nothing should need them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from submitter.simulators.base import FAILED, SUCCEEDED, SimJob, Simulator, read_json

ENDPOINTS = ("imagine", "action", "seed", "blend", "describe", "inpaint")
STATUS = {SUCCEEDED: "SUCCESS", FAILED: "FAILED"}  # anything else: ON_QUEUE
MODES = ("fast", "relax", "turbo")
DIMENSIONS = ("PORTRAIT", "SQUARE", "LANDSCAPE")
TILES = 4
GRID_BUTTONS = [f"upsample{i}" for i in range(1, 5)] + [f"variation{i}" for i in range(1, 5)]
UPSCALED_BUTTONS = ["high_variation", "low_variation", "zoom_out_2", "zoom_out_1_5"]
UPSCALED_BUTTONS += ["pan_left", "pan_right", "pan_up", "pan_down", "upscale_subtle", "upscale_creative"]
NO_IMAGE = ("seed", "describe")
DESCRIBED = "\n\n".join(f"{i}\ufe0f\u20e3 a described picture, take {i} --ar 1:1" for i in range(1, 5))
DISCORD = "https://cdn.discordapp.com/attachments/1107938555931656214/1176340921227423844"


def single_image(kind: str) -> bool:
    return kind.startswith(("upsample", "upscale", "redo_upscale"))


class ImageEndpoints(Simulator):
    """TTAPI's image API; the subclass supplies `authorized`, `error` and the routing of `payload`."""

    def image_routes(self) -> list[BaseRoute]:
        return [Route(f"/midjourney/v1/{name}", self._image_submit, methods=["POST"]) for name in ENDPOINTS]

    def image_payload(self, job: SimJob) -> dict[str, Any]:
        status = STATUS.get(job.status, "ON_QUEUE")
        progress = {"SUCCESS": "100", "FAILED": "0"}.get(status, "50")
        media = list(job.media) if status == "SUCCESS" and job.kind not in NO_IMAGE else []
        data: dict[str, Any] = {
            "actions": job.kind,
            "jobId": job.job_id,
            "progress": progress,
            "prompt": job.extra.get("described", job.prompt),
            "discordImage": f"{DISCORD}/{job.job_id}.png" if media else "",
            "cdnImage": media[-1] if media else "",
            "hookUrl": job.hook_url or "",
            "components": list(job.extra.get("components", [])),
            "seed": job.extra.get("seed", ""),
            "images": media[:TILES] if len(media) > 1 else [],
        }
        message = "success" if status == "SUCCESS" else ""
        return {"status": status, "jobId": job.job_id, "message": message, "data": data}

    def finished(self, job: SimJob) -> dict[str, Any]:
        if job.ext != "png":
            return {}
        if job.kind == "seed":
            return {"seed": str(int(hashlib.sha256(job.job_id.encode()).hexdigest()[:8], 16))}
        if job.kind == "describe":
            return {"described": DESCRIBED}
        if job.kind.startswith("upsample"):
            return {"components": UPSCALED_BUTTONS}
        return {"components": [] if single_image(job.kind) else GRID_BUTTONS}

    async def _image_submit(self, request: Request) -> Response:
        body = await read_json(request)
        endpoint = request.url.path.rsplit("/", 1)[1]
        refused = self.refuse(request, body, lambda: self._image_problem(endpoint, body))
        if refused is not None:
            return refused
        parent = self.known(body.get("jobId", body.get("Jobid")))
        kind = body["action"] if endpoint == "action" else endpoint
        if endpoint == "imagine":
            prompt = body["prompt"]
        elif parent is not None:
            prompt = body.get("prompt") or parent.prompt
        else:
            prompt = f"/{endpoint}"
        count = 0 if kind in NO_IMAGE else 1 if single_image(kind) else TILES + 1  # a grid: four tiles, then the grid
        job = self.accept(request, body, kind=kind, hook_url=body.get("hookUrl"), prompt=prompt, count=count, ext="png")
        return JSONResponse({"status": "SUCCESS", "message": "", "data": {"jobId": job.job_id}})

    def _image_problem(self, endpoint: str, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("hookUrl", ""), str):
            return "hookUrl must be a string"
        timeout = body.get("timeout")
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0):
            return "timeout must be a positive integer"
        if "mode" in body and body["mode"] not in MODES:
            return f"mode must be one of {', '.join(MODES)}"
        if "getUImages" in body and not isinstance(body["getUImages"], bool):
            return "getUImages must be true or false"
        if endpoint == "imagine":
            prompt = body.get("prompt")
            return None if isinstance(prompt, str) and prompt.strip() else "prompt is required"
        if endpoint == "blend":
            images = body.get("imgBase64Array")
            if not isinstance(images, list) or not 2 <= len(images) <= 5:
                return "imgBase64Array must hold 2-5 images"
            if not all(map(_is_base64, images)):
                return "imgBase64Array must hold base64-encoded images"
            if body.get("dimensions", "SQUARE") not in DIMENSIONS:
                return f"dimensions must be one of {', '.join(DIMENSIONS)}"
            return None
        if endpoint == "describe":
            return None if _is_base64(body.get("base64")) else "base64 is required: a base64-encoded image"
        return self._parent_problem(endpoint, body)

    def _parent_problem(self, endpoint: str, body: dict[str, Any]) -> str | None:
        job_id = body.get("jobId", body.get("Jobid"))  # inpaint's table spells it Jobid
        if not isinstance(job_id, str) or not job_id:
            return "jobId is required"
        if endpoint == "action" and not isinstance(body.get("action"), str):
            return "action is required"
        if endpoint == "inpaint":
            if not _is_base64(body.get("mask")):
                return "mask is required: a base64-encoded image"
            if not isinstance(body.get("prompt", ""), str):
                return "prompt must be a string"
        parent = self.known(job_id)
        if parent is None or parent.ext != "png":
            return "job not found"
        if parent.status != SUCCEEDED:
            return "the previous task must be in completed status"
        if endpoint == "action" and body["action"] not in parent.extra.get("components", []):
            offered = ", ".join(parent.extra.get("components", [])) or "none"
            return f"action {body['action']} is not available for this job; its components: {offered}"
        if endpoint != "action" and parent.kind in NO_IMAGE:
            return f"job {job_id} has no image"
        return None


def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if value.startswith("data:"):
        value = value.partition(";base64,")[2]
    try:
        return bool(value) and bool(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return False
