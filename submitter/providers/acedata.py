"""AceData Cloud's Midjourney Videos API (seed 002, providers.md §3), as pure functions.

Wire facts: one endpoint, `POST /midjourney/videos`, with `authorization: Bearer <token>` and JSON in and out. The
body's `action` is `generate` (`prompt`, `image_url`, optional `end_image_url`, `mode` fast|turbo, `resolution`
480p|720p, `loop`) or `extend`, which names the parent's **`video_id`** (a result field, not its task id),
`video_index` (0-based) and a `prompt` ("you must fill in the prompt": `validate_params` requires one, and the API
and the rules record the parent's when none is given, so the job shows what was sent). With `callback_url` the call
answers at once with `{"task_id": …}` (seed) or `{"success": true, "task_id": …}` (the concept docs; the SDK also
reads `data.task_id`); without it the call blocks for the whole generation, which is why we always send it.

The callback is the seed's result body (`success: true`, `task_id`, `video_id`, `video_urls`, `image_url` — the
cover — and its size, `progress`) or `{"success": false, "task_id", "error": {"code", "message"}}`. It is sent once
the task is finished and carries no signature ("no signature header"); our hook URL's token is the only guard. A
body with a task id but no `success` would be a progress report, which AceData does not document: read as running.

Refusals are `{"success": false, "error": {"code", "message"}, "trace_id"}` with HTTP 400/401/403 (fatal: bad
parameters, bad token, `used_up` credit, moderation) or 429/500/504 (retried). The fetch endpoint,
`POST /midjourney/tasks` `{"action": "retrieve", "id": …}`, answers the task record `{id, request, response,
created_at, finished_at?}` with no status field: it is done once `finished_at` is set, and `response` then has the
callback's shape.

AceData publishes no concurrency limit (only 429 `too_many_requests`), so `max_in_flight` is our own choice: 10,
TTAPI's documented figure for the same upstream work, low enough to stay clear of the rate limit.

Neither the callback nor the task record says what the task cost (AceData bills on its platform's usage pages), so
AceData jobs carry no cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from storage import CallbackResult, Job, JobStatus
from submitter.providers.base import (
    InvalidParams,
    MalformedCallback,
    Provider,
    ProviderError,
    ProviderRequest,
    Rejection,
    classify_status,
    fetch_id,
    load_json_object,
    named_id,
    submitted_id,
    url_list,
)

MODES = ("fast", "turbo")
RESOLUTIONS = ("480p", "720p")
OPTIONS = {"mode": MODES}
VIDEOS_PER_JOB = 4  # every result has four `video_urls`
KEPT = ("video_id", "image_url", "image_width", "image_height")  # video_id: what an extend names


def validate_params(action: str, params: Mapping[str, Any]) -> None:
    if action not in ("generate", "extend"):
        raise InvalidParams(f"acedata cannot {action!r}: it supports generate and extend")
    if action == "generate":
        for name in ("prompt", "image_url"):  # AceData makes videos from an image only
            if not isinstance(params.get(name), str) or not params[name]:
                raise InvalidParams(f"{name} is required to generate, got {params.get(name)!r}")
    else:
        index = params.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < VIDEOS_PER_JOB:
            raise InvalidParams(f"index must be 0-{VIDEOS_PER_JOB - 1}, got {index!r}")
    for name in ("prompt", "end_image_url"):
        if params.get(name) is not None and not isinstance(params[name], str):
            raise InvalidParams(f"{name} must be a string, got {params[name]!r}")
    if params.get("motion") is not None:
        raise InvalidParams("acedata has no motion setting: leave motion out")
    if params.get("resolution") not in (None, *RESOLUTIONS):
        raise InvalidParams(f"resolution must be '480p' or '720p', got {params['resolution']!r}")
    if params.get("batch_size") not in (None, VIDEOS_PER_JOB):
        raise InvalidParams(
            f"acedata always makes 4 videos: batch_size must be 4 or left out, got {params['batch_size']!r}"
        )
    if params.get("loop") is not None and not isinstance(params["loop"], bool):
        raise InvalidParams(f"loop must be true or false, got {params['loop']!r}")
    options = params.get("options") or {}
    if not isinstance(options, Mapping):
        raise InvalidParams(f"options must be an object, got {options!r}")
    for name, value in options.items():
        if name not in OPTIONS:
            raise InvalidParams(f"options.{name}: acedata takes only options.{', options.'.join(OPTIONS)}")
        if value not in OPTIONS[name]:
            raise InvalidParams(f"options.{name} must be one of {', '.join(OPTIONS[name])}, got {value!r}")
    # Last, so that a rule's other mistake (a motion) is the one reported: the extend must name its prompt (seed 002:
    # "you must fill in the prompt"); the API and the rules carry on the parent's when none is given.
    if action == "extend" and (not isinstance(params.get("prompt"), str) or not params["prompt"].strip()):
        raise InvalidParams("extend needs a prompt (AceData requires one); give prompt, or extend a job that has one")


def _headers(api_key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}", "accept": "application/json", "content-type": "application/json"}


def build_request(job: Job, parent: Job | None, api_key: str, hook_url: str) -> ProviderRequest:
    params = job.params
    body: dict[str, Any] = {"action": job.action}
    if job.action == "extend":
        video_id = parent.result.get("video_id") if parent is not None else None
        if not isinstance(video_id, str) or not video_id:
            raise InvalidParams("extend needs a parent job whose AceData result has a video_id")
        body |= {"video_id": video_id, "video_index": params["index"]}
        if params.get("prompt"):
            body["prompt"] = params["prompt"]
    else:
        body |= {"prompt": params["prompt"], "image_url": params["image_url"]}
        if params.get("end_image_url"):
            body["end_image_url"] = params["end_image_url"]
    body["mode"] = (params.get("options") or {}).get("mode", "fast")
    if params.get("resolution"):
        body["resolution"] = params["resolution"]
    if params.get("loop") is not None:
        body["loop"] = params["loop"]
    body["callback_url"] = hook_url
    return ProviderRequest("POST", "/midjourney/videos", _headers(api_key), body)


def parse_submit_response(status_code: int, body: bytes) -> str:
    rejection = classify_status(status_code)
    if rejection is not None:
        raise ProviderError(rejection, _refusal(status_code, body), status_code=status_code)
    try:
        answer = load_json_object(body, "acedata submit answer")
    except MalformedCallback as exc:
        raise ProviderError(Rejection.UNKNOWN, f"acedata: {exc}", status_code=status_code) from None
    if answer.get("success") is False:  # a refusal dressed as 2xx: it did not take the job
        raise ProviderError(Rejection.FATAL, _refusal(status_code, body), status_code=status_code)
    data = answer.get("data")
    task_id = answer.get("task_id") or (data.get("task_id") if isinstance(data, dict) else None)
    return submitted_id(task_id, f"acedata answered {status_code} without a task_id", status_code)


def _refusal(status_code: int, body: bytes) -> str:
    """`acedata: 401 invalid_token: <message>`, from the error envelope when there is one."""
    try:
        error = load_json_object(body, "body").get("error")
    except MalformedCallback:
        error = None
    if not isinstance(error, dict):
        text = body[:300].decode("utf-8", "replace") or "(empty body)"
        return f"acedata: HTTP {status_code}: {text}"
    code, message = error.get("code") or "error", error.get("message") or "(no message)"
    hint = " (the account is out of credit: top it up on platform.acedata.cloud)" if code == "used_up" else ""
    return f"acedata: {status_code} {code}: {message}{hint}"


def parse_callback(body: bytes, headers: Mapping[str, str]) -> CallbackResult:
    payload = load_json_object(body, "acedata callback")
    return _result(named_id(payload.get("task_id")), payload)


def _result(task_id: str | None, payload: Mapping[str, Any]) -> CallbackResult:
    """A callback-shaped body: `success` true or false is final, anything else is still running."""
    progress = _progress(payload.get("progress"))
    success = payload.get("success")
    if success is False:
        return CallbackResult(task_id, JobStatus.FAILED, progress, error=_error_text(payload.get("error")))
    if success is not True:
        return CallbackResult(task_id, JobStatus.RUNNING, progress)
    media = url_list(payload.get("video_urls") or [], "acedata callback: video_urls must be a list of URLs")
    if not media:
        return CallbackResult(task_id, JobStatus.FAILED, progress, error="acedata reported success without any video")
    kept = {key: payload[key] for key in KEPT if payload.get(key) is not None}
    if isinstance(kept.get("image_url"), str) and kept["image_url"]:
        kept["cover_url"] = kept["image_url"]  # the cover, under the name every provider's result uses
    if isinstance(kept.get("video_id"), int):  # documented as a string of digits; keep one spelling
        kept["video_id"] = str(kept["video_id"])
    return CallbackResult(task_id, JobStatus.SUCCEEDED, progress, tuple(media), result=kept)


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        if code and message:
            return f"{code}: {message}"
        if code or message:
            return str(code or message)
    if isinstance(error, str) and error:
        return error
    return "acedata reported the task failed"


def _progress(value: object) -> int | None:
    # A whole percent, rounded down, since the column is an INTEGER (AceData documents a number; "45.5" is read too).
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = float(str(value).strip().rstrip("%"))
    except ValueError:
        return None
    return max(0, min(100, math.floor(number))) if math.isfinite(number) else None


def fetch_request(job: Job, api_key: str) -> ProviderRequest:
    return ProviderRequest("POST", "/midjourney/tasks", _headers(api_key), {"action": "retrieve", "id": fetch_id(job)})


def parse_fetch_response(status_code: int, body: bytes) -> CallbackResult:
    """The task record as a callback would report it; ProviderError for a refusal, MalformedCallback for junk."""
    rejection = classify_status(status_code)
    if rejection is not None:
        raise ProviderError(rejection, _refusal(status_code, body), status_code=status_code)
    task = load_json_object(body, "acedata task")
    response = task.get("response")
    response = response if isinstance(response, dict) else {}
    task_id = task.get("id") or response.get("task_id")
    if not isinstance(task_id, str) or not task_id:
        if isinstance(task.get("error"), dict):
            raise ProviderError(Rejection.FATAL, _refusal(status_code, body), status_code=status_code)
        raise MalformedCallback("acedata task answer names no id")
    if task.get("finished_at") is None and not _final(response):
        return CallbackResult(task_id, JobStatus.RUNNING, _progress(response.get("progress")))
    if "success" not in response:  # finished, but the record says nothing: its videos decide
        response = {**response, "success": bool(response.get("video_urls"))}
    return _result(task_id, response)


def _final(response: Mapping[str, Any]) -> bool:
    # Without finished_at, only a response that carries videos or a coded error is final: the SDK has seen
    # `success: false` for a passing hiccup on a task still running.
    if response.get("success") is True:
        return bool(response.get("video_urls"))
    error = response.get("error")
    return response.get("success") is False and isinstance(error, dict) and bool(error.get("code"))


PROVIDER = Provider(
    name="acedata",
    default_base_url="https://api.acedata.cloud",
    max_in_flight=10,
    actions=frozenset({"generate", "extend"}),
    build_request=build_request,
    parse_submit_response=parse_submit_response,
    parse_callback=parse_callback,
    validate_params=validate_params,
    fetch_request=fetch_request,
    parse_fetch_response=parse_fetch_response,
)
