"""Reading `POST /api/jobs`: a JSON body in, a `NewJob` out, or a `BadRequest` that says which field to fix.

Two kinds of action. A fresh one (generate, imagine, blend, describe) names its provider; a follow-up one (extend,
seed, inpaint, and the image actions a result lists, such as upsample1) names a parent job, which must have
succeeded and be able to have it (`effects.followup_refusal`, which the rules ask too: a video to extend, an image
with that component to act on), and goes to the parent's provider. An extend without a prompt carries on its
parent's where the provider takes one (AceData requires one; TTAPI refuses any), so the job records what is sent.
Generic checks (field names, types, URLs) are here; what a provider can take is its own module's `validate_params`.
For providers that cap the size of an image frame (APIMart), the frame URLs are asked for their size (HEAD, through
the download guard) before anything is recorded.

A frame is an http(s) URL the provider fetches, a `frame:<sha256>` that `POST /api/frames` stored (the submitter
sends it as a signed URL to reelhook itself: receiver/frames.py), or, for a provider that takes one (APIMart), a
`data:` URL. A local path is refused by name: the server cannot read the caller's disk, and the provider even less.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import httpx

from receiver.effects import followup_refusal, prompt_refusal, with_parent_prompt
from receiver.frames import PREFIX, find_frame, frame_dir, frame_sha256
from receiver.netguard import UnsafeURL, check_url
from receiver.service import Service
from storage import JobStatus, NewJob
from submitter.providers import PROVIDERS, InvalidParams, Provider

log = logging.getLogger("reelhook.api")

DEFAULT_PROVIDER = "ttapi"
FRESH: dict[str, set[str]] = {
    "generate": {"prompt", "image_url", "end_image_url", "motion", "resolution", "batch_size", "loop", "task_id",
                 "index", "options"},
    "imagine": {"prompt", "options"},
    "blend": {"images_base64", "dimensions"},
    "describe": {"image_base64"},
}  # fmt: skip
FOLLOW_UP: dict[str, set[str]] = {
    "extend": {"index", "prompt", "motion"},
    "seed": set(),
    "inpaint": {"mask_base64", "prompt"},
}
TYPES: dict[str, type | tuple[type, ...]] = {
    "prompt": str, "image_url": str, "end_image_url": str, "motion": str, "resolution": str, "batch_size": int,
    "loop": bool, "task_id": str, "index": int, "options": dict, "images_base64": list, "dimensions": str,
    "image_base64": str, "mask_base64": str,
}  # fmt: skip
# How a field's type is named to the sender: in JSON's words ("index must be an integer", not Python's "a int").
KINDS: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    dict: "a JSON object",
    list: "a list",
}
MIB = 1024 * 1024


class BadRequest(Exception):
    def __init__(self, detail: str, status_code: int = 400, error: str = "invalid_request") -> None:
        super().__init__(detail)
        self.detail, self.status_code, self.error = detail, status_code, error


async def read_job_request(service: Service, body: dict[str, Any]) -> NewJob:
    action = body.get("action", "generate")
    if not isinstance(action, str) or not action:
        raise BadRequest(f"action must be a name such as generate, extend, imagine or upsample1, got {action!r}")
    parent_id, parent_prompt = None, None
    if action in FRESH:
        provider = _provider(service, body.get("provider", DEFAULT_PROVIDER))
        allowed = FRESH[action]
    else:
        if "parent_id" not in body:
            fresh = ", ".join(FRESH)
            raise BadRequest(f"action {action!r} follows up a job and needs parent_id; fresh actions are {fresh}")
        parent = await service.store.get_job(_text(body, "parent_id"))
        if parent is None:
            raise BadRequest(f"parent_id: no job {body['parent_id']}", 404, "not_found")
        if parent.status is not JobStatus.SUCCEEDED:
            detail = f"parent_id: job {parent.id} is {parent.status}; only a succeeded job can be followed up"
            raise BadRequest(detail, 409, "conflict")
        if body.get("provider", parent.provider) != parent.provider:
            raise BadRequest(f"provider: a {action} goes to the parent's provider ({parent.provider})")
        provider, parent_id, parent_prompt = _provider(service, parent.provider), parent.id, parent.prompt
        allowed = FOLLOW_UP.get(action, set()) | {"parent_id"}
        index = body.get("index")
        if action == "extend" and (not isinstance(index, int) or isinstance(index, bool)):
            raise BadRequest(f"index must be a whole number (which of the parent's videos to extend), got {index!r}")
        refusal = followup_refusal(parent, action, index if action == "extend" else None)
        if refusal is not None:
            raise BadRequest(f"{action} of job {parent.id}: {refusal}")
    if action not in provider.actions and not (provider.component_actions and action not in FRESH | FOLLOW_UP):
        raise BadRequest(f"action: {provider.name} cannot {action}; it can {', '.join(sorted(provider.actions))}")
    unknown = sorted(set(body) - allowed - {"provider", "action"})
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; {action} takes {', '.join(sorted(allowed))}")
    params = {key: value for key, value in body.items() if key in allowed - {"parent_id"} and value is not None}
    _check_types(params)
    if action == "generate":
        if "task_id" in params and not provider.takes_task_id:
            raise BadRequest(f"task_id: {provider.name} animates a first frame (image_url), not an earlier task")
        if "task_id" not in params:
            _text(params, "prompt")
            _frame(service, provider, params, "image_url")
    elif action in ("imagine",):
        _text(params, "prompt")
    if "end_image_url" in params:
        _frame(service, provider, params, "end_image_url")
    if action == "extend":
        params = with_parent_prompt(provider, params, parent_prompt)
    try:
        provider.validate_params(action, params)
    except InvalidParams as exc:
        fix = "; leave prompt out" if prompt_refusal(provider, action, params) is not None else ""
        raise BadRequest(f"{provider.name}: {exc}{fix}") from None
    if provider.max_frame_bytes is not None:
        await _check_frames(service, provider, params)
    return NewJob(provider=provider.name, action=action, params=params, parent_id=parent_id)


def _provider(service: Service, name: object) -> Provider:
    if not isinstance(name, str) or name not in PROVIDERS or name not in service.settings.providers:
        raise BadRequest(f"provider must be one of {', '.join(service.settings.providers)}, got {name!r}")
    return PROVIDERS[name]


def _check_types(params: dict[str, Any]) -> None:
    for name, value in params.items():
        expected = TYPES[name]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            kind = KINDS.get(expected, "a value of another type") if isinstance(expected, type) else "of another type"
            raise BadRequest(f"{name} must be {kind}")


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name} is required and must be a non-empty string")
    return value


UPLOAD = "send a local file with `reelhook submit --image FILE` (it uploads it with POST /api/frames)"


def _frame(service: Service, provider: Provider, body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if isinstance(value, str) and value.startswith(PREFIX):
        sha256 = frame_sha256(value)
        if sha256 is None or find_frame(frame_dir(service.settings.data_dir), sha256) is None:
            raise BadRequest(f"{name}: no frame {value!r} was uploaded; {UPLOAD}, and send the frame it answers")
        return
    if isinstance(value, str) and value[:5].lower() == "data:":
        if not provider.takes_data_urls:
            raise BadRequest(f"{name}: {provider.name} takes frames by http(s) URL, not data: URLs; {UPLOAD}")
        return  # capped by the request's size (api.MAX_REQUEST), then sized by the provider's validate_params
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:  # an unclosed or unknown bracketed host ("http://[", "http://[zz]/"): a 400, not a 500
        raise BadRequest(f"{name} must be an http(s) URL, got {value!r}, whose host cannot be read") from None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        if isinstance(value, str) and (parts is None or parts.scheme in ("", "file") or len(parts.scheme) == 1):
            local = f"{value!r} is a local file, which the server cannot read nor {provider.name} fetch"
            raise BadRequest(f"{name} must be an http(s) URL: {local}; {UPLOAD}")
        raise BadRequest(f"{name} must be an http(s) URL, got {value!r}; {UPLOAD}")


async def _check_frames(service: Service, provider: Provider, params: dict[str, Any]) -> None:
    assert provider.max_frame_bytes is not None
    for name in ("image_url", "end_image_url"):
        url = params.get(name)
        if not isinstance(url, str) or url.startswith(("data:", PREFIX)):
            continue  # data: URLs are sized by the provider's validate_params; stored frames are under its cap
        try:
            await check_url(url, allow_private=service.settings.allow_private_urls, allowed_origins=service.trusted)
            response = await service.http.head(url, timeout=10.0)
        except (UnsafeURL, httpx.HTTPError) as exc:
            log.info(
                "could not size %s (%s); leaving it to %s",
                url,
                exc,
                provider.name,
                extra={"event": "job.frame_unsized", "provider": provider.name},
            )
            continue
        size = response.headers.get("content-length", "")
        if response.is_success and size.isdigit() and int(size) > provider.max_frame_bytes:
            raise BadRequest(
                f"{name} is {int(size) / MIB:.1f} MiB; {provider.name} takes frames of at most "
                f"{provider.max_frame_bytes / MIB:.0f} MiB",
                413,
                "too_large",
            )
