"""The follow-ups beyond extend: `video` (animate on any provider), `action` (an image action), `notify`."""

from __future__ import annotations

import dataclasses

import pytest

from receiver.rules import RuleError, RuleSet
from storage import EventType, JobStatus
from submitter.providers import PROVIDERS, InvalidParams, Provider
from tests.receiver.test_rules import SUCCEEDED, event, job

TTAPI = PROVIDERS["ttapi"]


def _needs_image(action: str, params: object) -> None:
    if not isinstance(params, dict) or not str(params.get("image_url", "")).startswith("http"):
        raise InvalidParams("image_url is required")


# A video-only provider that can neither extend nor act on images, and checks what it is given.
CLIPS = dataclasses.replace(TTAPI, name="clips", actions=frozenset({"generate"}), component_actions=False,
                            validate_params=_needs_image)  # fmt: skip
PROVIDERS_PLUS: dict[str, Provider] = {**PROVIDERS, "clips": CLIPS}

IMAGINE_TO_VIDEO = """
[[rule]]
name = "upscale"
on = "job.succeeded"
when.action = "imagine"
action = { name = "upsample2" }

[[rule]]
name = "animate"
on = "job.succeeded"
when.action = "upsample2"
video = { provider = "clips", image = "{image}", prompt = "{prompt}, slowly", motion = "low" }
"""


def imagine_job(**overrides: object) -> object:
    base = job(action="imagine", videos=4, prompt="a harbour at dawn")
    result = {"components": ["upsample1", "upsample2", "upsample3", "upsample4", "variation1"]}
    return dataclasses.replace(base, result=result, **overrides)


def test_an_imagine_is_upscaled_then_animated_on_another_provider() -> None:
    ruleset = RuleSet.parse(IMAGINE_TO_VIDEO, providers=PROVIDERS_PLUS)
    imagine = imagine_job()
    jobs, skips = ruleset.followups(SUCCEEDED, imagine)  # type: ignore[arg-type]
    assert skips == [] and len(jobs) == 1
    [upscale] = jobs
    assert (upscale.provider, upscale.action, upscale.params, upscale.parent_id) == ("ttapi", "upsample2", {}, "job-1")
    assert upscale.origin == "upscale:job-1:upsample2"

    upscaled = job(id="job-2", action="upsample2", videos=1, depth=1)
    jobs, _ = ruleset.followups(event(EventType.JOB_SUCCEEDED, "job-2"), upscaled)
    [animate] = jobs
    assert animate.provider == "clips" and animate.action == "generate" and animate.parent_id == "job-2"
    assert animate.params == {
        "image_url": "https://cdn.example/job-2/0.mp4",
        "prompt": "a red fox in snow, slowly",
        "motion": "low",
    }
    assert animate.origin == "animate:job-2:video"


def test_an_action_the_result_does_not_list_is_skipped() -> None:
    text = IMAGINE_TO_VIDEO.replace('name = "upsample2"', 'name = "zoom_out_2x"')
    ruleset = RuleSet.parse(text, providers=PROVIDERS_PLUS)
    jobs, skips = ruleset.followups(SUCCEEDED, imagine_job())  # type: ignore[arg-type]
    assert jobs == [] and "zoom_out_2x is not among the job's components" in skips[0].reason


def test_a_template_asking_for_a_missing_image_is_skipped_not_crashed() -> None:
    text = IMAGINE_TO_VIDEO.replace('image = "{image}"', 'image = "{images[3]}"')
    ruleset = RuleSet.parse(text, providers=PROVIDERS_PLUS)
    one_image = job(id="job-2", action="upsample2", videos=1)
    jobs, skips = ruleset.followups(event(EventType.JOB_SUCCEEDED, "job-2"), one_image)
    assert jobs == [] and "fewer than the template asks for" in skips[0].reason


