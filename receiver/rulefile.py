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

import difflib
import json
import re
import string
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeGuard

from storage import EventType, Job
from submitter.providers import Provider

MOTIONS = ("low", "high")
DEFAULT_MAX_DEPTH = 2
# The fields an effect's template may use, with a sample value of the type each has when rendered.
TEMPLATE_SAMPLE: dict[str, str | int] = {
    "prompt": "a prompt",
    "id": "job-id",
    "provider": "ttapi",
    "action": "generate",
    "provider_job_id": "provider-job-id",
    "root_id": "root-id",
    "depth": 0,
    "index": 0,
    "rule": "rule-name",
}
WHEN_KEYS = ("action", "provider", "prompt_matches")
EXTEND_KEYS = ("index", "prompt", "motion")
RULE_KEYS = ("name", "on", "when", "extend")


class RuleError(ValueError):
    """A rules file that cannot be used; the message starts with the file name and says what to fix."""


@dataclass(frozen=True)
class Limits:
    max_depth: int = DEFAULT_MAX_DEPTH  # no rule creates a job deeper than this; a job submitted by hand is 0


@dataclass(frozen=True)
class Extend:
    """Extend some videos of the job: TTAPI-style `extend` of the parent's take `index`."""

    events: ClassVar[frozenset[EventType]] = frozenset({EventType.JOB_SUCCEEDED, EventType.VIDEO_DOWNLOADED})
    action: ClassVar[str] = "extend"

    indexes: tuple[int, ...] | None  # None means every video the job has
    prompt: str | None = None  # a str.format template over TEMPLATE_SAMPLE's fields
    motion: str | None = None


Effect = Extend  # the union of effect kinds, as later issues add them


@dataclass(frozen=True)
class Rule:
    name: str
    on: EventType
    actions: frozenset[str] | None  # None: any
    providers: frozenset[str] | None  # None: any provider (one that cannot follow up is skipped at run time)
    prompt_matches: re.Pattern[str] | None
    extend: Extend | None = None

    @property
    def effects(self) -> tuple[Effect, ...]:
        return tuple(effect for effect in (self.extend,) if effect is not None)

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
    _check_keys(document, ("limits", "rule"), f"{source}: ")
    raw_limits = document.get("limits", {})
    if not isinstance(raw_limits, dict):
        raise RuleError(f"{source}: limits must be a [limits] table, got {_show(raw_limits)}")
    limits = _parse_limits(raw_limits, f"{source}: [limits]: ")
    raw_rules = document.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RuleError(f"{source}: rules are written as [[rule]] tables (two brackets), got {_show(raw_rules)}")
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
    _check_keys(raw, ("max_depth",), where)
    max_depth = raw.get("max_depth", DEFAULT_MAX_DEPTH)
    if not _is_int(max_depth) or max_depth < 0:
        raise RuleError(f"{where}max_depth must be a whole number >= 0, got {_show(max_depth)}")
    return Limits(max_depth)


def _parse_rule(raw: object, where: str, source: str, providers: Mapping[str, Provider]) -> Rule:
    if not isinstance(raw, dict):
        raise RuleError(f"{where}must be a [[rule]] table, got {_show(raw)}")
    name = raw.get("name")
    if name is None:
        raise RuleError(f"{where}name is required")
    if not isinstance(name, str) or not name.strip():
        raise RuleError(f"{where}name must be a non-empty string, got {_show(name)}")
    where = f'{source}: rule "{name}": '
    _check_keys(raw, RULE_KEYS, where)
    on = raw.get("on")
    if not isinstance(on, str) or on not in {event.value for event in EventType}:
        events = ", ".join(EventType)
        got = "nothing" if on is None else _show(on)
        raise RuleError(f"{where}on must be one of {events}, got {got}")
    when = raw.get("when", {})
    if not isinstance(when, dict):
        raise RuleError(f"{where}when must be a table (when.action = ...), got {_show(when)}")
    _check_keys(when, WHEN_KEYS, where, "when.")
    rule = Rule(
        name=name,
        on=EventType(on),
        actions=_names(when, "action", where, sorted({a for p in providers.values() for a in p.actions})),
        providers=_names(when, "provider", where, sorted(providers)),
        prompt_matches=_compile(when.get("prompt_matches"), where),
        extend=_parse_extend(raw["extend"], where) if "extend" in raw else None,
    )
    if not rule.effects:
        raise RuleError(f"{where}does nothing; add a follow-up such as extend.index = 0")
    for effect in rule.effects:
        if rule.on not in effect.events:
            allowed = " or ".join(event for event in EventType if event in effect.events)
            raise RuleError(f'{where}{effect.action} can only run on {allowed}, got on = "{rule.on}"')
        for provider in sorted(rule.providers or ()):
            if effect.action not in providers[provider].actions:
                can = ", ".join(sorted(providers[provider].actions))
                raise RuleError(
                    f'{where}{effect.action} needs a provider that can {effect.action}; when.provider names "'
                    f'{provider}", which supports only {can}'
                )
    return rule


