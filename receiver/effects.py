"""What a rule does when it fires: its effects, each a frozen record parsed (and checked) from one TOML table.

    extend.index = 0                            extend a video of the job (same provider)
    video = { provider = "wavespeed", image = "{images[0]}", prompt = "{prompt}" }
                                                animate an image (or, on APIMart, task_id + index) on any provider
    action = { name = "upsample1" }             an image action the job's result lists (TTAPI's U/V buttons)
    notify = { url = "https://…" }              POST the event, signed, until it is answered 2xx

Each record says which events it may run on and, for the job-making ones, which provider action it needs. Text
fields are `str.format` templates over the job that fired the rule (`TEMPLATE_SAMPLE` lists them); every template is
rendered once against the sample at load time, so a typo fails `reelhook rules check`, not a paid job later.
"""

from __future__ import annotations

import difflib
import json
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeGuard
from urllib.parse import urlsplit

from storage import EventType, Job, JobStatus
from submitter.providers import InvalidParams, Provider

MOTIONS = ("low", "high")
ALL_EVENTS = frozenset(EventType)
AFTER_SUCCESS = frozenset({EventType.JOB_SUCCEEDED, EventType.VIDEO_DOWNLOADED})
# The fields a template may use, with a sample value of the type each has when rendered.
TEMPLATE_SAMPLE: dict[str, Any] = {
    "prompt": "a prompt",
    "id": "job-id",
    "provider": "ttapi",
    "action": "generate",
    "provider_job_id": "provider-job-id",
    "root_id": "root-id",
    "depth": 0,
    "index": 0,
    "rule": "rule-name",
    "image": "https://cdn.example/0.png",  # the job's first result file
    "images": [f"https://cdn.example/{i}.png" for i in range(4)],  # all of them: {images[2]}
}
# Jobs whose results are no image a follow-up action could act on.
NOT_IMAGES = frozenset({"generate", "extend", "describe", "seed"})
VIDEO_JOBS = frozenset({"generate", "extend"})  # jobs whose results are videos, the only thing an extend extends
# Follow-ups on an image job that its result need not list as a component.
IMAGE_FOLLOW_UPS = frozenset({"seed", "inpaint"})


class RuleError(ValueError):
    """A rules file that cannot be used; the message starts with the file name and says what to fix."""


@dataclass(frozen=True)
class Extend:
    """Extend some videos of the job: the provider's `extend` of the parent's take `index`."""

    events: ClassVar[frozenset[EventType]] = AFTER_SUCCESS
    action: ClassVar[str] = "extend"

    indexes: tuple[int, ...] | None  # None means every video the job has
    prompt: str | None = None
    motion: str | None = None


@dataclass(frozen=True)
class Video:
    """Animate: a new `generate` job on `provider`, from one of this job's images (or an APIMart imagine)."""

    events: ClassVar[frozenset[EventType]] = AFTER_SUCCESS
    action: ClassVar[str] = "generate"
    KEYS: ClassVar[tuple[str, ...]] = (
        "provider", "image", "end_image", "prompt", "motion", "resolution", "batch_size", "task_id", "index", "options",
    )  # fmt: skip

    provider: str
    templates: Mapping[str, str] = field(default_factory=dict)  # param name -> template (image_url, prompt, ...)
    values: Mapping[str, Any] = field(default_factory=dict)  # param name -> literal (motion, batch_size, ...)

    def params(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.values, **{name: template.format(**fields) for name, template in self.templates.items()}}


@dataclass(frozen=True)
class Act:
    """An image action (TTAPI's upsample1, variation2, …) on the job's own result."""

    events: ClassVar[frozenset[EventType]] = frozenset({EventType.JOB_SUCCEEDED})

    name: str

    @property
    def action(self) -> str:
        return self.name


@dataclass(frozen=True)
class Notify:
    """POST the event as signed JSON to `url`."""

    events: ClassVar[frozenset[EventType]] = ALL_EVENTS
    action: ClassVar[None] = None

    url: str


Effect = Extend | Video | Act | Notify


def template_fields(job: Job, index: int, rule: str) -> dict[str, Any]:
    """The values templates render with: the same names and types as TEMPLATE_SAMPLE."""
    images = [video.url for video in job.videos]
    return {
        "prompt": job.prompt or "",
        "id": job.id,
        "provider": job.provider,
        "action": job.action,
        "provider_job_id": job.provider_job_id or "",
        "root_id": job.root_id,
        "depth": job.depth,
        "index": index,
        "rule": rule,
        "image": images[0] if images else "",
        "images": images,
    }


