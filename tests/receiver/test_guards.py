"""The money guards: the `[limits]` that count jobs, the notes a stopped follow-up leaves, and the kill switch."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from receiver.followups import FollowUps
from receiver.guards import pause, paused, resume
from receiver.rules import Limits, RuleError, RuleSet
from receiver.views import job_json
from storage import CallbackResult, Job, JobStatus, NewJob, Store
from submitter.providers import PROVIDERS
from submitter.tokens import HookSigner
from submitter.worker import Endpoint, Submitter

pytestmark = pytest.mark.anyio

EXTEND_ALL = """
[[rule]]
name = "extend-all"
on = "job.succeeded"
when.action = "generate"
extend.index = "all"
"""
EXTEND_TWO = """
[[rule]]
name = "extend-two"
on = "job.succeeded"
when.action = "generate"
extend.index = [0, 1]
"""
EXTEND_AGAIN = """
[[rule]]
name = "extend-again"
on = "job.succeeded"
when.action = "extend"
extend.index = 0
"""
NOTIFY = """
[[rule]]
name = "tell-me"
on = "job.succeeded"
notify = { url = "https://hooks.example/done" }
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "reelhook.sqlite3", clock=clock) as opened:
        yield opened


def rules(limits: str, *bodies: str) -> RuleSet:
    return RuleSet.parse("[limits]\n" + limits + "\n" + "".join(bodies))


async def succeed(store: Store, job_id: str, videos: int = 4) -> None:
    """Take `job_id` through the provider: submitted, then succeeded with `videos` files."""
    await store.claim_submission(job_id)
    await store.record_submitted(job_id, f"tt-{job_id}")
    urls = tuple(f"https://cdn.example/{job_id}/{index}.mp4" for index in range(videos))
    result = CallbackResult(f"tt-{job_id}", JobStatus.SUCCEEDED, 100, urls)
    await store.record_callback(job_id, "ttapi", body=b"{}", headers=[], result=result)


async def submitted_by_hand(store: Store, prompt: str = "a fox") -> str:
    job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": prompt, "image_url": "https://i/a.png"}))
    return job.id


async def children(store: Store, parent_id: str) -> list[Job]:
    return sorted(
        (job for job in await store.list_jobs(limit=500) if job.parent_id == parent_id),
        key=lambda job: job.params["index"],
    )


async def notes(store: Store, job_id: str) -> list[tuple[str | None, str]]:
    job = await store.get_job(job_id)
    assert job is not None
    return [(note.rule, note.message) for note in job.notes]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "reelhook.followups" and r.levelno == logging.WARNING]


# --- the [limits] table --------------------------------------------------------------------------------------------


