"""TTAPI's Midjourney image API (seed 001): the actions of the `ttapi` provider that are not about videos.

It is the video API's host, key header (`TT-API-KEY`), submit answer, `hookUrl` callback and status values
(PENDING_QUEUE, ON_QUEUE, SUCCESS, FAILED), so `ttapi.py` stays the one provider and hands these actions here:

    imagine         POST /midjourney/v1/imagine   {prompt, mode?, timeout?, getUImages?}
    seed            POST /midjourney/v1/seed      {jobId}                    (the parent's TTAPI job)
    blend           POST /midjourney/v1/blend     {imgBase64Array (2-5), dimensions, mode?}
    describe        POST /midjourney/v1/describe  {base64, mode?}
    inpaint         POST /midjourney/v1/inpaint   {jobId, mask, prompt?}     (Vary (Region) on the parent)
    <component>     POST /midjourney/v1/action    {jobId, action}            (upsample1, variation3, zoom_out_2, ...)

and every body carries `hookUrl`. A component is whatever button name the parent's result lists in `components`;
U1-U4 and V1-V4 are known ahead, any other `[a-z][a-z0-9_]*` name is taken and checked against the parent.

Where the seed disagrees with itself: its tables name the speed field `mode` (so do the TTAPI founder's blog posts),
its example requests say `model`, which later copies of the docs use for the Midjourney version (`v6.0`): we send
`mode` only. Inpaint's table says `Jobid`, its example `jobId` like every other endpoint: we send `jobId`.

Results: imagine lists its four tiles in `images` ("the address will never be invalid"), besides the grid in
`cdnImage` and `discordImage`; other results (an upsample's one image) leave `images` empty ("only valid with the
imagine command"). So the media are `images`, else `[cdnImage]` (TTAPI's own host), else `[discordImage]`
(Discord's links expire 24 hours after): the longest-lived copy first. The seed's own `cdnImage` example is
`http://127.0.0.1/8080/...`, a placeholder the receiver's address guard refuses; we do not second-guess it here.
A seed or describe result has no image and still succeeds: `seed` holds the seed, and the four prompts of a
describe come in `data.prompt`, one per line with Midjourney's 1️⃣-4️⃣ marks (a `prompts` list is read too).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from storage import Job
from submitter.providers.base import InvalidParams, ProviderRequest, url_list

FETCH_PATH = "/midjourney/v1/fetch"
COMPONENTS = frozenset({f"upsample{i}" for i in range(1, 5)} | {f"variation{i}" for i in range(1, 5)})
ACTIONS = frozenset({"imagine", "seed", "blend", "describe", "inpaint"}) | COMPONENTS
COMPONENT_NAME = re.compile(r"[a-z][a-z0-9_]*")
MODES = ("fast", "relax", "turbo")
DIMENSIONS = ("PORTRAIT", "SQUARE", "LANDSCAPE")
# action -> (required params, optional params); a component takes what "seed" takes.
PARAMS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "imagine": (frozenset({"prompt"}), frozenset({"options"})),
    "blend": (frozenset({"images_base64"}), frozenset({"dimensions", "options"})),
    "describe": (frozenset({"image_base64"}), frozenset({"options"})),
    "inpaint": (frozenset({"mask_base64"}), frozenset({"prompt", "options"})),
    "seed": (frozenset(), frozenset({"options"})),
}
OPTIONS = {"imagine": ("mode", "timeout", "getUImages"), "blend": ("mode", "timeout"), "describe": ("mode", "timeout")}
NUMBERED = re.compile(r"^\s*\d\ufe0f?\u20e3\s*")  # Midjourney's "1️⃣ " before each described prompt


def is_image_action(action: str) -> bool:
    return action in ACTIONS or COMPONENT_NAME.fullmatch(action) is not None


def validate_params(action: str, params: Mapping[str, Any]) -> None:
    required, optional = PARAMS.get(action, PARAMS["seed"])
    unknown = sorted(set(params) - required - optional)
    if unknown:
        takes = ", ".join(sorted(required | optional))
        raise InvalidParams(f"{action} takes only {takes}; remove {', '.join(unknown)}")
    for name in sorted(required):
        if params.get(name) in (None, "", []):
            raise InvalidParams(f"{action} needs {name}")
    prompt = params.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise InvalidParams(f"prompt must be a non-empty string, got {prompt!r}")
    if action == "blend":
        images = params["images_base64"]
        if not isinstance(images, list) or not 2 <= len(images) <= 5:
            count = len(images) if isinstance(images, list) else type(images).__name__
            raise InvalidParams(f"images_base64 must be a list of 2-5 base64 images, got {count}")
        for i, image in enumerate(images):
            _require_base64(f"images_base64[{i}]", image)
        dimensions = params.get("dimensions")
        if dimensions is not None and dimensions not in DIMENSIONS:
            raise InvalidParams(f"dimensions must be one of {', '.join(DIMENSIONS)}, got {dimensions!r}")
    for name in ("image_base64", "mask_base64"):
        if name in params:
            _require_base64(name, params[name])
    _check_options(action, params.get("options"))


def build_request(job: Job, parent: Job | None, api_key: str, hook_url: str) -> ProviderRequest:
    params, action = job.params, job.action
    body: dict[str, Any]
    if action == "imagine":
        endpoint, body = "imagine", {"prompt": params["prompt"]}
    elif action == "blend":
        images, dimensions = list(params["images_base64"]), params.get("dimensions") or "SQUARE"
        endpoint, body = "blend", {"imgBase64Array": images, "dimensions": dimensions}
    elif action == "describe":
        endpoint, body = "describe", {"base64": params["image_base64"]}
    elif action == "seed":
        endpoint, body = "seed", {"jobId": _parent_job_id(action, parent)}
    elif action == "inpaint":
        endpoint, body = "inpaint", {"jobId": _parent_job_id(action, parent), "mask": params["mask_base64"]}
        if params.get("prompt"):
            body["prompt"] = params["prompt"]
    else:
        endpoint, body = "action", {"jobId": _parent_job_id(action, parent), "action": action}
    body["hookUrl"] = hook_url
    options = params.get("options") or {}
    body.update({name: options[name] for name in ("mode", "timeout", "getUImages") if name in options})
    return ProviderRequest("POST", f"/midjourney/v1/{endpoint}", {"TT-API-KEY": api_key}, body)


def image_urls(data: Mapping[str, Any]) -> tuple[str, ...]:
    """An image result's media: the four tiles, else the one image on TTAPI's CDN, else Discord's copy."""
    images = data.get("images")
    if images:
        return tuple(url_list(images, "ttapi callback: data.images must be a list of URLs"))
    for key in ("cdnImage", "discordImage"):
        url = data.get(key)
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            return (url,)
    return ()


