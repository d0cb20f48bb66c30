"""The event worker: reads the event outbox and turns each event into follow-up jobs and notifications, as the
rules say.

Events are handled in batches, each batch one transaction (`Store.handle_events`): the events claimed, their jobs
read, the rules asked (inside the transaction: they only compute), and every event's follow-ups, notifications and
notes recorded and the event marked processed, each event in a savepoint of its own. A crash replays the whole
batch or none of it, an event whose write fails is rolled back alone and given back, and a follow-up's `origin` is
unique, so a replay never doubles a job. Its log lines, metrics and wake-ups follow the commit.

The money guards sit between the rules and that transaction. The rules answer with follow-ups and the skips
`max_depth` (or a provider that would refuse) caused; `receiver.guards.cut` cuts the follow-ups at
`max_jobs_per_root` and `max_jobs_per_day`, on counts taken inside the transaction that records them
(the batch's), so the limits hold with any number of instances handling events at once. Every
follow-up stopped either way becomes a note on the job that fired the rule, shown in its JSON, and one line in the
log: a WARNING for a limit, INFO for a provider that cannot do what the rule asks. A follow-up recorded without part
of what its rule asked (a TTAPI extend takes no prompt) gets the note itself (and an INFO line).

An event is claimed in that transaction, so one worker of one instance handles it (on PostgreSQL its row stays
locked until the commit); the claim's id fences what is recorded, and an event that failed is given back at once.

While the service is paused this worker leaves events unprocessed: the batch's transaction reads the flag first and
then claims nothing, so their follow-ups and notifications are created once, after resume, against the limits as
they stand then. Callbacks are still stored and videos still downloaded meanwhile (those workers do not look at the
flag), and the events they cause wait here too. The submission worker holds queued jobs that rules created; jobs a
person submits through the API still go out, since pausing is about what the rules spend on their own, not about
refusing the person at the keyboard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio

from receiver.guards import DAY, PAUSE_FLAG, cut, guarded
from receiver.metrics import Metrics
from receiver.rules import RuleSet, Skip
from receiver.views import event_json
from storage import Event, EventOutcome, FollowupGuard, Job, LeaseLost, NewJob, NewNotification, Note, StoreProtocol

log = logging.getLogger("reelhook.followups")

BATCH = 100
EVENT_LEASE = 120.0  # seconds an event stays claimed: handling one takes a few transactions, never a request


class FollowUps:
    def __init__(
        self,
        store: StoreProtocol,
        rules: RuleSet,
        *,
        on_recorded: Callable[[], None] = lambda: None,
        on_notify: Callable[[], None] = lambda: None,
        fault: Callable[[str], None] = lambda point: None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self.rules = rules  # replaced whole when the rules file is re-read (SIGHUP); each event reads it once
        self._on_recorded = on_recorded
        self._on_notify = on_notify
        self._fault = fault
        self._metrics = metrics or Metrics()

    async def run_once(self) -> int:
        """Handle the pending events, up to 100, as one batch; return how many. 0 while paused: the events wait.

        A batch is one transaction whatever its size (`Store.handle_events`): the pause checked, the events claimed,
        their jobs read, the rules asked and every event's outcome recorded, each in a savepoint. The log lines,
        metrics and wake-ups follow its commit.
        """
        handled: list[_Handled] = []

        def decide(batch: Sequence[tuple[Event, Job | None]]) -> list[EventOutcome]:
            handled[:] = [_Handled(event, job) for event, job in batch]
            for item in handled:
                if item.job is not None:
                    self._decide(item)
            return [item.outcome for item in handled]

        results = await self._store.handle_events(decide, limit=BATCH, lease=EVENT_LEASE, unless_flag=PAUSE_FLAG)
        if not results:
            return 0  # paused (nothing claimed: the events wait for resume, free for any instance), or nothing due
        failure: Exception | None = None
        created = 0
        for item, result in zip(handled, results, strict=True):
            if isinstance(result, LeaseLost):
                log.warning(
                    "event %s on job %s: its claim was taken over (the lease ran out); left to whoever holds it",
                    item.event.id,
                    item.event.job_id,
                    extra={"event": "followup.lease_lost", "job": item.job},
                )
            elif isinstance(result, Exception):
                failure = failure or result
            else:
                created += len(result)
                await self._recorded(item, result)
        if failure is not None and handled[0].event.claim_id:
            await self._give_back(handled[0].event.claim_id)  # the event that failed is due again at once
        if created:
            self._on_recorded()
        if any(item.outcome.notifications for item in handled):
            self._on_notify()
        if failure is not None:
            raise failure  # the worker loop logs it and drains again after a pause
        return len(results)

    def _decide(self, item: _Handled) -> None:
        """What the rules make of one event: its follow-ups (with the guard that cuts them when a counting limit is
        set), notifications and notes."""
        event, job = item.event, item.job
        assert job is not None
        followups, skips = self.rules.followups(event, job)
        notifications = [
            NewNotification(rule, url, event_json(event, job)) for rule, url in self.rules.notifications(event, job)
        ]
        # One line per follow-up not made: a WARNING when a limit stopped it (money it would have spent), INFO when
        # the provider simply cannot do it (a rule that also fires on a provider that cannot extend).
        item.logged = [
            (Note(job.id, skip.rule or None, skip.reason), logging.WARNING if skip.limit else logging.INFO)
            for skip in skips
            if skip.origin is None
        ]
        item.amended = {skip.origin: skip for skip in skips if skip.origin is not None}
        guard = None
        limits = self.rules.limits
        if followups and guarded(limits):

            def decide(in_chain: int, in_day: int) -> tuple[list[NewJob], list[Note]]:
                kept, cut_notes = cut(limits, job, followups, in_chain, in_day)
                item.stopped = cut_notes  # the last call is what committed
                return kept, cut_notes

            guard = FollowupGuard(job.root_id, self._store.clock() - DAY, decide)
        notes = [note for note, _ in item.logged]
        item.outcome = EventOutcome(event.id, followups, notifications, notes, guard, event.claim_id)

    async def _recorded(self, item: _Handled, new_ids: list[str]) -> None:
        """Log and count what one event's outcome recorded, and note what its follow-ups were recorded without."""
        event, job = item.event, item.job
        logged = item.logged + [(note, logging.WARNING) for note in item.stopped]
        for note, level in logged:
            log.log(
                level,
                'rule "%s" did not follow up job %s: %s',
                note.rule,
                note.job_id,
                note.message,
                extra={"event": "followup.skipped", "job": job, "rule": note.rule},
            )
        self._metrics.followups.labels("fired").inc(len(new_ids))
        self._metrics.followups.labels("stopped_by_limit").inc(sum(level == logging.WARNING for _, level in logged))
        if item.amended:
            await self._note_followups(event.id, new_ids, item.amended)
        for new in new_ids:
            log.info(
                "event %s on job %s: follow-up job %s recorded",
                event.type,
                event.job_id,
                new,
                extra={"event": "followup.recorded", "job": job, "followup_id": new, "on": event.type},
            )
        if new_ids:
            self._fault("followup.recorded")

    async def _give_back(self, claim: str) -> None:
        """Release what is left of a batch claimed under `claim`, so it is due again now rather than at its lease's
        end (nothing wakes this worker then). Shielded: a shutdown cancelling the run still gives it back."""
        with anyio.CancelScope(shield=True):
            try:
                await self._store.release_claim(claim)
            except Exception:
                log.exception("cannot give back claimed events; they are due again when their lease ends")

    async def _note_followups(self, event_id: int, new_ids: list[str], amended: dict[str, Skip]) -> None:
        """Note, on each follow-up just recorded without part of what its rule asked, which part and why.

        A follow-up's id exists only once the event's transaction made it, so these notes take a second one: a
        crash between the two loses the note, never the follow-up, and its params still show what is sent.
        """
        notes = []
        for job_id in new_ids:
            child = await self._store.get_job(job_id)
            skip = amended.get(child.origin or "") if child is not None else None
            if skip is not None:
                notes.append(Note(job_id, skip.rule or None, skip.reason))
                log.info(
                    'rule "%s" follow-up %s of job %s: %s',
                    skip.rule,
                    job_id,
                    skip.job_id,
                    skip.reason,
                    extra={"event": "followup.amended", "job": child, "rule": skip.rule, "parent_id": skip.job_id},
                )
        if notes:
            await self._store.complete_event(event_id, notes=notes)


@dataclass
class _Handled:
    """One event of a batch on its way through the rules to the store."""

    event: Event
    job: Job | None  # None: the event's job is gone (only a manual edit can do that); the event is just marked done
    outcome: EventOutcome = field(init=False)
    logged: list[tuple[Note, int]] = field(default_factory=list)  # notes for follow-ups not made, and their level
    stopped: list[Note] = field(default_factory=list)  # the guard's notes for the follow-ups a limit cut
    amended: dict[str, Skip] = field(default_factory=dict)  # follow-ups made without part of their rule, by origin

    def __post_init__(self) -> None:
        self.outcome = EventOutcome(self.event.id, claim=self.event.claim_id)
