"""TTAPI's Midjourney video API (seed 000) and image API (seed 001, in `ttapi_image`), as pure functions.

Wire facts (seed 000, providers.md §2): header `TT-API-KEY`; generate `POST /midjourney/video/submit` with `prompt`,
`imageUrl`, `mode`, `manual` (motion), `hookUrl`; extend `POST /midjourney/video/extend` with the parent's `jobId`
and `index`, and no prompt (the seed's extend takes none: `validate_params` refuses one). The submit answer names
the job in `data.jobId` (seed) or `data.job_id` (newer docs). The callback has the fetch endpoint's shape: top-level
`status` (PENDING_QUEUE, ON_QUEUE, SUCCESS, FAILED; anything unknown is read as still running), `jobId`, and
`data.videos`; `data.progress` is a string ("100", or "45.5" mid-job: read as a whole percent, rounded down). At
most 10 jobs in progress per account, images and videos alike (both seeds say so).

Both APIs call back to the same route with the same envelope; `data.action` (video) or `data.actions` (image,
seed 001) tells them apart. A video job that succeeds without videos failed; an image job's media are read by
`ttapi_image.image_urls`, and a seed or describe job succeeds with none.

Fetching: the video API answers at `GET /midjourney/video/fetch?jobId=`, the image API at `/midjourney/v1/fetch`,
and a bare TTAPI job id does not say which API made it, so `fetch_request` takes the job and picks by its action.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from storage import CallbackResult, Job, JobStatus
from submitter.providers import ttapi_image
from submitter.providers.base import (
    InvalidParams,
    MalformedCallback,
    Provider,
    ProviderError,
    ProviderRequest,
    Rejection,
    about_the_job,
    classify_status,
    error_message,
    fetch_id,
    load_json_object,
    named_id,
    reported_costs,
    submitted_id,
    url_list,
)

MOTIONS = ("low", "high")
RESOLUTIONS = {"480p": "sd", "720p": "hd", "sd": "sd", "hd": "hd"}
BATCH_SIZES = (1, 2, 4)
VIDEO_ACTIONS = ("generate", "extend")
VIDEO_FETCH_PATH = "/midjourney/video/fetch"
COST_FIELDS = {"quota": "quota"}  # TTAPI bills in its own quota units (seed 001: a v6 imagine costs 1.5x the quota)


def validate_params(action: str, params: Mapping[str, Any]) -> None:
    if action not in VIDEO_ACTIONS:
        if not ttapi_image.is_image_action(action):
            known = ", ".join(sorted(ttapi_image.ACTIONS))
            raise InvalidParams(
                f"ttapi cannot {action!r}: it supports generate, extend, {known}, "
                "and any component a parent result lists (lower-case letters, digits, _)"
            )
        ttapi_image.validate_params(action, params)
        return
    motion = params.get("motion")
    if motion is not None and motion not in MOTIONS:
        raise InvalidParams(f"motion must be 'low' or 'high', got {motion!r}")
    resolution = params.get("resolution")
    if resolution is not None and resolution not in RESOLUTIONS:
        raise InvalidParams(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    batch_size = params.get("batch_size")
    if batch_size is not None and batch_size not in BATCH_SIZES:
        raise InvalidParams(f"batch_size must be 1, 2 or 4, got {batch_size!r}")
    if action == "extend":
        index = params.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 3:
            raise InvalidParams(f"index must be 0-3, got {index!r}")
        if params.get("prompt") is not None:  # seed 000's extend body has jobId, index, manual, animateMode only
            raise InvalidParams("TTAPI extends take no prompt")


def build_request(job: Job, parent: Job | None, api_key: str, hook_url: str) -> ProviderRequest:
    if job.action not in VIDEO_ACTIONS:
        return ttapi_image.build_request(job, parent, api_key, hook_url)
    params = job.params
    headers = {"TT-API-KEY": api_key}
    if job.action == "extend":
        if parent is None or not parent.provider_job_id:
            raise InvalidParams("extend needs a parent job that TTAPI has accepted (it has no TTAPI jobId)")
        body: dict[str, Any] = {"jobId": parent.provider_job_id, "index": params["index"], "hookUrl": hook_url}
        if params.get("motion"):
            body["manual"] = params["motion"]
        return ProviderRequest("POST", "/midjourney/video/extend", headers, body)
    body = {"prompt": params["prompt"], "imageUrl": params["image_url"], "mode": "fast", "hookUrl": hook_url}
    if params.get("motion"):
        body["manual"] = params["motion"]
    if params.get("end_image_url"):
        body["endingUrl"] = params["end_image_url"]
    if params.get("resolution"):
        body["resolution"] = RESOLUTIONS[params["resolution"]]
    if params.get("batch_size"):
        body["bs"] = params["batch_size"]
    return ProviderRequest("POST", "/midjourney/video/submit", headers, body)


def parse_submit_response(status_code: int, body: bytes) -> str:
    rejection = classify_status(status_code)
    if rejection is not None:
        raise ProviderError(
            rejection, f"ttapi: HTTP {status_code}: {error_message(body, 'message')}", status_code=status_code
        )
    try:
        answer = load_json_object(body, "ttapi submit answer")
    except MalformedCallback as exc:
        raise ProviderError(Rejection.UNKNOWN, str(exc), status_code=status_code) from None
    if answer.get("status") == "FAILED":
        raise ProviderError(Rejection.FATAL, f"ttapi: {answer.get('message') or 'FAILED'}", status_code=status_code)
    data = answer.get("data")
    job_id = data.get("jobId") or data.get("job_id") if isinstance(data, dict) else None
    return submitted_id(job_id, f"ttapi answered {status_code} without a job id", status_code)


def parse_callback(body: bytes, headers: Mapping[str, str]) -> CallbackResult:
    payload = load_json_object(body, "ttapi callback")
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    job_id = named_id(payload.get("jobId") or data.get("jobId") or data.get("job_id"))
    status = payload.get("status")
    if not isinstance(status, str):
        raise MalformedCallback("ttapi callback has no status")
    progress = _progress(data.get("progress"))
    # What the job cost: `data.quota`, a string ("30" in seed 000's example), on whichever final report carries it.
    costs = reported_costs(data, COST_FIELDS)
    if status == "FAILED":
        message = payload.get("message") or data.get("message") or "ttapi reported FAILED"
        return CallbackResult(job_id, JobStatus.FAILED, progress, error=str(message), costs=costs)
    if status != "SUCCESS":
        return CallbackResult(job_id, JobStatus.RUNNING, progress)
    action = data.get("action") or data.get("actions")  # the image API's callback says "actions"
    action = action if isinstance(action, str) and action else None
    kept = {key: data[key] for key in ("quota", "prompt") if key in data}
    if action is not None:
        kept["action"] = action
    video_job = action in VIDEO_ACTIONS if action else "videos" in data
    if video_job or data.get("videos"):  # whatever made videos is read for its videos
        media = url_list(data.get("videos") or [], "ttapi callback: data.videos must be a list of URLs")
        if not media:
            error = "ttapi reported SUCCESS without any video"
            return CallbackResult(job_id, JobStatus.FAILED, progress, error=error, costs=costs)
    else:
        media = list(ttapi_image.image_urls(data))
        kept |= ttapi_image.image_result(data, action)
        if "prompts" in kept:  # a describe's prompt field is its four prompts, kept once, as a list
            kept.pop("prompt", None)
    return CallbackResult(job_id, JobStatus.SUCCEEDED, progress, tuple(media), result=kept, costs=costs)


def fetch_request(job: Job, api_key: str) -> ProviderRequest:
    """The fetch of the API that made `job`: video jobs at the video fetch, image jobs at /midjourney/v1/fetch."""
    path = VIDEO_FETCH_PATH if job.action in VIDEO_ACTIONS else ttapi_image.FETCH_PATH
    return ProviderRequest("GET", path, {"TT-API-KEY": api_key}, params={"jobId": fetch_id(job)})


def fetch_fallback(job: Job, api_key: str) -> ProviderRequest:
    """The same fetch as a POST with a JSON body, as seed 000's example sends it: asked when the GET answers 4xx."""
    path = VIDEO_FETCH_PATH if job.action in VIDEO_ACTIONS else ttapi_image.FETCH_PATH
    return ProviderRequest("POST", path, {"TT-API-KEY": api_key}, {"jobId": fetch_id(job)})