def image_result(data: Mapping[str, Any], action: str | None) -> dict[str, Any]:
    """What a follow-up or a user needs from an image result: its buttons, its seed, a describe's prompts, and the
    grid (or the one image) as TTAPI shows it, `cover_url`: its own CDN's copy, else Discord's."""
    kept = {key: data[key] for key in ("components", "seed") if key in data}
    for key in ("cdnImage", "discordImage"):
        url = data.get(key)
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            kept["cover_url"] = url
            break
    if action == "describe" or isinstance(data.get("prompts"), list):
        value = data.get("prompts", data.get("prompt"))
        lines = value if isinstance(value, list) else str(value or "").splitlines()
        kept["prompts"] = [NUMBERED.sub("", line).strip() for line in lines if isinstance(line, str) and line.strip()]
    return kept


def _parent_job_id(action: str, parent: Job | None) -> str:
    if parent is None or not parent.provider_job_id:
        raise InvalidParams(f"{action} needs a parent job that TTAPI has accepted (it has no TTAPI jobId)")
    components = parent.result.get("components")
    if action not in PARAMS and isinstance(components, list) and action not in components:
        listed = ", ".join(map(str, components)) or "none"
        raise InvalidParams(f"{action} is not one of the parent job's components ({listed})")
    return parent.provider_job_id


def _require_base64(name: str, value: object) -> None:
    data = value.partition(";base64,")[2] if isinstance(value, str) and value.startswith("data:") else value
    try:
        ok = isinstance(data, str) and bool(data) and bool(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise InvalidParams(f"{name} must be a base64-encoded image (optionally a data: URI), got {str(value)[:40]!r}")


def _check_options(action: str, options: object) -> None:
    if options is None:
        return
    allowed = OPTIONS.get(action, ("timeout",))
    if not isinstance(options, dict) or set(options) - set(allowed):
        raise InvalidParams(f"options for {action} may hold only {', '.join(allowed)}, got {options!r}")
    if "mode" in options and options["mode"] not in MODES:
        raise InvalidParams(f"options.mode must be one of {', '.join(MODES)}, got {options['mode']!r}")
    timeout = options.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0):
        raise InvalidParams(f"options.timeout must be a positive number of seconds, got {timeout!r}")
    if "getUImages" in options and not isinstance(options["getUImages"], bool):
        raise InvalidParams(f"options.getUImages must be true or false, got {options['getUImages']!r}")
