from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from receiver.rules import Extend, Limits, Rule, RuleError, RuleSet, Skip, check_rules_file
from storage import Event, EventType, Job, JobStatus, NewJob, Video, VideoStatus
from submitter.providers import PROVIDERS, Provider
from submitter.providers.ttapi import PROVIDER as TTAPI

REPO = Path(__file__).resolve().parents[2]

ISSUE_EXAMPLE = """
[limits]
max_depth = 2            # no rule ever creates a job deeper than this (root depth = 0); default 2; int >= 0

[[rule]]
name = "extend-first"
on = "job.succeeded"
when.action = "generate"
extend.index = 0
extend.prompt = "{prompt}, the camera keeps moving"
extend.motion = "high"
"""

# A provider that can generate but not extend, for the capability checks.
STILLS = dataclasses.replace(TTAPI, name="stills", actions=frozenset({"generate"}))
WITH_STILLS: dict[str, Provider] = {**PROVIDERS, "stills": STILLS}


def video(job_id: str, index: int) -> Video:
    return Video(
        job_id=job_id,
        index=index,
        url=f"https://cdn.example/{job_id}/{index}.mp4",
        status=VideoStatus.PENDING,
        path=None,
        sha256=None,
        bytes=None,
        attempts=0,
        next_attempt_at=None,
        error=None,
        updated_at=1000.0,
    )


def job(
    *,
    id: str = "job-1",
    provider: str = "ttapi",
    action: str = "generate",
    status: JobStatus = JobStatus.SUCCEEDED,
    prompt: str | None = "a red fox in snow",
    depth: int = 0,
    videos: int = 4,
) -> Job:
    params: dict[str, Any] = {"image_url": "https://img.example/fox.png"}
    if prompt is not None:
        params["prompt"] = prompt
    return Job(
        id=id,
        provider=provider,
        action=action,
        status=status,
        params=params,
        provider_job_id=f"tt-{id}",
        parent_id=None if depth == 0 else "parent-job",
        root_id="root-job" if depth else id,
        depth=depth,
        rule=None,
        origin=None,
        error=None,
        progress=100,
        result={},
        attempts=1,
        next_attempt_at=None,
        created_at=1000.0,
        updated_at=1000.0,
        videos=tuple(video(id, index) for index in range(videos)),
    )


def event(type: EventType, job_id: str = "job-1", video_index: int | None = None) -> Event:
    return Event(id=7, type=type, job_id=job_id, video_index=video_index, created_at=1000.0)


SUCCEEDED = event(EventType.JOB_SUCCEEDED)


def rules(body: str, *, max_depth: int | None = None, providers: dict[str, Provider] = PROVIDERS) -> RuleSet:
    limits = "" if max_depth is None else f"[limits]\nmax_depth = {max_depth}\n"
    return RuleSet.parse(limits + body, providers=providers)


def extend_rule(*lines: str, name: str = "r", on: str = "job.succeeded") -> str:
    return "\n".join(["[[rule]]", f'name = "{name}"', f'on = "{on}"', *lines]) + "\n"


# --- parsing ---------------------------------------------------------------------------------------------------------


def test_issue_example_parses() -> None:
    ruleset = RuleSet.parse(ISSUE_EXAMPLE)
    assert ruleset.limits == Limits(max_depth=2)
    assert ruleset.rules == (
        Rule(
            name="extend-first",
            on=EventType.JOB_SUCCEEDED,
            actions=frozenset({"generate"}),
            providers=None,
            prompt_matches=None,
            extend=Extend(indexes=(0,), prompt="{prompt}, the camera keeps moving", motion="high"),
        ),
    )


def test_issue_example_extends_the_first_take_of_a_ttapi_job_without_its_prompt() -> None:
    # TTAPI's extend takes no prompt (seed 000): the extend is recorded as it is sent, and the skip says why.
    jobs, skips = RuleSet.parse(ISSUE_EXAMPLE).followups(SUCCEEDED, job())
    assert jobs == [
        NewJob(
            provider="ttapi",
            action="extend",
            params={"index": 0, "motion": "high"},
            parent_id="job-1",
            rule="extend-first",
            origin="extend-first:job-1:0",
        )
    ]
    reason = "TTAPI extends take no prompt; the rule's prompt was not sent"
    assert skips == [Skip("extend-first", "job-1", reason, origin="extend-first:job-1:0")]


