"""APIMart's Midjourney video API (seed 004, providers.md §5), as pure functions.

Wire facts: header `Authorization: Bearer <key>`; `POST /v1/midjourney/generations/video` animates one first frame
(`image_urls`, a one-element list) or a finished APIMart imagine (`task_id` + 0-based `index`), never both and never
text alone. `video_type` picks 480p/720p, and the start/end variant when `end_url` is set; `batch_size` is 1, 2 or
4 (billed per video). There is no extend. The answer is `{"code":200,"data":[{"status":"submitted","task_id":…}]}`.

The callback goes to our `webhook` plus `/callback` (a base URL, so PROVIDER carries `callback_suffix`), once, on a
terminal state; its body is the task object `GET /v1/tasks/{id}` answers inside `{"code":200,"data":…}`, sent bare
in the docs' example, so both forms are read. The older MJ-style shape (`SUCCESS`, `video_url`, `video_urls`) is read
too. Result URLs expire (`expires_at`); the earliest is kept so downloads can be judged against it.

Errors come as `{"error":{"code","message","param","type"}}`. Some parameter errors arrive as HTTP 500 with a message
starting `build_request_failed`: those will fail again, so they are fatal, not retried. The submit rate is capped per
minute (429, number unpublished); MAX_IN_FLIGHT is our own guess.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from storage import CallbackResult, Job, JobStatus
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
)

MAX_IN_FLIGHT = 10  # not published: APIMart caps submissions per minute and answers 429 above it
MAX_FRAME_BYTES = 12 * 1024 * 1024
MOTIONS = ("low", "high")
ANIMATE_MODES = ("manual", "auto")
BATCH_SIZES = (1, 2, 4)
RESOLUTIONS = {"480p": "480", "720p": "720"}
VIDEO_TYPES = ("vid_1.1_i2v_480", "vid_1.1_i2v_720", "vid_1.1_i2v_start_end_480", "vid_1.1_i2v_start_end_720")
OPTIONS = ("animate_mode", "video_type", "task_id", "index")  # may come in params["options"] as well
RUNNING = {"pending", "submitted", "processing", "in_progress", "not_start", "modal"}  # and anything unknown
SUCCEEDED = {"completed", "success"}
FAILED = {"failed", "failure", "cancelled", "canceled"}
# MJ-style business codes: 1 and 200 mean taken; 9 is APIMart's own failure (back off and retry).
FATAL_CODES = {3: "NOT_FOUND", 4: "VALIDATION_ERROR", 24: "BANNED_PROMPT"}
# The task object's price in dollars and in APIMart credits (10 credits = $1): the same charge in two units.
COST_FIELDS = {"cost": "usd", "credits_cost": "credits"}
ERROR_KEYS = ("error.message", "message", "description", "msg")


def validate_params(action: str, params: Mapping[str, Any]) -> None:
    if action != "generate":
        raise InvalidParams(f"apimart cannot {action!r}: it supports generate only (APIMart has no video extend)")
    get = _merged(params)
    image_url, task_id, index, prompt = get.get("image_url"), get.get("task_id"), get.get("index"), get.get("prompt")
    if image_url is None and task_id is None:
        raise InvalidParams("give image_url (a first frame) or task_id (a finished APIMart imagine): no text-to-video")
    if image_url is not None and task_id is not None:
        raise InvalidParams("give image_url or task_id, not both")
    if task_id is not None and (not isinstance(task_id, str) or not task_id):
        raise InvalidParams(f"task_id must be an APIMart imagine task id, got {task_id!r}")
    if task_id is not None and (not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 3):
        raise InvalidParams(f"index must be 0-3 (the imagine tile to animate, 0-based) with task_id, got {index!r}")
    if task_id is None and index is not None:
        raise InvalidParams("index applies only with task_id (it picks a tile of an APIMart imagine)")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidParams(f"prompt must be a string, got {prompt!r}")
    if task_id is None and not (prompt or "").strip():
        raise InvalidParams("prompt is required unless task_id is given (then it inherits the imagine's prompt)")
    _check_choice(get, "motion", MOTIONS)
    _check_choice(get, "animate_mode", ANIMATE_MODES)
    _check_choice(get, "batch_size", BATCH_SIZES)
    _check_choice(get, "resolution", tuple(RESOLUTIONS))
    if get.get("animate_mode") == "auto" and task_id is None:
        raise InvalidParams("animate_mode 'auto' needs task_id and index (a tile of a finished APIMart imagine)")
    video_type = get.get("video_type")
    if video_type is not None and video_type not in VIDEO_TYPES:
        raise InvalidParams(
            f"video_type must be one of {', '.join(VIDEO_TYPES)} (extend-style values are not accepted), "
            f"got {video_type!r}"
        )
    if video_type and get.get("resolution") and not video_type.endswith(RESOLUTIONS[get["resolution"]]):
        raise InvalidParams(f"resolution {get['resolution']!r} contradicts video_type {video_type!r}")
    if video_type and "start_end" in video_type and not get.get("end_image_url"):
        raise InvalidParams(f"video_type {video_type!r} needs end_image_url (the end frame)")
    if get.get("loop"):
        raise InvalidParams("loop is not offered by apimart; leave it out")
    for name in ("image_url", "end_image_url"):
        size = data_url_size(get.get(name))
        if size is not None and size > MAX_FRAME_BYTES:
            raise InvalidParams(f"{name}: APIMart takes frames up to 12 MiB, this data: URL holds {size} bytes")


def _merged(params: Mapping[str, Any]) -> dict[str, Any]:
    """The params with `options` folded in (a top-level value wins), leaving out unset ones."""
    options = params.get("options") or {}
    if not isinstance(options, Mapping) or set(options) - set(OPTIONS):
        raise InvalidParams(f"options may hold only {', '.join(OPTIONS)}, got {options!r}")
    merged = {key: value for key, value in options.items() if value is not None}
    return merged | {key: value for key, value in params.items() if value is not None and key != "options"}


def _check_choice(params: Mapping[str, Any], name: str, allowed: tuple[object, ...]) -> None:
    value = params.get(name)
    if value is not None and (isinstance(value, bool) or value not in allowed):
        raise InvalidParams(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def data_url_size(url: object) -> int | None:
    """The decoded size of a `data:` URL's payload, or None for any other value."""
    if not isinstance(url, str) or not url[:5].lower() == "data:":
        return None
    header, _, payload = url[5:].partition(",")
    if header.lower().endswith(";base64"):
        try:
            return len(base64.b64decode("".join(payload.split()), validate=False))
        except (binascii.Error, ValueError):
            raise InvalidParams("a data: URL's base64 payload does not decode") from None
    return len(unquote_to_bytes(payload))