def test_depth_limits_video_and_action_follow_ups_too() -> None:
    ruleset = RuleSet.parse("[limits]\nmax_depth = 1\n" + IMAGINE_TO_VIDEO, providers=PROVIDERS_PLUS)
    deep = dataclasses.replace(job(id="job-2", action="upsample2", videos=1), depth=1)
    jobs, skips = ruleset.followups(event(EventType.JOB_SUCCEEDED, "job-2"), deep)
    assert jobs == [] and skips[0].reason == "max_depth 1 reached (job depth 1)"


def test_notify_fires_on_any_event_and_matching_filters() -> None:
    text = '[[rule]]\nname = "tell"\non = "job.failed"\nwhen.provider = "ttapi"\n'
    text += 'notify = { url = "http://127.0.0.1:9/x" }\n'
    ruleset = RuleSet.parse(text)
    failed = job(status=JobStatus.FAILED, videos=0)
    assert ruleset.notifications(event(EventType.JOB_FAILED), failed) == [("tell", "http://127.0.0.1:9/x")]
    assert ruleset.notifications(SUCCEEDED, job()) == []
    assert ruleset.followups(event(EventType.JOB_FAILED), failed) == ([], [])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'on = "job.succeeded"\nwhen.action = "generate"\naction = { name = "upsample1" }',
            'rule "r": action.name acts on an image result: when.action must name image jobs (imagine, blend, '
            "upsample1, ...), got generate",
        ),
        (
            'on = "job.succeeded"\naction = { name = "upsample1" }',
            "action.name acts on an image result: when.action must name image jobs",
        ),
        (
            'on = "job.succeeded"\nwhen.action = "imagine"\nwhen.provider = "clips"\naction = { name = "upsample1" }',
            'upsample1 needs a provider that can upsample1; when.provider names "clips"',
        ),
        (
            'on = "job.succeeded"\nwhen.provider = "clips"\nextend.index = 0',
            'extend needs a provider that can extend; when.provider names "clips"',
        ),
        ('on = "job.succeeded"\nvideo = { provider = "nosuch", image = "{image}" }', "video.provider must be one of"),
        (
            'on = "job.succeeded"\nvideo = { provider = "clips", prompt = "{prompt}" }',
            'rule "r": video: clips would refuse this job: image_url is required',
        ),
        (
            'on = "job.succeeded"\nvideo = { provider = "clips", image = "{images[9]}" }',
            "video.image is not a valid template (list index out of range)",
        ),
        (
            'on = "job.succeeded"\nvideo = { provider = "clips", image = "{prompt[0]}" }',
            "video.image uses unknown field {prompt[0]}",
        ),
        ('on = "job.succeeded"\nnotify = { url = "ftp://x" }', 'notify.url must be an http(s) URL, got "ftp://x"'),
        ('on = "job.failed"\nvideo = { provider = "clips", image = "{image}" }', "generate can only run on"),
        ('on = "job.succeeded"\nvideo = { provider = "clips", imgae = "{image}" }', 'unknown key "video.imgae"'),
    ],
)
def test_refused_at_load_naming_the_rule_and_field(body: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        RuleSet.parse(f'[[rule]]\nname = "r"\n{body}\n', providers=PROVIDERS_PLUS)
    assert message in str(caught.value) and str(caught.value).startswith('rules.toml: rule "r": ')


def test_a_follow_up_its_provider_would_refuse_is_skipped_with_the_reason() -> None:
    # AceData has no motion setting: an extend rule asking for one must not quietly drop it.
    ruleset = RuleSet.parse('[[rule]]\nname = "r"\non = "job.succeeded"\nextend.index = 0\nextend.motion = "high"\n')
    acedata_job = dataclasses.replace(job(provider="acedata"), result={"video_id": "1751816807896311"})
    jobs, skips = ruleset.followups(SUCCEEDED, acedata_job)
    assert jobs == [] and skips[0].rule == "r" and skips[0].reason.startswith("acedata would refuse the extend: ")
    assert "motion" in skips[0].reason
    ttapi_jobs, _ = ruleset.followups(SUCCEEDED, job())
    assert [new.params for new in ttapi_jobs] == [{"index": 0, "motion": "high"}]