def extend_params(
    extend: Extend, provider: Provider, job: Job, index: int, rule: str
) -> tuple[dict[str, Any], str | None]:
    """The params of the extend of take `index` of `job`, and why the rule's prompt was not sent, if it was not.

    The job records what its provider is sent: a provider that takes no prompt on an extend (TTAPI) gets the extend
    without the rule's prompt, and one that takes a prompt (AceData, which requires it) gets the rule's, else the
    parent's.
    """
    params: dict[str, Any] = {"index": index}
    if extend.motion is not None:
        params["motion"] = extend.motion
    if extend.prompt is None:
        return with_parent_prompt(provider, params, job.prompt), None
    prompt = extend.prompt.format(**template_fields(job, index, rule))
    refusal = prompt_refusal(provider, "extend", params | {"prompt": prompt})
    if refusal is not None:
        return params, f"{refusal}; the rule's prompt was not sent"
    return params | {"prompt": prompt}, None


def followup_refusal(parent: Job, action: str, index: int | None = None) -> str | None:
    """Why `parent` cannot have the follow-up `action` (of its take `index`, for an extend), or None.

    The one check that both the API and the rules make before recording a follow-up, so neither sends one that the
    provider could only answer with "job not found": the parent must have succeeded and be the right kind of job (a
    video to extend, an image to act on), and offer what is asked (a component its result lists, a take it has).
    Whether the parent's provider can do `action` at all is the caller's question (it knows the providers).
    """
    if parent.status is not JobStatus.SUCCEEDED:
        return f"job is {parent.status}; only a succeeded job can be followed up"
    if action == "extend":
        if parent.action not in VIDEO_JOBS:
            return f"only a video (generate or extend) job can be extended; this one is {parent.action}"
        takes = sorted(video.index for video in parent.videos)
        if not takes:
            return "the job has no videos to extend"
        if index is not None and index not in takes:
            return f"index must be 0-{len(takes) - 1} (the job has {len(takes)} videos), got {index}"
        return None
    if parent.action in NOT_IMAGES:
        return f"{action} acts on an image job (imagine, blend, upsample1, ...); this one is {parent.action}"
    components = parent.result.get("components")
    offered = [str(name) for name in components] if isinstance(components, list) else []
    if action not in IMAGE_FOLLOW_UPS and action not in offered:
        return f"{action} is not among the job's components ({', '.join(offered) or 'none'})"
    return None


def with_parent_prompt(provider: Provider, params: dict[str, Any], prompt: str | None) -> dict[str, Any]:
    """An extend's params with its parent's prompt where none is given and the provider takes one."""
    if "prompt" in params or not prompt:
        return params
    carried = params | {"prompt": prompt}
    try:
        provider.validate_params("extend", carried)
    except InvalidParams:
        return params
    return carried


def prompt_refusal(provider: Provider, action: str, params: dict[str, Any]) -> InvalidParams | None:
    """The provider's refusal of `params` when the prompt alone is the trouble (it would take them without)."""
    try:
        provider.validate_params(action, params)
        return None
    except InvalidParams as exc:
        refusal = exc
    try:
        provider.validate_params(action, {name: value for name, value in params.items() if name != "prompt"})
    except InvalidParams:
        return None
    return refusal


def parse_extend(raw: object, where: str) -> Extend:
    table = _table(raw, where, "extend", "extend.index = 0")
    check_keys(table, ("index", "prompt", "motion"), where, "extend.")
    if "index" not in table:
        raise RuleError(f'{where}extend.index is required: 0-3, a list of them, or "all"')
    return Extend(
        indexes=_parse_indexes(table["index"], where),
        prompt=_template(table, "prompt", where, "extend."),
        motion=_motion(table, where, "extend."),
    )