def build_request(job: Job, parent: Job | None, api_key: str, hook_url: str) -> ProviderRequest:
    validate_params(job.action, job.params)  # a job recorded before a rule changed must not reach the wire
    params = _merged(job.params)
    body: dict[str, Any] = {}
    if params.get("prompt"):
        body["prompt"] = params["prompt"]
    if params.get("task_id"):
        body["task_id"], body["index"] = params["task_id"], params["index"]
    else:
        body["image_urls"] = [params["image_url"]]
    tier = RESOLUTIONS.get(params.get("resolution") or "") or (params.get("video_type") or "_480")[-3:]
    body["video_type"] = f"vid_1.1_i2v_start_end_{tier}" if params.get("end_image_url") else f"vid_1.1_i2v_{tier}"
    body |= {name: params[name] for name in ("motion", "batch_size", "animate_mode") if name in params}
    if params.get("end_image_url"):
        body["end_url"] = params["end_image_url"]
    body["webhook"] = hook_url
    # APIMart honours an idempotency key: a submission that reached it twice (it never should) is one task.
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": job.id}
    return ProviderRequest("POST", "/v1/midjourney/generations/video", headers, body)


def parse_submit_response(status_code: int, body: bytes) -> str:
    rejection = classify_status(status_code)
    if rejection is not None:
        message = error_message(body, *ERROR_KEYS)
        if status_code == 500 and message.startswith("build_request_failed"):
            rejection = Rejection.FATAL  # a parameter APIMart could not use: sending it again fails again
        elif status_code == 409:  # idempotency_in_progress | key_reused | result_indeterminate: it has this job
            rejection = Rejection.UNKNOWN
        raise ProviderError(rejection, f"apimart: HTTP {status_code}: {message}", status_code=status_code)
    try:
        answer = load_json_object(body, "apimart submit answer")
    except MalformedCallback as exc:
        raise ProviderError(Rejection.UNKNOWN, str(exc), status_code=status_code) from None
    code = _code(answer)
    if code not in (1, 200):
        message = f"apimart: code {code}: {error_message(body, *ERROR_KEYS)}"
        raise ProviderError(_code_rejection(code), message, status_code=status_code)
    data = answer.get("data")
    first = data[0] if isinstance(data, list) and data else data
    task_id = first.get("task_id") if isinstance(first, dict) else answer.get("result")
    return submitted_id(task_id, f"apimart answered {status_code} without a task_id", 200)


def _code(answer: Mapping[str, Any]) -> object:
    code = answer.get("code", 200)
    return int(code) if isinstance(code, str) and code.isdigit() else code


