"""What reelhook asks of its database, whichever engine holds it: the domain verbs, not SQL.

Two engines implement this: `storage.Store` (SQLite, one process, the default and the fastest on one machine) and
`storage.postgres.PostgresStore` (several processes on one PostgreSQL). Code outside `storage/` types its store as
`StoreProtocol` and never learns which runs; `storage.open_store` picks one from a URL.

Every engine keeps the same promises:
- every method that changes state is one transaction, committed before it returns;
- a job's status changes only as `storage.lifecycle` allows, as a compare-and-set on the status it was read with;
- the events a change causes are written in its transaction;
- a `claim_*` verb hands each item to one caller only, however many processes ask at once. A claimed download,
  event, notification or lookup is hidden from other claimers for `lease` seconds: a caller that dies releases it
  then. A claimed submission is SUBMITTED for good and never handed out again (it may have been paid for);
- a claimed download, event or notification carries its claim's id (`claim_id`). Its outcome, given that id, is
  recorded only while the claim is still the item's: a caller whose lease ran out and whose item was claimed again
  changes nothing (False, or `LeaseLost` from `complete_event`). `renew_download` extends a lease while work runs.
- a batch verb (`complete_events`) is one transaction for the whole batch, each item in a savepoint of its own: an
  item that fails is rolled back alone and answered with its exception, the others are recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from storage.inbox import CallbackOutcome
from storage.records import CallbackResult, Event, Job, JobStatus, NewJob, NewNotification, Note, Notification, Video
from storage.reports import CallbackRecord, ChainNode, EventRecord, NotificationRecord, ProviderCounts, Spend


@dataclass(frozen=True)
class FollowupGuard:
    """The counting money guards, applied inside the transaction that records an event's follow-ups.

    `decide(jobs_in_chain, followups_since)` gets the jobs of the chain rooted at `root_id` and the follow-ups rules
    created since `since`, counted in that transaction with every other writer of follow-ups held off, and answers
    the follow-ups to record and a note for each one stopped. So two instances handling two events of one chain at
    once can never both take the last place under a limit.
    """

    root_id: str
    since: float
    decide: Callable[[int, int], tuple[Sequence[NewJob], Sequence[Note]]]


@dataclass(frozen=True)
class EventOutcome:
    """What handling one claimed event records (`complete_events`): its follow-up jobs, cut by `guard` when one is
    given (on counts taken in the batch's transaction, after the batch's earlier events), its notifications and its
    notes; and the event marked processed, fenced by `claim`."""

    event_id: int
    followups: Sequence[NewJob] = ()
    notifications: Sequence[NewNotification] = ()
    notes: Sequence[Note] = ()
    guard: FollowupGuard | None = None
    claim: str | None = None


class StoreProtocol(Protocol):
    claimant: str  # this instance's name in its claim ids ("" when it was opened without one)

    @property
    def clock(self) -> Callable[[], float]: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    # -- jobs ----------------------------------------------------------------------------------------------------
    async def create_job(self, new: NewJob) -> tuple[Job, bool]: ...

    async def get_job(self, job_id: str) -> Job | None: ...

    async def get_jobs(self, job_ids: Collection[str]) -> dict[str, Job]:
        """The jobs of `job_ids` that exist, by id, read at once (a worker's batch)."""
        ...

    async def get_videos(self, job_id: str) -> tuple[Video, ...]: ...

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        provider: str | None = None,
        action: str | None = None,
        rule: str | None = None,
        root: str | None = None,
        q: str | None = None,
    ) -> list[Job]: ...

    async def cancel_job(self, job_id: str) -> bool: ...

    async def fail_job(self, job_id: str, error: str) -> None: ...

    async def retry_downloads(self, job_id: str) -> int: ...

    # -- submissions ---------------------------------------------------------------------------------------------
    async def in_flight(self, provider: str) -> int: ...

    async def queued_providers(self) -> list[str]: ...

    async def due_submissions(self, provider: str, *, limit: int, followups: bool = True) -> list[Job]: ...

    async def next_submission_at(self) -> float | None: ...

    async def claim_submission(self, job_id: str, *, look_up_after: float = 900.0) -> Job: ...

    async def claim_submissions(
        self, provider: str, *, slots: int, followups: bool = True, look_up_after: float = 900.0
    ) -> list[Job]: ...

    async def record_submitted(self, job_id: str, provider_job_id: str) -> None: ...

    async def record_unknown_outcome(self, job_id: str, error: str) -> None: ...

    async def release_submission(self, job_id: str, *, error: str, retry_at: float) -> None: ...

    # -- callbacks -----------------------------------------------------------------------------------------------
    async def record_callback(
        self,
        job_id: str,
        provider: str,
        *,
        body: bytes,
        headers: Iterable[tuple[str, str]],
        result: CallbackResult,
    ) -> CallbackOutcome: ...

    async def callback_count(self, job_id: str) -> int: ...

    async def prune_callbacks(self, *, older_than: float) -> int: ...

    # -- deadlines -----------------------------------------------------------------------------------------------
    async def due_lookups(self, *, limit: int = 100) -> list[Job]: ...

    async def claim_lookups(self, *, limit: int, lease: float) -> list[Job]: ...

    async def next_lookup_at(self) -> float | None: ...

    async def overdue_jobs(self, *, sent_before: float) -> list[Job]: ...

    async def schedule_lookup(self, job_id: str, *, at: float, looked_up: bool) -> bool: ...

    async def give_up(self, job_id: str, error: str, *, note: str) -> bool: ...

    # -- downloads -----------------------------------------------------------------------------------------------
    async def due_downloads(self, *, limit: int, exclude: Iterable[tuple[str, int]] = ()) -> list[Video]: ...

    async def claim_downloads(self, *, limit: int, lease: float) -> list[Video]: ...

    async def next_download_at(self) -> float | None: ...

    async def renew_download(self, job_id: str, index: int, *, claim: str, lease: float) -> bool: ...

    async def record_download(
        self, job_id: str, index: int, *, path: str, sha256: str, size: int, claim: str | None = None
    ) -> bool: ...

    async def retry_download(
        self, job_id: str, index: int, *, error: str, retry_at: float, claim: str | None = None
    ) -> bool: ...

    async def fail_download(self, job_id: str, index: int, *, error: str, claim: str | None = None) -> bool: ...

    # -- events --------------------------------------------------------------------------------------------------
    async def pending_events(self, *, limit: int = 100) -> list[Event]: ...

    async def claim_events(self, *, limit: int, lease: float) -> list[Event]: ...

    async def complete_event(
        self,
        event_id: int,
        followups: Sequence[NewJob] = (),
        notifications: Sequence[NewNotification] = (),
        notes: Sequence[Note] = (),
        *,
        claim: str | None = None,
    ) -> list[str]: ...

    async def complete_events(
        self, outcomes: Sequence[EventOutcome], *, unless_flag: str | None = None
    ) -> list[list[str] | Exception] | None:
        """Record a batch of handled events in one transaction, each in a savepoint: per outcome, the ids of its new
        jobs, or the exception that rolled it back alone (`LeaseLost` when its claim was taken over). None, and
        nothing recorded, when the flag `unless_flag` is set as the transaction begins (the kill switch)."""
        ...

    async def handle_events(
        self,
        decide: Callable[[Sequence[tuple[Event, Job | None]]], Sequence[EventOutcome]],
        *,
        limit: int,
        lease: float,
        unless_flag: str | None = None,
    ) -> list[list[str] | Exception] | None:
        """Claim up to `limit` due events, read their jobs, ask `decide` for each one's outcome and record them, all
        in one transaction (`claim_events`, `get_jobs` and `complete_events` in one): per outcome, in `decide`'s
        order, the ids of its new jobs or the exception that rolled it back alone. None, and nothing claimed, when
        `unless_flag` is set.

        `decide` runs inside the transaction (on SQLite, on the database thread): it must be quick and touch nothing
        but its arguments, as the rules are. A `decide` that raises rolls the whole batch back.
        """
        ...

    async def release_claim(self, claim: str) -> int: ...

    async def release_claims(self, claimant: str | None = None) -> int: ...

    # -- notifications -------------------------------------------------------------------------------------------
    async def due_notifications(self, *, limit: int) -> list[Notification]: ...

    async def claim_notifications(self, *, limit: int, lease: float) -> list[Notification]: ...

    async def next_notification_at(self) -> float | None: ...

    async def record_notification(
        self, notification_id: int, *, error: str | None, retry_at: float | None, claim: str | None = None
    ) -> bool: ...

    # -- guards: flags, notes, counts ----------------------------------------------------------------------------
    async def get_flag(self, name: str) -> str | None: ...

    async def set_flag(self, name: str, value: str | None) -> None: ...

    async def get_notes(self, job_id: str) -> tuple[Note, ...]: ...

    async def use_public_url(
        self, url: str, *, providers: Collection[str], note: Callable[[str], str]
    ) -> tuple[str | None, list[str]]: ...

    async def count_root_jobs(self, root_id: str) -> int: ...

    async def count_followups_since(self, since: float) -> int: ...

    # -- reports -------------------------------------------------------------------------------------------------
    async def provider_counts(
        self, providers: list[str], *, since: float, now: float | None = None
    ) -> dict[str, ProviderCounts]: ...

    async def waiting_counts(self) -> tuple[int, int]: ...

    async def spend_by_day(self, *, since: float) -> list[Spend]: ...

    async def spend_totals(self) -> list[Spend]: ...

    async def oldest_waiting(self) -> dict[str, float | None]: ...

    async def job_callbacks(self, job_id: str) -> list[CallbackRecord]: ...

    async def job_events(self, job_id: str) -> list[EventRecord]: ...

    async def chain(self, root_id: str, *, limit: int = 500) -> list[ChainNode]: ...

    async def job_notifications(self, job_id: str) -> list[NotificationRecord]: ...
