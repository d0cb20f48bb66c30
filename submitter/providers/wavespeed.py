"""WaveSpeed AI's Midjourney image-to-video API (seed 003), as pure functions.

Wire facts (seed 003, providers.md §4): `Authorization: Bearer <key>`; submit `POST /api/v3/midjourney/image-to-video`
with `image` and `prompt` (plus `resolution` 480p|720p and the seed's Midjourney knobs, or `motion` low|high in the
newest docs), the callback URL in the *query string* (`?webhook=<url>`, which httpx encodes). Every answer is an
envelope `{"code", "message", "data"}`, and a 200 whose `code` is not 200 is a refusal read like an HTTP status:
429 and 5xx are retried (the official SDK retries exactly 429/500/502/503/504), anything else is final. WaveSpeed
has no Midjourney extend, so the only action is generate. Concurrency depends on the account level (Bronze 2, the
level every account starts at, up to Ultra 10 000), so the default is 2 and a bigger account raises it in settings.

The callback is the bare prediction object (`id`, `status` created|processing|completed|failed, `outputs`, `error`;
the SDKs also treat cancelled, timeout and deleted as terminal), while the result endpoint wraps the same object in
the envelope; both shapes are read. WaveSpeed signs callbacks, and its scheme only *looks* like Standard Webhooks:

    webhook-id: 45b392b22c3b449fa935bd4dc
    webhook-timestamp: 1758798328
    webhook-signature: v3,<hex HMAC-SHA256(key, "{id}.{timestamp}." + raw body)>

where the key is the `whsec_…` secret (GET /api/v3/webhook/secret) with the prefix cut off and used as UTF-8 text,
*not* base64-decoded, and the digest is hex, not base64 (reelhook's own outbound notifications use the Standard
Webhooks variant, see receiver/notify.py). A timestamp more than 300 s from now either way is refused.

The prediction object says nothing of its price (only `timings`), so WaveSpeed jobs carry no cost.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from storage import CallbackResult, Job, JobStatus
from submitter.providers.base import (
    BadSignature,
    InvalidParams,
    MalformedCallback,
    Provider,
    ProviderError,
    ProviderRequest,
    Rejection,
    about_the_job,
    error_message,
    fetch_id,
    load_json_object,
    named_id,
    submitted_id,
    url_list,
)

SUBMIT_PATH = "/api/v3/midjourney/image-to-video"
MOTIONS = ("low", "high")
RESOLUTIONS = ("480p", "720p")
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "2:3", "16:9", "1:2")  # seed 003's table (a newer page's prose adds 9:16)
FAILED = frozenset({"failed", "cancelled", "timeout", "deleted"})
MAX_SKEW = 300  # seconds; the docs' WebhookMaxAgeSeconds
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def _int_in(low: int, high: int) -> Callable[[object], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number_in(*allowed: float) -> Callable[[object], bool]:
    return lambda value: isinstance(value, int | float) and not isinstance(value, bool) and value in allowed


def _text_in(*allowed: str) -> Callable[[object], bool]:
    return lambda value: isinstance(value, str) and value in allowed


# Seed 003's optional parameters: name -> (check, what is allowed).
OPTIONS: dict[str, tuple[Callable[[object], bool], str]] = {
    "aspect_ratio": (_text_in(*ASPECT_RATIOS), f"one of {', '.join(ASPECT_RATIOS)}"),
    "quality": (_number_in(0.25, 0.5, 1, 2), "0.25, 0.5, 1 or 2"),
    "stylize": (_int_in(0, 1000), "an integer 0-1000"),
    "chaos": (_int_in(0, 100), "an integer 0-100"),
    "weird": (_int_in(0, 3000), "an integer 0-3000"),
    "version": (_text_in("6", "6.1", "7"), "the string '6', '6.1' or '7'"),
    "niji": (_text_in("close", "5", "6"), "the string 'close', '5' or '6'"),
    "seed": (_int_in(-1, 2147483647), "an integer -1-2147483647"),
    # true makes `outputs` base64 data instead of URLs, which reelhook could not download
    "enable_base64_output": (lambda value: value is False, "false (reelhook downloads each output by URL)"),
}


def validate_params(action: str, params: Mapping[str, Any]) -> None:
    if action != "generate":
        raise InvalidParams(f"wavespeed cannot {action!r}: it supports generate only (WaveSpeed has no video extend)")
    for name in ("prompt", "image_url"):
        if not isinstance(params.get(name), str) or not params[name]:
            raise InvalidParams(f"{name} is required by WaveSpeed, got {params.get(name)!r}")
    if params.get("motion") is not None and params["motion"] not in MOTIONS:
        raise InvalidParams(f"motion must be 'low' or 'high', got {params['motion']!r}")
    if params.get("resolution") is not None and params["resolution"] not in RESOLUTIONS:
        raise InvalidParams(f"resolution must be '480p' or '720p', got {params['resolution']!r}")
    for name, what in (("end_image_url", "an end frame"), ("batch_size", "a batch size"), ("loop", "looping")):
        if params.get(name) not in (None, False):
            raise InvalidParams(f"{name}: WaveSpeed's Midjourney video takes no {what}; leave {name} out")
    options = params.get("options") or {}
    if not isinstance(options, Mapping):
        raise InvalidParams(f"options must be an object, got {type(options).__name__}")
    for name, value in options.items():
        if name not in OPTIONS:
            hint = "use the job's motion field" if name == "motion" else f"allowed: {', '.join(OPTIONS)}"
            raise InvalidParams(f"options.{name} is not a WaveSpeed option ({hint})")
        check, allowed = OPTIONS[name]
        if not check(value):
            raise InvalidParams(f"options.{name} must be {allowed}, got {value!r}")


def build_request(job: Job, parent: Job | None, api_key: str, hook_url: str) -> ProviderRequest:
    validate_params(job.action, job.params)
    params = job.params
    body: dict[str, Any] = {"image": params["image_url"], "prompt": params["prompt"]}
    if params.get("resolution"):
        body["resolution"] = params["resolution"]
    if params.get("motion"):
        body["motion"] = params["motion"]
    body.update(params.get("options") or {})
    return ProviderRequest("POST", SUBMIT_PATH, _auth(api_key), body, params={"webhook": hook_url})


def parse_submit_response(status_code: int, body: bytes) -> str:
    data = _read_envelope(status_code, body, "submit answer")
    return submitted_id(data.get("id"), f"wavespeed answered {status_code} without data.id", status_code)


def parse_callback(body: bytes, headers: Mapping[str, str]) -> CallbackResult:
    payload = load_json_object(body, "wavespeed callback")
    if "id" not in payload and isinstance(payload.get("data"), dict):  # the result endpoint's envelope
        payload = payload["data"]
    return _read_prediction(payload)


def _read_prediction(payload: dict[str, Any]) -> CallbackResult:
    job_id, status = named_id(payload.get("id")), payload.get("status")
    if not isinstance(status, str) or not status:
        raise MalformedCallback("wavespeed callback has no status")
    error = payload.get("error")
    if status in FAILED:
        message = error if isinstance(error, str) and error else f"wavespeed reported {status}"
        return CallbackResult(job_id, JobStatus.FAILED, error=message)
    if status != "completed":
        return CallbackResult(job_id, JobStatus.RUNNING)
    outputs = url_list(payload.get("outputs") or [], "wavespeed callback: outputs must be a list of URLs")
    if not outputs:
        return CallbackResult(job_id, JobStatus.FAILED, error="wavespeed reported completed without any output")
    kept: dict[str, Any] = {
        key: payload[key] for key in ("model", "has_nsfw_contents", "executionTime", "timings") if key in payload
    }
    return CallbackResult(job_id, JobStatus.SUCCEEDED, media_urls=tuple(outputs), result=kept)


def verify_signature(body: bytes, headers: Mapping[str, str], secret: str, now: float) -> None:
    """Accept a callback signed with `secret` within 300 s of `now`, or raise BadSignature saying why."""
    lowered = {name.lower(): value for name, value in headers.items()}
    webhook_id, timestamp, signature = (_header(lowered, name) for name in ("id", "timestamp", "signature"))
    if not _TIMESTAMP.fullmatch(timestamp):
        raise BadSignature(f"webhook-timestamp must be Unix seconds, got {timestamp[:40]!r}")
    age = int(now) - int(timestamp)
    if abs(age) > MAX_SKEW:
        when = f"{age} s old" if age > 0 else f"{-age} s in the future"
        raise BadSignature(f"webhook-timestamp {timestamp} is {when}; at most {MAX_SKEW} s either way is allowed")
    key = secret.removeprefix("whsec_")
    if not key:
        raise BadSignature("the wavespeed webhook secret is empty")
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    expected = hmac.new(key.encode(), signed, hashlib.sha256).hexdigest().encode()
    candidates = [value for version, _, value in (e.partition(",") for e in signature.split()) if version == "v3"]
    if not candidates:
        raise BadSignature("webhook-signature has no v3 entry")
    # Every candidate is compared, so the time taken does not say which one (if any) matched.
    matches = [hmac.compare_digest(candidate.lower().encode(), expected) for candidate in candidates]
    if not any(matches):
        raise BadSignature("webhook-signature does not match: wrong webhook secret, or the body was altered")


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(f"webhook-{name}")
    if not value:
        raise BadSignature(f"wavespeed callback has no webhook-{name} header")
    return value


def secret_request(api_key: str) -> ProviderRequest:
    return ProviderRequest("GET", "/api/v3/webhook/secret", _auth(api_key))


def parse_secret(status_code: int, body: bytes) -> str:
    secret = _read_envelope(status_code, body, "webhook secret answer").get("secret")
    if not isinstance(secret, str) or not secret:
        raise ProviderError(Rejection.UNKNOWN, "wavespeed's webhook secret answer has no data.secret")
    return secret


def fetch_request(job: Job, api_key: str) -> ProviderRequest:
    return ProviderRequest("GET", f"/api/v3/predictions/{quote(fetch_id(job), safe='')}/result", _auth(api_key))


def parse_fetch_response(status_code: int, body: bytes) -> CallbackResult:
    data = _read_envelope(status_code, body, "result answer")
    try:
        return about_the_job(_read_prediction(data), "wavespeed result answer", status_code)
    except MalformedCallback as exc:
        raise ProviderError(Rejection.UNKNOWN, f"wavespeed: {exc}", status_code=status_code) from None


def _auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def _rejection(code: int) -> Rejection:
    if code == 429:
        return Rejection.RETRY
    return Rejection.UNKNOWN if code >= 500 else Rejection.FATAL  # a 5xx may come after it took the job


def _read_envelope(status_code: int, body: bytes, what: str) -> dict[str, Any]:
    """`data` of a `{"code", "message", "data"}` answer, or ProviderError for a refusal (HTTP or in the body)."""
    if not 200 <= status_code < 300:
        message = error_message(body, "message", "error", "data.error")
        raise ProviderError(
            _rejection(status_code), f"wavespeed: HTTP {status_code}: {message}", status_code=status_code
        )
    try:
        answer = load_json_object(body, f"wavespeed {what}")
    except MalformedCallback as exc:
        raise ProviderError(Rejection.UNKNOWN, str(exc), status_code=status_code) from None
    code = answer.get("code")
    code = int(code) if isinstance(code, str) and code.isdigit() else code
    if isinstance(code, int) and not isinstance(code, bool) and not 200 <= code < 300:
        message = answer.get("message") or "(no message)"
        raise ProviderError(_rejection(code), f"wavespeed: code {code}: {message}", status_code=code)
    data = answer.get("data")
    if not isinstance(data, dict):
        raise ProviderError(Rejection.UNKNOWN, f"wavespeed {what} has no data object", status_code=status_code)
    return data


PROVIDER = Provider(
    name="wavespeed",
    default_base_url="https://api.wavespeed.ai",
    max_in_flight=2,  # Bronze, the account level every key starts at; a higher level is set in settings
    actions=frozenset({"generate"}),
    build_request=build_request,
    parse_submit_response=parse_submit_response,
    parse_callback=parse_callback,
    validate_params=validate_params,
    verify_signature=verify_signature,
    secret_request=secret_request,
    parse_secret=parse_secret,
    fetch_request=fetch_request,
    parse_fetch_response=parse_fetch_response,
)
