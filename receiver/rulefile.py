"""Reading a rules file: TOML in, validated `Rule` records out, or a `RuleError` that names the fix.

Everything a user can get wrong is caught here, at load time, so that a typo fails `reelhook rules check` instead
of a rule silently never firing: unknown keys (`extnd`), impossible indexes, templates that name fields a job does
not have, regexes that do not compile, providers that do not exist or cannot do what the rule asks.

A rule is a filter (`on` plus `when`) and one or more follow-up tables, its *effects*. Each effect kind is a
frozen record that says which events it may run on and which provider action it needs (`Extend.events`,
`Extend.action`); adding a kind is a record, a field on `Rule`, an entry in `Rule.effects` and a `_parse_*`
function here.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from receiver.effects import (
    NOT_IMAGES,
    TEMPLATE_SAMPLE,
    Act,
    Effect,
    Extend,
    Notify,
    RuleError,
    Video,
    check_keys,
    is_int,
    parse_act,
    parse_extend,
    parse_notify,
    parse_video,
    show,
)
from storage import EventType, Job
from submitter.providers import InvalidParams, Provider

DEFAULT_MAX_DEPTH = 2
WHEN_KEYS = ("action", "provider", "prompt_matches")
RULE_KEYS = ("name", "on", "when", "extend", "video", "action", "notify")
LIMIT_KEYS = ("max_depth", "max_jobs_per_root", "max_jobs_per_day")

__all__ = ["Act", "Extend", "Limits", "Notify", "Rule", "RuleError", "Video", "parse_rules"]


@dataclass(frozen=True)
class Limits:
    """The `[limits]` table: how far rules may spend on their own. None means no limit."""

    max_depth: int = DEFAULT_MAX_DEPTH  # no rule creates a job deeper than this; a job submitted by hand is 0
    max_jobs_per_root: int | None = None  # jobs in one chain, its root (the job submitted by hand) included
    # Jobs created by rules, all rules together, over a rolling 24 hours (not a calendar day); 0 stops them all.
    max_jobs_per_day: int | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    on: EventType
    actions: frozenset[str] | None  # None: any
    providers: frozenset[str] | None  # None: any provider (one that cannot follow up is skipped at run time)
    prompt_matches: re.Pattern[str] | None
    extend: Extend | None = None
    video: Video | None = None
    act: Act | None = None
    notify: Notify | None = None

    @property
    def effects(self) -> tuple[Effect, ...]:
        return tuple(effect for effect in (self.extend, self.video, self.act, self.notify) if effect is not None)

    def matches(self, job: Job) -> bool:
        """Whether the job passes every `when` filter."""
        return (
            (self.actions is None or job.action in self.actions)
            and (self.providers is None or job.provider in self.providers)
            and (self.prompt_matches is None or self.prompt_matches.search(job.prompt or "") is not None)
        )


def parse_rules(text: str, source: str, providers: Mapping[str, Provider]) -> tuple[Limits, tuple[Rule, ...]]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{source}: {exc}") from None
    check_keys(document, ("limits", "rule"), f"{source}: ")
    raw_limits = document.get("limits", {})
    if not isinstance(raw_limits, dict):
        raise RuleError(f"{source}: limits must be a [limits] table, got {show(raw_limits)}")
    limits = _parse_limits(raw_limits, f"{source}: [limits]: ")
    raw_rules = document.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RuleError(f"{source}: rules are written as [[rule]] tables (two brackets), got {show(raw_rules)}")
    rules: list[Rule] = []
    numbers: dict[str, int] = {}
    for number, raw in enumerate(raw_rules, 1):
        rule = _parse_rule(raw, f"{source}: rule #{number}: ", source, providers)
        if rule.name in numbers:
            raise RuleError(
                f'{source}: rule "{rule.name}": name is already used by rule #{numbers[rule.name]}; '
                "rule names must be unique"
            )
        numbers[rule.name] = number
        rules.append(rule)
    return limits, tuple(rules)


def _parse_limits(raw: dict[str, Any], where: str) -> Limits:
    check_keys(raw, LIMIT_KEYS, where)
    max_depth = _whole(raw, "max_depth", 0, where)
    return Limits(
        max_depth=DEFAULT_MAX_DEPTH if max_depth is None else max_depth,
        max_jobs_per_root=_whole(raw, "max_jobs_per_root", 1, where),  # 1: the root alone, no follow-ups
        max_jobs_per_day=_whole(raw, "max_jobs_per_day", 0, where),
    )


def _whole(raw: dict[str, Any], key: str, least: int, where: str) -> int | None:
    value = raw.get(key)
    if value is not None and (not is_int(value) or value < least):
        raise RuleError(f"{where}{key} must be a whole number >= {least}, got {show(value)}")
    return value


def _parse_rule(raw: object, where: str, source: str, providers: Mapping[str, Provider]) -> Rule:
    if not isinstance(raw, dict):
        raise RuleError(f"{where}must be a [[rule]] table, got {show(raw)}")
    name = raw.get("name")
    if name is None:
        raise RuleError(f"{where}name is required")
    if not isinstance(name, str) or not name.strip():
        raise RuleError(f"{where}name must be a non-empty string, got {show(name)}")
    where = f'{source}: rule "{name}": '
    check_keys(raw, RULE_KEYS, where)
    on = raw.get("on")
    if not isinstance(on, str) or on not in {event.value for event in EventType}:
        events = ", ".join(EventType)
        got = "nothing" if on is None else show(on)
        raise RuleError(f"{where}on must be one of {events}, got {got}")
    when = raw.get("when", {})
    if not isinstance(when, dict):
        raise RuleError(f"{where}when must be a table (when.action = ...), got {show(when)}")
    check_keys(when, WHEN_KEYS, where, "when.")
    rule = Rule(
        name=name,
        on=EventType(on),
        actions=_names(when, "action", where, sorted({a for p in providers.values() for a in p.actions})),
        providers=_names(when, "provider", where, sorted(providers)),
        prompt_matches=_compile(when.get("prompt_matches"), where),
        extend=parse_extend(raw["extend"], where) if "extend" in raw else None,
        video=parse_video(raw["video"], where, providers) if "video" in raw else None,
        act=parse_act(raw["action"], where) if "action" in raw else None,
        notify=parse_notify(raw["notify"], where) if "notify" in raw else None,
    )
    if not rule.effects:
        raise RuleError(f"{where}does nothing; add a follow-up such as extend.index = 0")
    for effect in rule.effects:
        name = effect.action or "notify"
        if rule.on not in effect.events:
            allowed = " or ".join(event for event in EventType if event in effect.events)
            raise RuleError(f'{where}{name} can only run on {allowed}, got on = "{rule.on}"')
        if isinstance(effect, Extend | Act):  # done by the job's own provider
            for provider in sorted(rule.providers or ()):
                if not can(providers[provider], effect.action):
                    supported = ", ".join(sorted(providers[provider].actions))
                    raise RuleError(
                        f'{where}{name} needs a provider that can {name}; when.provider names "'
                        f'{provider}", which supports only {supported}'
                    )
    if rule.act is not None:
        _check_image_jobs(rule, where)
    if rule.video is not None:
        _check_video(rule.video, providers, where)
    return rule


def can(provider: Provider, action: str) -> bool:
    """Whether `provider` can be asked for `action` (an action its results list counts, where it has those)."""
    return action in provider.actions or (provider.component_actions and action not in NOT_IMAGES)


def _check_image_jobs(rule: Rule, where: str) -> None:
    videos = sorted((rule.actions or NOT_IMAGES) & NOT_IMAGES)
    if rule.actions is None or videos:
        got = "nothing" if rule.actions is None else ", ".join(videos)
        raise RuleError(
            f"{where}action.name acts on an image result: when.action must name image jobs "
            f"(imagine, blend, upsample1, ...), got {got}"
        )


def _check_video(video: Video, providers: Mapping[str, Provider], where: str) -> None:
    """Ask the target provider whether it would take such a job, with the templates rendered on sample values."""
    try:
        providers[video.provider].validate_params("generate", video.params(TEMPLATE_SAMPLE))
    except InvalidParams as exc:
        raise RuleError(f"{where}video: {video.provider} would refuse this job: {exc}") from None


def _names(when: dict[str, Any], key: str, where: str, known: list[str]) -> frozenset[str] | None:
    value = when.get(key)
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(item, str) and item for item in values):
        raise RuleError(f"{where}when.{key} must be a name or a non-empty list of names, got {show(value)}")
    for item in values:
        if item not in known:
            raise RuleError(f'{where}when.{key} names unknown {key} "{item}"; known: {", ".join(known)}')
    return frozenset(values)


def _compile(pattern: object, where: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise RuleError(f"{where}when.prompt_matches must be a regular expression string, got {show(pattern)}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        message = f"{where}when.prompt_matches is not a valid regular expression ({exc}), got {show(pattern)}"
        raise RuleError(message) from None