def _parse_extend(raw: object, where: str) -> Extend:
    if not isinstance(raw, dict):
        raise RuleError(f"{where}extend must be a table (extend.index = 0), got {_show(raw)}")
    _check_keys(raw, EXTEND_KEYS, where, "extend.")
    if "index" not in raw:
        raise RuleError(f'{where}extend.index is required: 0-3, a list of them, or "all"')
    prompt = raw.get("prompt")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise RuleError(f"{where}extend.prompt must be a string, got {_show(prompt)}")
        _check_template(prompt, where, "extend.prompt")
    motion = raw.get("motion")
    if motion is not None and motion not in MOTIONS:
        raise RuleError(f'{where}extend.motion must be "low" or "high", got {_show(motion)}')
    return Extend(indexes=_parse_indexes(raw["index"], where), prompt=prompt, motion=motion)


def _parse_indexes(value: object, where: str) -> tuple[int, ...] | None:
    if value == "all":
        return None
    if _is_int(value) and 0 <= value <= 3:
        return (value,)
    if isinstance(value, list) and value and all(_is_int(item) and 0 <= item <= 3 for item in value):
        repeated = sorted({item for item in value if value.count(item) > 1})
        if repeated:
            raise RuleError(f"{where}extend.index lists {repeated[0]} more than once, got {_show(value)}")
        return tuple(value)
    raise RuleError(f'{where}extend.index must be 0-3, a non-empty list of them, or "all", got {_show(value)}')


def _check_template(template: str, where: str, key: str) -> None:
    try:
        names = list(_field_names(template))
    except ValueError as exc:
        raise RuleError(f"{where}{key} is not a valid template ({exc}), got {_show(template)}") from None
    for name in names:
        if name not in TEMPLATE_SAMPLE:
            available = ", ".join(TEMPLATE_SAMPLE)
            raise RuleError(f"{where}{key} uses unknown field {{{name}}}; available: {available}")
    try:  # conversions and format specs only fail when applied
        template.format(**TEMPLATE_SAMPLE)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise RuleError(f"{where}{key} is not a valid template ({exc}), got {_show(template)}") from None


def _field_names(template: str) -> Iterator[str]:
    for _literal, name, spec, _conversion in string.Formatter().parse(template):
        if name is not None:
            yield name
        if spec:  # a spec may hold fields of its own: "{prompt:>{index}}"
            yield from _field_names(spec)


def _names(when: dict[str, Any], key: str, where: str, known: list[str]) -> frozenset[str] | None:
    value = when.get(key)
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(item, str) and item for item in values):
        raise RuleError(f"{where}when.{key} must be a name or a non-empty list of names, got {_show(value)}")
    for item in values:
        if item not in known:
            raise RuleError(f'{where}when.{key} names unknown {key} "{item}"; known: {", ".join(known)}')
    return frozenset(values)


def _compile(pattern: object, where: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise RuleError(f"{where}when.prompt_matches must be a regular expression string, got {_show(pattern)}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        message = f"{where}when.prompt_matches is not a valid regular expression ({exc}), got {_show(pattern)}"
        raise RuleError(message) from None


def _check_keys(table: Mapping[str, object], allowed: tuple[str, ...], where: str, prefix: str = "") -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f' (did you mean "{prefix}{close[0]}"?)' if close else ""
            expected = ", ".join(prefix + name for name in allowed)
            raise RuleError(f'{where}unknown key "{prefix}{key}"{hint}; expected {expected}')


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    """A value as the user wrote it in TOML, near enough: 7, "job.failed", true, [0, 7]."""
    if isinstance(value, dict):
        return "a table"
    return json.dumps(value, default=str, ensure_ascii=False)