def test_an_acedata_extend_takes_the_rules_prompt_else_its_parents() -> None:
    parent = job(provider="acedata")
    prompted = rules(extend_rule("extend.index = [0, 1]", 'extend.prompt = "{prompt}, take {index}"'))
    jobs, skips = prompted.followups(SUCCEEDED, parent)
    assert skips == [] and [new.params for new in jobs] == [
        {"index": 0, "prompt": "a red fox in snow, take 0"},
        {"index": 1, "prompt": "a red fox in snow, take 1"},
    ]
    # AceData's extend must have a prompt (seed 002): without extend.prompt it carries on the parent's.
    jobs, skips = rules(extend_rule("extend.index = 2")).followups(SUCCEEDED, parent)
    assert skips == [] and [new.params for new in jobs] == [{"index": 2, "prompt": "a red fox in snow"}]
    # A parent without a prompt leaves nothing to carry on: AceData would refuse, so the rule is skipped.
    jobs, skips = rules(extend_rule("extend.index = 2")).followups(SUCCEEDED, job(provider="acedata", prompt=None))
    assert jobs == [] and "extend needs a prompt" in skips[0].reason and skips[0].origin is None


def test_limits_default_and_empty_file() -> None:
    assert RuleSet.parse("").limits.max_depth == 2
    assert RuleSet.parse("").rules == ()
    assert RuleSet.parse("[limits]\nmax_depth = 0\n").limits.max_depth == 0
    assert RuleSet.empty().followups(SUCCEEDED, job()) == ([], [])


@pytest.mark.parametrize(
    ("index", "videos", "extended"),
    [
        ("2", 4, [2]),
        ("[3, 1]", 4, [3, 1]),
        ('"all"', 4, [0, 1, 2, 3]),
        ('"all"', 2, [0, 1]),
        ("[0, 3]", 2, [0]),  # the job has no take 3: skipped, not an error
        ("3", 1, []),
    ],
)
def test_extend_index_forms(index: str, videos: int, extended: list[int]) -> None:
    ruleset = rules(extend_rule(f"extend.index = {index}"))
    jobs, skips = ruleset.followups(SUCCEEDED, job(videos=videos))
    assert [new.params["index"] for new in jobs] == extended
    assert skips == []


def test_origin_is_rule_job_and_index_and_distinct_per_index() -> None:
    ruleset = rules(extend_rule('extend.index = "all"', name="every-take"))
    jobs, _ = ruleset.followups(event(EventType.JOB_SUCCEEDED, "j-9"), job(id="j-9"))
    assert [new.origin for new in jobs] == [f"every-take:j-9:{index}" for index in range(4)]
    assert {(new.parent_id, new.rule, new.provider, new.action) for new in jobs} == {
        ("j-9", "every-take", "ttapi", "extend")
    }


def test_no_template_and_no_motion_leave_the_keys_out() -> None:
    jobs, _ = rules(extend_rule("extend.index = 1")).followups(SUCCEEDED, job())
    assert [new.params for new in jobs] == [{"index": 1}]


def test_template_renders_every_field() -> None:
    template = "{prompt}|{id}|{provider}|{action}|{provider_job_id}|{root_id}|{depth}|{index}|{rule}|{{x}}|{depth:03d}"
    ruleset = rules(extend_rule("extend.index = [1, 2]", f'extend.prompt = "{template}"', name="t"), max_depth=5)
    parent = job(id="p-1", provider="acedata", action="extend", depth=1)  # AceData's extend takes a prompt
    jobs, _ = ruleset.followups(event(EventType.JOB_SUCCEEDED, "p-1"), parent)
    assert [new.params["prompt"] for new in jobs] == [
        "a red fox in snow|p-1|acedata|extend|tt-p-1|root-job|1|1|t|{x}|001",
        "a red fox in snow|p-1|acedata|extend|tt-p-1|root-job|1|2|t|{x}|001",
    ]


def test_template_without_a_parent_prompt_renders_empty() -> None:
    ruleset = rules(extend_rule("extend.index = 0", 'extend.prompt = "[{prompt}] more"'))
    jobs, _ = ruleset.followups(SUCCEEDED, job(provider="acedata", prompt=None))
    assert jobs[0].params["prompt"] == "[] more"