def parse_video(raw: object, where: str, providers: Mapping[str, Any]) -> Video:
    table = _table(raw, where, "video", 'video = { provider = "ttapi", image = "{images[0]}" }')
    check_keys(table, Video.KEYS, where, "video.")
    provider = table.get("provider")
    if not isinstance(provider, str) or provider not in providers:
        raise RuleError(f"{where}video.provider must be one of {', '.join(providers)}, got {show(provider)}")
    if "generate" not in providers[provider].actions:
        raise RuleError(f'{where}video.provider "{provider}" cannot make videos')
    templates = {"image_url": "image", "end_image_url": "end_image", "prompt": "prompt", "task_id": "task_id"}
    rendered = {param: t for param, key in templates.items() if (t := _template(table, key, where, "video."))}
    rendered.setdefault("prompt", "{prompt}")  # a new video carries on its parent's prompt unless told otherwise
    values: dict[str, Any] = {}
    if (motion := _motion(table, where, "video.")) is not None:
        values["motion"] = motion
    for key in ("resolution", "batch_size", "index", "options"):
        if key in table:
            values[key] = table[key]
    return Video(provider=provider, templates=rendered, values=values)


def parse_act(raw: object, where: str) -> Act:
    table = _table(raw, where, "action", 'action = { name = "upsample1" }')
    check_keys(table, ("name",), where, "action.")
    name = table.get("name")
    if not isinstance(name, str) or not name.isidentifier() or not name.islower():
        raise RuleError(f'{where}action.name must be an action name such as "upsample1", got {show(name)}')
    return Act(name)


def parse_notify(raw: object, where: str) -> Notify:
    table = _table(raw, where, "notify", 'notify = { url = "https://example.com/hook" }')
    check_keys(table, ("url",), where, "notify.")
    url = table.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if not isinstance(url, str) or parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuleError(f"{where}notify.url must be an http(s) URL, got {show(url)}")
    return Notify(url)


def _table(raw: object, where: str, key: str, example: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RuleError(f"{where}{key} must be a table ({example}), got {show(raw)}")
    return raw


def _motion(table: Mapping[str, Any], where: str, prefix: str) -> str | None:
    motion = table.get("motion")
    if motion is not None and motion not in MOTIONS:
        raise RuleError(f'{where}{prefix}motion must be "low" or "high", got {show(motion)}')
    return motion


def _parse_indexes(value: object, where: str) -> tuple[int, ...] | None:
    if value == "all":
        return None
    if is_int(value) and 0 <= value <= 3:
        return (value,)
    if isinstance(value, list) and value and all(is_int(item) and 0 <= item <= 3 for item in value):
        repeated = sorted({item for item in value if value.count(item) > 1})
        if repeated:
            raise RuleError(f"{where}extend.index lists {repeated[0]} more than once, got {show(value)}")
        return tuple(value)
    raise RuleError(f'{where}extend.index must be 0-3, a non-empty list of them, or "all", got {show(value)}')


def _template(table: Mapping[str, Any], name: str, where: str, prefix: str) -> str | None:
    template = table.get(name)
    if template is None:
        return None
    key = prefix + name
    if not isinstance(template, str):
        raise RuleError(f"{where}{key} must be a string, got {show(template)}")
    try:
        names = list(_field_names(template))
    except ValueError as exc:
        raise RuleError(f"{where}{key} is not a valid template ({exc}), got {show(template)}") from None
    for field_name in names:
        base, _, rest = field_name.partition("[")
        if base not in TEMPLATE_SAMPLE or (rest and base != "images") or "." in field_name:
            available = ", ".join(TEMPLATE_SAMPLE)
            raise RuleError(f"{where}{key} uses unknown field {{{field_name}}}; available: {available}")
    try:  # conversions, format specs and indexes only fail when applied
        template.format(**TEMPLATE_SAMPLE)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise RuleError(f"{where}{key} is not a valid template ({exc}), got {show(template)}") from None
    return template


def _field_names(template: str) -> Iterator[str]:
    for _literal, name, spec, _conversion in string.Formatter().parse(template):
        if name is not None:
            yield name
        if spec:  # a spec may hold fields of its own: "{prompt:>{index}}"
            yield from _field_names(spec)


def check_keys(table: Mapping[str, object], allowed: tuple[str, ...], where: str, prefix: str = "") -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f' (did you mean "{prefix}{close[0]}"?)' if close else ""
            expected = ", ".join(prefix + name for name in allowed)
            raise RuleError(f'{where}unknown key "{prefix}{key}"{hint}; expected {expected}')


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def show(value: object) -> str:
    """A value as the user wrote it in TOML, near enough: 7, "job.failed", true, [0, 7]."""
    if isinstance(value, dict):
        return "a table"
    return json.dumps(value, default=str, ensure_ascii=False)
