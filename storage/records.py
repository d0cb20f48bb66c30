"""The records reelhook keeps: jobs, their videos, events, and a parsed provider callback."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"  # recorded, waiting for a free provider slot (or a retry time)
    SUBMITTED = "submitted"  # handed to the provider; provider_job_id is None while the answer is unknown
    RUNNING = "running"  # the provider reported progress
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)

    @property
    def in_flight(self) -> bool:
        return self in (JobStatus.SUBMITTED, JobStatus.RUNNING)


class VideoStatus(StrEnum):
    PENDING = "pending"
    DOWNLOADED = "downloaded"
    FAILED = "failed"


class Action(StrEnum):
    GENERATE = "generate"
    EXTEND = "extend"


class EventType(StrEnum):
    JOB_SUBMITTED = "job.submitted"
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    VIDEO_DOWNLOADED = "video.downloaded"
    VIDEO_FAILED = "video.failed"


@dataclass(frozen=True)
class NewJob:
    """A job to record. `origin` makes a follow-up idempotent: one job per origin, ever."""

    provider: str
    action: str
    params: dict[str, Any]
    parent_id: str | None = None
    rule: str | None = None
    origin: str | None = None


@dataclass(frozen=True)
class Video:
    job_id: str
    index: int
    url: str
    status: VideoStatus
    path: str | None
    sha256: str | None
    bytes: int | None
    attempts: int
    next_attempt_at: float | None
    error: str | None
    updated_at: float
    claim_id: str | None = field(default=None, compare=False)  # set by claim_downloads: the fence of its outcome


@dataclass(frozen=True)
class Note:
    """Something a user should see on a job: a follow-up a rule asked for and a guard stopped, and why."""

    job_id: str
    rule: str | None
    message: str
    created_at: float = 0.0


@dataclass(frozen=True)
class Cost:
    """What a provider says a job cost, in the provider's own unit: TTAPI's `quota`, APIMart's `usd` and `credits`.

    Amounts in different units are never added; a job reported in two units (APIMart) carries one of each.
    """

    amount: float
    unit: str


@dataclass(frozen=True)
class Job:
    id: str
    provider: str
    action: str
    status: JobStatus
    params: dict[str, Any]
    provider_job_id: str | None
    parent_id: str | None
    root_id: str
    depth: int
    rule: str | None
    origin: str | None
    error: str | None
    progress: int | None
    result: dict[str, Any]
    attempts: int
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    videos: tuple[Video, ...] = ()
    notes: tuple[Note, ...] = ()
    reconciled_at: float | None = None  # last looked up at its provider
    sent_at: float | None = None  # claimed for sending: its deadlines count from here
    lookup_at: float | None = None  # while in flight: when it is next looked up (or given up on)
    lookups: int = 0  # how often it was looked up
    lost_at: float | None = None  # given up on: no result within the provider's give-up time
    costs: tuple[Cost, ...] = ()  # what its provider reported it cost (none: the provider reports no cost)

    @property
    def prompt(self) -> str | None:
        """The prompt asked for, or else the one the provider reports (an upsample carries its imagine's)."""
        for value in (self.params.get("prompt"), self.result.get("prompt")):
            if isinstance(value, str) and value:
                return value
        return None


@dataclass(frozen=True)
class Event:
    id: int
    type: EventType
    job_id: str
    video_index: int | None
    created_at: float
    claim_id: str | None = field(default=None, compare=False)  # set by claim_events: the fence of its completion


@dataclass(frozen=True)
class NewNotification:
    """A signed POST of an event to a URL, recorded with the event it reports."""

    rule: str
    url: str
    body: bytes


@dataclass(frozen=True)
class Notification:
    id: int
    event_id: int
    rule: str
    url: str
    message_id: str
    body: bytes
    attempts: int
    next_attempt_at: float | None
    delivered_at: float | None
    error: str | None
    claim_id: str | None = field(default=None, compare=False)  # set by claim_notifications: the fence of its outcome


@dataclass(frozen=True)
class CallbackResult:
    """What a provider's callback (or fetch answer) says about one of its jobs, in reelhook's terms.

    Provider modules build this from the wire format; the store applies it.
    `status` is RUNNING for any non-terminal report, SUCCEEDED or FAILED otherwise.
    `result` keeps provider fields a follow-up may need (AceData's `video_id`, TTAPI's `quota`).
    `costs` is what the provider says the job cost, read from a terminal report; empty when it says nothing.
    """

    provider_job_id: str | None
    status: JobStatus
    progress: int | None = None
    media_urls: tuple[str, ...] = ()
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    costs: tuple[Cost, ...] = ()