# --- filters ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "parent", "fires"),
    [
        ('when.action = "generate"', job(action="generate"), True),
        ('when.action = "generate"', job(action="extend", depth=1), False),
        ('when.action = ["generate", "extend"]', job(action="extend", depth=1), True),
        ('when.provider = "ttapi"', job(provider="ttapi"), True),
        ('when.provider = ["ttapi"]', job(provider="other"), False),
        ("when.prompt_matches = '(?i)\\bFOX\\b'", job(prompt="a red fox in snow"), True),
        ("when.prompt_matches = 'fox'", job(prompt="a grey wolf"), False),
        ("when.prompt_matches = 'snow$'", job(prompt="a red fox in snow"), True),  # search, not match
        ("when.prompt_matches = '^$'", job(prompt=None), True),  # no prompt is searched as ""
    ],
)
def test_when_filters(when: str, parent: Job, fires: bool) -> None:
    ruleset = rules(extend_rule(when, "extend.index = 0"))
    jobs, skips = ruleset.followups(SUCCEEDED, parent)
    assert len(jobs) == (1 if fires else 0)
    assert skips == []


def test_every_filter_must_match() -> None:
    ruleset = rules(extend_rule('when.action = "generate"', "when.prompt_matches = 'fox'", "extend.index = 0"))
    assert len(ruleset.followups(SUCCEEDED, job(prompt="fox"))[0]) == 1
    assert ruleset.followups(SUCCEEDED, job(prompt="wolf"))[0] == []


def test_rule_fires_only_on_its_event() -> None:
    ruleset = rules(extend_rule("extend.index = 0"))
    for other in (EventType.JOB_SUBMITTED, EventType.JOB_FAILED, EventType.VIDEO_FAILED):
        assert ruleset.followups(event(other, video_index=0), job()) == ([], [])
    assert ruleset.followups(event(EventType.VIDEO_DOWNLOADED, video_index=0), job()) == ([], [])


def test_several_rules_each_fire() -> None:
    ruleset = rules(extend_rule("extend.index = 0", name="a") + extend_rule("extend.index = 0", name="b"))
    jobs, _ = ruleset.followups(SUCCEEDED, job())
    assert [new.origin for new in jobs] == ["a:job-1:0", "b:job-1:0"]


def test_event_about_another_job_is_refused() -> None:
    with pytest.raises(ValueError, match="event 7 is about job other, not job-1"):
        RuleSet.empty().followups(event(EventType.JOB_SUCCEEDED, "other"), job())


# --- video.downloaded ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "downloaded", "extended"), [("[0, 2]", 2, [2]), ("[0, 2]", 1, []), ('"all"', 3, [3])]
)
def test_video_downloaded_extends_that_video_only(index: str, downloaded: int, extended: list[int]) -> None:
    ruleset = rules(extend_rule(f"extend.index = {index}", name="dl", on="video.downloaded"))
    jobs, skips = ruleset.followups(event(EventType.VIDEO_DOWNLOADED, video_index=downloaded), job())
    assert [(new.params["index"], new.origin) for new in jobs] == [(i, f"dl:job-1:{i}") for i in extended]
    assert skips == []


def test_video_downloaded_rule_ignores_job_succeeded() -> None:
    ruleset = rules(extend_rule('extend.index = "all"', on="video.downloaded"))
    assert ruleset.followups(SUCCEEDED, job()) == ([], [])


# --- limits and skips ------------------------------------------------------------------------------------------------


def test_depth_limit_skips() -> None:
    ruleset = rules(extend_rule('extend.index = "all"', name="deep"), max_depth=2)
    jobs, skips = ruleset.followups(SUCCEEDED, job(action="extend", depth=2))
    assert jobs == []
    assert skips == [Skip(rule="deep", job_id="job-1", reason="max_depth 2 reached (job depth 2)", limit=True)]


def test_depth_just_under_the_limit_is_allowed() -> None:
    jobs, skips = rules(extend_rule("extend.index = 0"), max_depth=2).followups(SUCCEEDED, job(depth=1))
    assert len(jobs) == 1 and skips == []


def test_max_depth_zero_stops_every_follow_up() -> None:
    jobs, skips = rules(extend_rule("extend.index = 0"), max_depth=0).followups(SUCCEEDED, job())
    assert jobs == [] and [skip.reason for skip in skips] == ["max_depth 0 reached (job depth 0)"]


def test_provider_that_cannot_extend_is_skipped_at_run_time() -> None:
    ruleset = rules(extend_rule("extend.index = 0", name="any"), providers=WITH_STILLS)
    jobs, skips = ruleset.followups(SUCCEEDED, job(provider="stills"))
    assert jobs == []
    assert skips == [Skip("any", "job-1", "provider stills cannot extend")]
    assert len(ruleset.followups(SUCCEEDED, job(provider="ttapi"))[0]) == 1