def test_counting_limits_are_optional_whole_numbers() -> None:
    assert RuleSet.parse("").limits == Limits(max_depth=2, max_jobs_per_root=None, max_jobs_per_day=None)
    limits = rules("max_jobs_per_root = 1\nmax_jobs_per_day = 0").limits
    assert (limits.max_depth, limits.max_jobs_per_root, limits.max_jobs_per_day) == (2, 1, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_jobs_per_root = 0", "rules.toml: [limits]: max_jobs_per_root must be a whole number >= 1, got 0"),
        ('max_jobs_per_root = "3"', 'rules.toml: [limits]: max_jobs_per_root must be a whole number >= 1, got "3"'),
        ("max_jobs_per_day = -1", "rules.toml: [limits]: max_jobs_per_day must be a whole number >= 0, got -1"),
        ("max_jobs_per_day = 2.5", "rules.toml: [limits]: max_jobs_per_day must be a whole number >= 0, got 2.5"),
        ("max_jobs_per_day = true", "rules.toml: [limits]: max_jobs_per_day must be a whole number >= 0, got true"),
        (
            "max_jobs_per_dya = 3",
            'rules.toml: [limits]: unknown key "max_jobs_per_dya" (did you mean "max_jobs_per_day"?); '
            "expected max_depth, max_jobs_per_root, max_jobs_per_day",
        ),
    ],
)
def test_counting_limits_are_checked_at_load_time(text: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        rules(text)
    assert str(caught.value) == message


def test_the_example_file_sets_the_counting_limits() -> None:
    limits = RuleSet.load(Path(__file__).resolve().parents[2] / "rules.example.toml").limits
    assert limits.max_jobs_per_root is not None and limits.max_jobs_per_day is not None


# --- max_jobs_per_root ---------------------------------------------------------------------------------------------


async def test_one_event_is_cut_at_max_jobs_per_root(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    root = await submitted_by_hand(store)
    await succeed(store, root)
    assert await FollowUps(store, rules("max_jobs_per_root = 3", EXTEND_ALL)).run_once() == 2
    assert [job.params["index"] for job in await children(store, root)] == [0, 1]  # the root + 2 = 3 jobs
    assert await store.count_root_jobs(root) == 3
    expected = f"max_jobs_per_root 3 reached (3 jobs in the chain of root job {root}); not submitted: ttapi extend"
    assert await notes(store, root) == [
        ("extend-all", f"{expected} of index 2"),
        ("extend-all", f"{expected} of index 3"),
    ]
    assert [message for message in warnings(caplog)] == [
        f'rule "extend-all" did not follow up job {root}: {expected} of index {index}' for index in (2, 3)
    ]
    assert await store.pending_events() == []


async def test_max_jobs_per_root_counts_the_chain_across_events(store: Store) -> None:
    ruleset = rules("max_depth = 5\nmax_jobs_per_root = 2", EXTEND_TWO.replace("[0, 1]", "0"), EXTEND_AGAIN)
    root = await submitted_by_hand(store)
    await succeed(store, root)
    await FollowUps(store, ruleset).run_once()
    [extension] = await children(store, root)
    await succeed(store, extension.id, videos=1)
    await FollowUps(store, ruleset).run_once()
    assert await children(store, extension.id) == []
    assert await store.count_root_jobs(root) == 2
    [(rule, message)] = await notes(store, extension.id)
    assert rule == "extend-again" and message.startswith("max_jobs_per_root 2 reached (2 jobs in the chain")
    assert await notes(store, root) == []


async def test_notes_show_in_the_job_json(store: Store) -> None:
    root = await submitted_by_hand(store)
    await succeed(store, root)
    await FollowUps(store, rules("max_jobs_per_root = 1", EXTEND_TWO)).run_once()
    job = await store.get_job(root)
    assert job is not None
    shown = job_json(job)["notes"]
    assert [note["rule"] for note in shown] == ["extend-two", "extend-two"]
    assert all(note["message"].startswith("max_jobs_per_root 1 reached") for note in shown)


# --- max_jobs_per_day ----------------------------------------------------------------------------------------------


async def test_max_jobs_per_day_counts_all_rules_and_rolls(
    store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ruleset = rules("max_jobs_per_day = 3", EXTEND_TWO)
    first = await submitted_by_hand(store, "first")
    await succeed(store, first)
    await FollowUps(store, ruleset).run_once()
    assert len(await children(store, first)) == 2

    clock.now += 3600
    second = await submitted_by_hand(store, "second")  # a job submitted by hand does not count
    await succeed(store, second)
    await FollowUps(store, ruleset).run_once()
    assert [job.params["index"] for job in await children(store, second)] == [0]
    stopped = "max_jobs_per_day 3 reached (3 follow-ups in the last 24 h); not submitted: ttapi extend of index 1"
    assert await notes(store, second) == [("extend-two", stopped)]
    assert warnings(caplog) == [f'rule "extend-two" did not follow up job {second}: {stopped}']

    clock.now += 24 * 3600 - 3600 - 1  # the first job's two follow-ups are 1 s short of 24 h old: they still count
    third = await submitted_by_hand(store, "third")
    await succeed(store, third)
    await FollowUps(store, ruleset).run_once()
    assert await children(store, third) == []
    assert [message for _, message in await notes(store, third)] == [
        f"max_jobs_per_day 3 reached (3 follow-ups in the last 24 h); not submitted: ttapi extend of index {index}"
        for index in (0, 1)
    ]

    clock.now += 2  # now they have rolled out of the window; the second job's one follow-up still counts
    fourth = await submitted_by_hand(store, "fourth")
    await succeed(store, fourth)
    await FollowUps(store, ruleset).run_once()
    assert [job.params["index"] for job in await children(store, fourth)] == [0, 1]
    assert await notes(store, fourth) == []


async def test_max_jobs_per_day_zero_stops_every_follow_up(store: Store) -> None:
    root = await submitted_by_hand(store)
    await succeed(store, root)
    await FollowUps(store, rules("max_jobs_per_day = 0", EXTEND_ALL)).run_once()
    assert await children(store, root) == []
    assert len(await notes(store, root)) == 4


async def test_without_counting_limits_every_follow_up_is_recorded(store: Store) -> None:
    root = await submitted_by_hand(store)
    await succeed(store, root)
    await FollowUps(store, rules("", EXTEND_ALL)).run_once()
    assert len(await children(store, root)) == 4 and await notes(store, root) == []


# --- the skips the rules return ------------------------------------------------------------------------------------


async def test_a_max_depth_skip_becomes_a_note_and_a_warning(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    root = await submitted_by_hand(store)
    await succeed(store, root)
    await FollowUps(store, rules("max_depth = 0", EXTEND_ALL)).run_once()
    assert await children(store, root) == []
    assert await notes(store, root) == [("extend-all", "max_depth 0 reached (job depth 0)")]
    assert warnings(caplog) == [f'rule "extend-all" did not follow up job {root}: max_depth 0 reached (job depth 0)']


async def test_a_follow_up_the_provider_cannot_make_is_logged_once_at_info(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    job, _ = await store.create_job(
        NewJob("wavespeed", "generate", {"prompt": "a fox", "image_url": "https://i/a.png"})
    )
    await store.claim_submission(job.id)
    await store.record_submitted(job.id, "ws-1")
    result = CallbackResult("ws-1", JobStatus.SUCCEEDED, 100, ("https://cdn.example/ws-1.mp4",))
    await store.record_callback(job.id, "wavespeed", body=b"{}", headers=[], result=result)
    await FollowUps(store, rules("", EXTEND_ALL)).run_once()
    assert await children(store, job.id) == []
    assert await notes(store, job.id) == [("extend-all", "provider wavespeed cannot extend")]
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "did not follow up" in r.getMessage()]
    assert said == [
        (logging.INFO, f'rule "extend-all" did not follow up job {job.id}: provider wavespeed cannot extend')
    ]


# --- the kill switch -----------------------------------------------------------------------------------------------


async def test_while_paused_events_wait_and_yield_their_follow_ups_once_after_resume(store: Store) -> None:
    ruleset = rules("", EXTEND_TWO, NOTIFY)
    await pause(store, "checking the bill")
    assert await paused(store) == "checking the bill"
    root = await submitted_by_hand(store)
    await succeed(store, root)  # the callback is still stored and applied
    assert await store.callback_count(root) == 1
    worker = FollowUps(store, ruleset)
    assert await worker.run_once() == 0
    assert [event.type for event in await store.pending_events()] == ["job.submitted", "job.succeeded"]
    assert await children(store, root) == []
    assert await store.due_notifications(limit=10) == []

    await resume(store)
    assert await paused(store) is None
    assert await worker.run_once() == 2
    assert await worker.run_once() == 0
    assert [job.params["index"] for job in await children(store, root)] == [0, 1]
    assert [n.rule for n in await store.due_notifications(limit=10)] == ["tell-me"]
    assert await store.pending_events() == []


async def test_a_pause_always_has_a_reason(store: Store) -> None:
    await pause(store, "  ")
    assert await paused(store) == "no reason given"
    await resume(store)
    await resume(store)  # resuming a running service changes nothing
    assert await paused(store) is None


# --- the submission worker while paused ----------------------------------------------------------------------------


class Peer:
    """A TTAPI that accepts everything and records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json={"status": "SUCCESS", "message": "", "data": {"jobId": f"tt-{len(self)}"}})

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def sent(self) -> list[tuple[str, str | None]]:
        return [(r.url.path, json.loads(r.content).get("prompt")) for r in self.requests]


async def test_queued_follow_ups_wait_while_paused_but_hand_submitted_jobs_go_out(store: Store) -> None:
    root = await submitted_by_hand(store, "the root")
    await succeed(store, root)
    followup, _ = await store.create_job(
        NewJob("ttapi", "extend", {"index": 0}, parent_id=root, rule="extend-two", origin=f"extend-two:{root}:0")
    )
    await pause(store, "over budget")
    by_hand = await submitted_by_hand(store, "asked for just now")
    peer = Peer()
    async with httpx.AsyncClient(transport=httpx.MockTransport(peer)) as http:
        worker = Submitter(
            store,
            http,
            {"ttapi": Endpoint(PROVIDERS["ttapi"], "http://ttapi.test", "key")},
            signer=HookSigner(["s" * 32], max_age=3600),
            public_url="https://hooks.example",
        )
        assert await worker.run_once() == 1
        assert await worker.run_once() == 0
        assert peer.sent == [("/midjourney/video/submit", "asked for just now")]
        held = await store.get_job(followup.id)
        sent = await store.get_job(by_hand)
        assert held is not None and held.status is JobStatus.QUEUED
        assert sent is not None and sent.status is JobStatus.SUBMITTED

        await resume(store)
        assert await worker.run_once() == 1
        assert [path for path, _ in peer.sent] == ["/midjourney/video/submit", "/midjourney/video/extend"]
        released = await store.get_job(followup.id)
        assert released is not None and released.status is JobStatus.SUBMITTED