def _code_rejection(code: object) -> Rejection:
    if not isinstance(code, int) or isinstance(code, bool):
        return Rejection.UNKNOWN
    if code == 9 or code == 429:  # 9 FAILURE: "retry with backoff" (providers.md §5): it says it was not taken
        return Rejection.RETRY
    if code >= 500:
        return Rejection.UNKNOWN
    if code in FATAL_CODES or 400 <= code < 500:
        return Rejection.FATAL
    return Rejection.UNKNOWN


def parse_callback(body: bytes, headers: Mapping[str, str]) -> CallbackResult:
    return parse_task(load_json_object(body, "apimart callback"))


def parse_task(payload: Mapping[str, Any]) -> CallbackResult:
    """A task object, bare or wrapped in `{"code":200,"data":…}`, in reelhook's terms."""
    data = payload.get("data")
    task: Mapping[str, Any] = data if isinstance(data, dict) and "status" not in payload else payload
    task_id, status = named_id(task.get("id") or task.get("task_id")), task.get("status")
    if not isinstance(status, str) or not status:
        raise MalformedCallback("apimart callback has no status")
    progress = _progress(task.get("progress"))
    word = status.lower()
    costs = reported_costs(task, COST_FIELDS)  # the docs' failure example carries none (failures are refunded)
    if word in FAILED:
        error = task.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or task.get("fail_reason") or f"apimart reported {status}"
        return CallbackResult(task_id, JobStatus.FAILED, progress, error=str(message), costs=costs)
    if word not in SUCCEEDED:
        return CallbackResult(task_id, JobStatus.RUNNING, progress)
    media, expires = _videos(task)
    if not media:
        error = f"apimart reported {status} without a video"
        return CallbackResult(task_id, JobStatus.FAILED, progress, error=error, costs=costs)
    kept: dict[str, Any] = {key: task[key] for key in ("cost", "credits_cost") if key in task}
    if expires:
        kept["expires_at"] = min(expires)
    return CallbackResult(task_id, JobStatus.SUCCEEDED, progress, media, result=kept, costs=costs)


def _videos(task: Mapping[str, Any]) -> tuple[tuple[str, ...], list[int | float]]:
    urls: list[object] = []
    expires: list[int | float] = []
    result = task.get("result")
    videos = result.get("videos") if isinstance(result, dict) else None
    for video in videos if isinstance(videos, list) else []:
        if not isinstance(video, dict):
            raise MalformedCallback("apimart callback: result.videos must hold objects")
        url = video.get("url")
        urls.extend(url if isinstance(url, list) else [url])
        if isinstance(video.get("expires_at"), int | float) and not isinstance(video["expires_at"], bool):
            expires.append(video["expires_at"])
    if not urls:  # the MJ-style shape: video_urls, or video_url alone
        mj = task.get("video_urls") or ([task["video_url"]] if task.get("video_url") else [])
        urls = list(mj) if isinstance(mj, list) else [mj]
    if not all(isinstance(url, str) and url for url in urls):
        raise MalformedCallback("apimart callback: video URLs must be non-empty strings")
    return tuple(dict.fromkeys(str(url) for url in urls)), expires


def _progress(value: object) -> int | None:
    try:
        return max(0, min(100, int(float(str(value).rstrip("%")))))
    except (ValueError, OverflowError):
        return None


def fetch_request(job: Job, api_key: str) -> ProviderRequest:
    return ProviderRequest("GET", f"/v1/tasks/{fetch_id(job)}", {"Authorization": f"Bearer {api_key}"})


def parse_fetch_response(status_code: int, body: bytes) -> CallbackResult:
    rejection = classify_status(status_code)
    if rejection is not None:  # 404: APIMart forgets tasks after 3 days
        raise ProviderError(
            rejection, f"apimart: HTTP {status_code}: {error_message(body, *ERROR_KEYS)}", status_code=status_code
        )
    answer = load_json_object(body, "apimart task answer")
    code = _code(answer)
    if code not in (1, 200):
        message = f"apimart: code {code}: {error_message(body, *ERROR_KEYS)}"
        raise ProviderError(_code_rejection(code), message, status_code=status_code)
    return about_the_job(parse_task(answer), "apimart task answer", status_code)


PROVIDER = Provider(
    name="apimart",
    default_base_url="https://api.apimart.ai",
    max_in_flight=MAX_IN_FLIGHT,
    actions=frozenset({"generate"}),
    build_request=build_request,
    parse_submit_response=parse_submit_response,
    parse_callback=parse_callback,
    validate_params=validate_params,
    callback_suffix="/callback",
    fetch_request=fetch_request,
    parse_fetch_response=parse_fetch_response,
    max_frame_bytes=MAX_FRAME_BYTES,
    takes_data_urls=True,
    takes_task_id=True,
)