def test_unsucceeded_job_is_skipped() -> None:
    jobs, skips = rules(extend_rule("extend.index = 0")).followups(SUCCEEDED, job(status=JobStatus.RUNNING))
    assert jobs == []
    assert skips == [Skip("r", "job-1", "job is running; only a succeeded job can be followed up")]


# --- validation errors -----------------------------------------------------------------------------------------------

EVENTS = "job.submitted, job.succeeded, job.failed, video.downloaded, video.failed"
FIELDS = "prompt, id, provider, action, provider_job_id, root_id, depth, index, rule, image, images"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            extend_rule("extend.index = 7", name="extend-first"),
            'rules.toml: rule "extend-first": extend.index must be 0-3, a non-empty list of them, or "all", got 7',
        ),
        (
            extend_rule("extend.index = [0, 4]"),
            'rules.toml: rule "r": extend.index must be 0-3, a non-empty list of them, or "all", got [0, 4]',
        ),
        (
            extend_rule("extend.index = []"),
            'rules.toml: rule "r": extend.index must be 0-3, a non-empty list of them, or "all", got []',
        ),
        (
            extend_rule('extend.index = "first"'),
            'rules.toml: rule "r": extend.index must be 0-3, a non-empty list of them, or "all", got "first"',
        ),
        (
            extend_rule("extend.index = true"),
            'rules.toml: rule "r": extend.index must be 0-3, a non-empty list of them, or "all", got true',
        ),
        (
            extend_rule("extend.index = [1, 0, 1]"),
            'rules.toml: rule "r": extend.index lists 1 more than once, got [1, 0, 1]',
        ),
        (
            extend_rule('extend.motion = "low"'),
            'rules.toml: rule "r": extend.index is required: 0-3, a list of them, or "all"',
        ),
        (
            extend_rule("extend.index = 0", 'extend.motion = "fast"'),
            'rules.toml: rule "r": extend.motion must be "low" or "high", got "fast"',
        ),
        (
            extend_rule("extend.index = 0", 'extend.prompt = "{promt}, more"', name="extend-first"),
            f'rules.toml: rule "extend-first": extend.prompt uses unknown field {{promt}}; available: {FIELDS}',
        ),
        (
            extend_rule("extend.index = 0", 'extend.prompt = "{prompt.upper}"'),
            f'rules.toml: rule "r": extend.prompt uses unknown field {{prompt.upper}}; available: {FIELDS}',
        ),
        (
            extend_rule("extend.index = 0", 'extend.prompt = "{prompt[0]}"'),
            f'rules.toml: rule "r": extend.prompt uses unknown field {{prompt[0]}}; available: {FIELDS}',
        ),
        (
            extend_rule("extend.index = 0", 'extend.prompt = "{}"'),
            f'rules.toml: rule "r": extend.prompt uses unknown field {{}}; available: {FIELDS}',
        ),
        (
            extend_rule("extend.index = 0", 'extend.prompt = "{prompt:>{width}}"'),
            f'rules.toml: rule "r": extend.prompt uses unknown field {{width}}; available: {FIELDS}',
        ),
        (
            extend_rule("extend.index = 0", 'extend.prompt = "{prompt!x}"'),
            'rules.toml: rule "r": extend.prompt is not a valid template (Unknown conversion specifier x), '
            'got "{prompt!x}"',
        ),
        (
            extend_rule("extend.index = 0", 'extend.prompt = "{prompt:d}"'),
            "rules.toml: rule \"r\": extend.prompt is not a valid template (Unknown format code 'd' for object of "
            "type 'str'), got \"{prompt:d}\"",
        ),
        (
            extend_rule("extend.index = 0", 'extend.prompt = "{prompt"'),
            "rules.toml: rule \"r\": extend.prompt is not a valid template (expected '}' before end of string), "
            'got "{prompt"',
        ),
        (
            extend_rule("extend.index = 0", "extend.prompt = 3"),
            'rules.toml: rule "r": extend.prompt must be a string, got 3',
        ),
        (
            extend_rule("extnd.index = 0", name="extend-first"),
            'rules.toml: rule "extend-first": unknown key "extnd" (did you mean "extend"?); '
            "expected name, on, when, extend, video, action, notify",
        ),
        (
            extend_rule("extend.index = 0", "extend.indexes = 1"),
            'rules.toml: rule "r": unknown key "extend.indexes" (did you mean "extend.index"?); '
            "expected extend.index, extend.prompt, extend.motion",
        ),
        (
            extend_rule('when.acton = "generate"', "extend.index = 0"),
            'rules.toml: rule "r": unknown key "when.acton" (did you mean "when.action"?); '
            "expected when.action, when.provider, when.prompt_matches",
        ),
        (
            "[limits]\nmax_dept = 1\n",
            'rules.toml: [limits]: unknown key "max_dept" (did you mean "max_depth"?); '
            "expected max_depth, max_jobs_per_root, max_jobs_per_day",
        ),
        (
            "[limit]\nmax_depth = 1\n",
            'rules.toml: unknown key "limit" (did you mean "limits"?); expected limits, rule',
        ),
        (
            extend_rule("extend.index = 0", name="twice") + extend_rule("extend.index = 1", name="twice"),
            'rules.toml: rule "twice": name is already used by rule #1; rule names must be unique',
        ),
        (
            extend_rule("extend.index = 0") + '[[rule]]\non = "job.succeeded"\nextend.index = 0\n',
            "rules.toml: rule #2: name is required",
        ),
        (
            '[[rule]]\nname = ""\non = "job.succeeded"\nextend.index = 0\n',
            'rules.toml: rule #1: name must be a non-empty string, got ""',
        ),
        (
            extend_rule("extend.index = 0", on="job.succeded"),
            f'rules.toml: rule "r": on must be one of {EVENTS}, got "job.succeded"',
        ),
        (
            '[[rule]]\nname = "r"\nextend.index = 0\n',
            f'rules.toml: rule "r": on must be one of {EVENTS}, got nothing',
        ),
        (
            extend_rule("extend.index = 0", on="job.failed", name="retry-extend"),
            'rules.toml: rule "retry-extend": extend can only run on job.succeeded or video.downloaded, '
            'got on = "job.failed"',
        ),
        (
            extend_rule('when.action = "generate"'),
            'rules.toml: rule "r": does nothing; add a follow-up such as extend.index = 0',
        ),
        (
            extend_rule("when.prompt_matches = '(fox'", "extend.index = 0", name="foxes"),
            'rules.toml: rule "foxes": when.prompt_matches is not a valid regular expression '
            '(missing ), unterminated subpattern at position 0), got "(fox"',
        ),
        (
            extend_rule('when.provider = ["ttapi", "ttapii"]', "extend.index = 0"),
            'rules.toml: rule "r": when.provider names unknown provider "ttapii"; known: '
            + ", ".join(sorted(PROVIDERS)),
        ),
        (
            extend_rule('when.action = "generat"', "extend.index = 0"),
            'rules.toml: rule "r": when.action names unknown action "generat"; known: blend, describe, extend, '
            "generate, imagine, inpaint, seed, upsample1, upsample2, upsample3, upsample4, variation1, variation2, "
            "variation3, variation4",
        ),
        (
            extend_rule("when.action = []", "extend.index = 0"),
            'rules.toml: rule "r": when.action must be a name or a non-empty list of names, got []',
        ),
        (
            '[[rule]]\nname = "r"\non = "job.succeeded"\nwhen = "generate"\nextend.index = 0\n',
            'rules.toml: rule "r": when must be a table (when.action = ...), got "generate"',
        ),
        (
            '[[rule]]\nname = "r"\non = "job.succeeded"\nextend = 0\n',
            'rules.toml: rule "r": extend must be a table (extend.index = 0), got 0',
        ),
        (
            '[rule]\nname = "r"\n',
            "rules.toml: rules are written as [[rule]] tables (two brackets), got a table",
        ),
        ("[limits]\nmax_depth = -1\n", "rules.toml: [limits]: max_depth must be a whole number >= 0, got -1"),
        ('[limits]\nmax_depth = "2"\n', 'rules.toml: [limits]: max_depth must be a whole number >= 0, got "2"'),
        ("[limits]\nmax_depth = 1.5\n", "rules.toml: [limits]: max_depth must be a whole number >= 0, got 1.5"),
        ("[limits]\nmax_depth = true\n", "rules.toml: [limits]: max_depth must be a whole number >= 0, got true"),
        ("limits = 3\n", "rules.toml: limits must be a [limits] table, got 3"),
    ],
)
def test_validation_errors(text: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        RuleSet.parse(text)
    assert str(caught.value) == message


def test_provider_that_cannot_extend_is_refused_by_name() -> None:
    text = extend_rule('when.provider = ["ttapi", "stills"]', "extend.index = 0", name="extend-first")
    with pytest.raises(RuleError) as caught:
        RuleSet.parse(text, providers=WITH_STILLS)
    assert str(caught.value) == (
        'rules.toml: rule "extend-first": extend needs a provider that can extend; when.provider names "stills", '
        "which supports only generate"
    )


def test_invalid_toml_names_the_source_and_line() -> None:
    with pytest.raises(RuleError) as caught:
        RuleSet.parse('[[rule]]\nname = "r"\non = job.succeeded\n', source="mine.toml")
    assert isinstance(caught.value, ValueError)
    assert re.fullmatch(r"mine\.toml: .*\(at line 3, column 6\)", str(caught.value))


def test_source_names_the_file_in_every_error() -> None:
    with pytest.raises(RuleError, match=r'^custom\.toml: rule "r": extend\.index must be'):
        RuleSet.parse(extend_rule("extend.index = 9"), source="custom.toml")


# --- files -----------------------------------------------------------------------------------------------------------


def test_load_uses_the_file_name_as_source(tmp_path: Path) -> None:
    path = tmp_path / "my-rules.toml"
    path.write_text(extend_rule("extend.index = 0", on="job.failed"), encoding="utf-8")
    with pytest.raises(RuleError, match=r'^my-rules\.toml: rule "r": extend can only run on'):
        RuleSet.load(path)


def test_load_of_a_missing_file_is_a_rule_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(RuleError) as caught:
        RuleSet.load(path)
    assert str(caught.value) == f"{path}: cannot read the rules file: No such file or directory"


def test_load_of_a_binary_file_is_a_rule_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(RuleError, match=r"^rules\.toml: the rules file is not UTF-8 text"):
        RuleSet.load(path)


def test_load_passes_providers_through(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(extend_rule('when.provider = "stills"', "extend.index = 0"), encoding="utf-8")
    with pytest.raises(RuleError, match="supports only generate"):
        RuleSet.load(path, providers=WITH_STILLS)


def test_check_rules_file_summarises(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[limits]\nmax_depth = 3\n" + extend_rule("extend.index = 0"), encoding="utf-8")
    assert check_rules_file(path) == "rules.toml: 1 rule, max_depth 3"
    path.write_text(ISSUE_EXAMPLE + extend_rule("extend.index = 1", name="second"), encoding="utf-8")
    assert check_rules_file(path) == "rules.toml: 2 rules, max_depth 2"
    path.write_text(extend_rule("extend.index = 5"), encoding="utf-8")
    with pytest.raises(RuleError, match=r'^rules\.toml: rule "r": extend\.index'):
        check_rules_file(path)


def test_example_file_loads_and_extends_the_first_take_twice() -> None:
    example = REPO / "rules.example.toml"
    assert check_rules_file(example) == "rules.example.toml: 2 rules, max_depth 2"
    ruleset = RuleSet.load(example)
    assert ruleset.rules[0].name == "extend-first" and ruleset.rules[0].actions == frozenset({"generate"})

    first, dropped = ruleset.followups(event(EventType.JOB_SUCCEEDED, "g"), job(id="g"))
    assert [(new.origin, new.params) for new in first] == [("extend-first:g:0", {"index": 0, "motion": "high"})]
    assert [skip.origin for skip in dropped] == ["extend-first:g:0"]  # TTAPI: the prompt is not sent, and noted
    second, _ = ruleset.followups(event(EventType.JOB_SUCCEEDED, "e1"), job(id="e1", action="extend", depth=1))
    assert [new.origin for new in second] == ["extend-again:e1:0"]
    third, skips = ruleset.followups(event(EventType.JOB_SUCCEEDED, "e2"), job(id="e2", action="extend", depth=2))
    assert third == [] and skips == [Skip("extend-again", "e2", "max_depth 2 reached (job depth 2)", limit=True)]
    # Its rules name the providers that can extend: a WaveSpeed or APIMart job fires none, and so leaves no skip.
    for provider in ("wavespeed", "apimart"):
        for action in ("generate", "extend"):
            made, skipped = ruleset.followups(event(EventType.JOB_SUCCEEDED, "w"), job(id="w", provider=provider,
                                              action=action))  # fmt: skip
            assert (made, skipped) == ([], []), (provider, action)
