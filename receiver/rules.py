"""Follow-up rules: which jobs to submit next when an event arrives.

The user's rules file is read once (`RuleSet.load`; the parsing and every check live in `receiver.rulefile`) and
then asked once per event (`RuleSet.followups`). Answering is pure: it returns the jobs to record and the
follow-ups a limit stopped; the caller records them. Re-delivery is safe because of the store, not because of any
memory here: each follow-up carries `origin = "<rule>:<source job id>:<index>"`, which is unique in the jobs table,
so the same event handled twice (or a job.succeeded and a video.downloaded rule racing) can never extend the same
take of the same job twice under one rule.

`max_depth` is enforced here, where the depth is known: a follow-up deeper than it becomes a `Skip`, as does one
whose provider cannot do it (a rule without a provider filter applies to every provider) or whose job cannot have it
(`effects.followup_refusal`, the API's check too: a job that has not succeeded, an extend of an image, an image
action its result does not list). Skips are logged and returned so the caller can record them where a user will see
them (a note on the job). A follow-up its provider would take only without part of what the rule asked is recorded
without that part and the skip names it (`Skip.origin`): a TTAPI extend carries no prompt, so a rule's
`extend.prompt` is not sent, and the note goes on the extend itself. The limits that count jobs
(`max_jobs_per_root`, `max_jobs_per_day`) need the store, so the event worker applies them to what this returns
(`receiver.guards`); answering stays pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from receiver.effects import Act, Extend, Notify, Video, extend_params, followup_refusal, template_fields
from receiver.rulefile import Limits, Rule, RuleError, can, parse_rules
from storage import Event, EventType, Job, JobStatus, NewJob
from submitter.providers import PROVIDERS, InvalidParams, Provider

__all__ = ["Act", "Extend", "Limits", "Notify", "Rule", "RuleError", "RuleSet", "Skip", "Video", "check_rules_file"]


@dataclass(frozen=True)
class Skip:
    """A follow-up, or a part of one, that a rule asked for and that will not happen, and why.

    Without `origin` the follow-up was stopped, and the note belongs on `job_id`, the job that fired the rule. With
    it the follow-up was recorded under that origin without what `reason` names (a TTAPI extend without the rule's
    prompt), and the note belongs on the follow-up.
    """

    rule: str
    job_id: str
    reason: str
    origin: str | None = None
    limit: bool = False  # stopped by a money limit (max_depth), not because the provider cannot do it


def _default_providers() -> Mapping[str, Provider]:
    return PROVIDERS


@dataclass(frozen=True)
class RuleSet:
    limits: Limits
    rules: tuple[Rule, ...]
    # What the rules were checked against, and what `followups` asks whether a job's provider can follow up.
    providers: Mapping[str, Provider] = field(default_factory=_default_providers, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str, *, source: str = "rules.toml", providers: Mapping[str, Provider] = PROVIDERS) -> RuleSet:
        """Read rules from TOML text; a `RuleError` names `source`, the rule and the field to fix."""
        limits, rules = parse_rules(text, source, providers)
        return cls(limits, rules, providers)

    @classmethod
    def load(cls, path: Path, *, providers: Mapping[str, Provider] = PROVIDERS) -> RuleSet:
        """Read a rules file; errors name the file."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RuleError(f"{path}: cannot read the rules file: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise RuleError(
                f"{path.name}: the rules file is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        return cls.parse(text, source=path.name, providers=providers)

    @classmethod
    def empty(cls) -> RuleSet:
        return cls(Limits(), ())

    def followups(self, event: Event, job: Job) -> tuple[list[NewJob], list[Skip]]:
        """The jobs that the rules ask for when `event` happens to `job` (the job the event names)."""
        if event.job_id != job.id:
            raise ValueError(f"event {event.id} is about job {event.job_id}, not {job.id}")
        jobs: list[NewJob] = []
        skips: list[Skip] = []
        for rule in self.rules:
            if rule.on != event.type or not rule.matches(job):
                continue
            if rule.extend is not None:
                self._extend(rule, rule.extend, event, job, jobs, skips)
            if rule.video is not None:
                self._video(rule, rule.video, event, job, jobs, skips)
            if rule.act is not None:
                self._act(rule, rule.act, job, jobs, skips)
        return self._acceptable(jobs, skips), skips

    def _acceptable(self, jobs: list[NewJob], skips: list[Skip]) -> list[NewJob]:
        """The follow-ups their provider would take; the rest become skips (a rule's extend.motion on AceData)."""
        kept = []
        for new in jobs:
            provider = self.providers.get(new.provider)
            try:
                if provider is None:
                    raise InvalidParams(f"no provider {new.provider}")
                provider.validate_params(new.action, new.params)
            except InvalidParams as exc:
                reason = f"{new.provider} would refuse the {new.action}: {exc}"
                skips.append(Skip(new.rule or "", new.parent_id or "", reason))
                continue
            kept.append(new)
        return kept

    def notifications(self, event: Event, job: Job) -> list[tuple[str, str]]:
        """(rule name, URL) for each `notify` rule that `event` on `job` fires."""
        return [
            (rule.name, rule.notify.url)
            for rule in self.rules
            if rule.notify is not None and rule.on == event.type and rule.matches(job)
        ]

    def _video(self, rule: Rule, video: Video, event: Event, job: Job, jobs: list[NewJob], skips: list[Skip]) -> None:
        index = event.video_index if event.type is EventType.VIDEO_DOWNLOADED else None
        skip = self._blocked(rule.name, job, None)
        if skip is None:
            try:
                params = video.params(template_fields(job, index or 0, rule.name))
            except IndexError:  # {images[2]} of a job with one image
                reason = f"the job has {len(job.videos)} result file(s), fewer than the template asks for"
                skip = Skip(rule.name, job.id, reason)
        if skip is not None:
            skips.append(skip)
            return
        origin = f"{rule.name}:{job.id}:{'video' if index is None else index}"
        jobs.append(NewJob(video.provider, "generate", params, parent_id=job.id, rule=rule.name, origin=origin))

    def _act(self, rule: Rule, act: Act, job: Job, jobs: list[NewJob], skips: list[Skip]) -> None:
        skip = self._blocked(rule.name, job, act.name)
        if skip is not None:
            skips.append(skip)
            return
        origin = f"{rule.name}:{job.id}:{act.name}"
        jobs.append(NewJob(job.provider, act.name, {}, parent_id=job.id, rule=rule.name, origin=origin))

    def _extend(
        self, rule: Rule, extend: Extend, event: Event, job: Job, jobs: list[NewJob], skips: list[Skip]
    ) -> None:
        indexes = _indexes_to_extend(extend, event, job)
        if not indexes:
            return
        skip = self._blocked(rule.name, job, extend.action)
        if skip is not None:
            skips.append(skip)
            return
        provider = self.providers[job.provider]  # _blocked made sure it exists and can extend
        for index in indexes:
            params, dropped = extend_params(extend, provider, job, index, rule.name)
            origin = f"{rule.name}:{job.id}:{index}"
            jobs.append(NewJob(job.provider, extend.action, params, parent_id=job.id, rule=rule.name, origin=origin))
            if dropped is not None:
                skips.append(Skip(rule.name, job.id, dropped, origin=origin))

    def _blocked(self, rule: str, job: Job, action: str | None) -> Skip | None:
        """Why no follow-up of `job` may be created, or None. `action` is what the job's own provider must do; the
        job itself must be able to have it (the API asks the same: `followup_refusal`)."""
        if job.status is not JobStatus.SUCCEEDED:
            return Skip(rule, job.id, f"job is {job.status}; only a succeeded job can be followed up")
        provider = self.providers.get(job.provider)
        if action is not None and (provider is None or not can(provider, action)):
            return Skip(rule, job.id, f"provider {job.provider} cannot {action}")
        if action is not None and (refusal := followup_refusal(job, action)) is not None:
            return Skip(rule, job.id, refusal)
        if job.depth + 1 > self.limits.max_depth:
            return Skip(rule, job.id, f"max_depth {self.limits.max_depth} reached (job depth {job.depth})", limit=True)
        return None


def _indexes_to_extend(extend: Extend, event: Event, job: Job) -> list[int]:
    if event.type is EventType.VIDEO_DOWNLOADED:
        index = event.video_index
        wanted = index is not None and (extend.indexes is None or index in extend.indexes)
        return [index] if wanted and index is not None else []
    # job.succeeded: the listed takes the job has (a batch of 1 has no take 3), or all of them
    present = sorted(video.index for video in job.videos)
    return present if extend.indexes is None else [index for index in extend.indexes if index in present]


def check_rules_file(path: Path) -> str:
    """`reelhook rules check FILE`: a one-line summary of a valid rules file, or a `RuleError`."""
    ruleset = RuleSet.load(path)
    count = len(ruleset.rules)
    return f"{path.name}: {count} rule{'' if count == 1 else 's'}, max_depth {ruleset.limits.max_depth}"