def parse_fetch_response(status_code: int, body: bytes) -> CallbackResult:
    rejection = classify_status(status_code)
    if rejection is not None:
        raise ProviderError(
            rejection, f"ttapi fetch: HTTP {status_code}: {error_message(body, 'message')}", status_code=status_code
        )
    try:
        return about_the_job(parse_callback(body, {}), "ttapi fetch answer", status_code)
    except MalformedCallback as exc:
        reason = error_message(body, "message")
        raise ProviderError(Rejection.UNKNOWN, f"ttapi fetch: {exc} ({reason})", status_code=status_code) from None


def _progress(value: object) -> int | None:
    # A whole percent, rounded down, since the column is an INTEGER (TTAPI sends a string: "100", or mid-job "45.5").
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = float(str(value).strip().rstrip("%"))
    except ValueError:
        return None
    return max(0, min(100, math.floor(number))) if math.isfinite(number) else None


PROVIDER = Provider(
    name="ttapi",
    default_base_url="https://api.ttapi.io",
    max_in_flight=10,
    actions=frozenset(VIDEO_ACTIONS) | ttapi_image.ACTIONS,
    build_request=build_request,
    parse_submit_response=parse_submit_response,
    parse_callback=parse_callback,
    validate_params=validate_params,
    fetch_request=fetch_request,
    parse_fetch_response=parse_fetch_response,
    fetch_fallback=fetch_fallback,
    component_actions=True,
)
