"""The money guards: the limits that count jobs, which the event worker applies before it records a follow-up, and
the kill switch.

Every follow-up a rule creates is paid for, so three limits can stop one:

- `max_depth`, in `RuleSet.followups`, which knows the depth without asking anyone;
- `max_jobs_per_root`: the jobs of one chain, its root included;
- `max_jobs_per_day`: the jobs rules created, all rules together, in the 24 hours before now by the store's clock.
  The window rolls: a follow-up stops counting 24 hours after it was recorded, there is no midnight reset.

The last two count what the store has plus what the same event is about to add, so one event cannot overshoot a
limit by several follow-ups at once (`extend.index = "all"` asks for four); the first ones in rule order are kept.
A stopped follow-up is not recorded. A `Note` on the job that fired the rule says which limit stopped what, and is
recorded in the event's own transaction, so a replayed event can neither note twice nor lose the note.

The counts are taken inside that transaction (`Store.complete_events`), with every other guarded follow-up
held off until it commits, so two instances handling two events of one chain at once cannot both take the last
place under a limit. A person extending a job by hand between the count and the insert can still leave a chain one
job over its limit: a job a person asked for, not one a rule spent money on.

The kill switch is a flag in the store, `paused`, whose value is the reason. `pause` and `resume` only write it:
each worker reads it on its next pass (`receiver.followups` says what waits), so whoever resumes wakes the workers
afterwards to send what waited now rather than at the next callback.
"""

from __future__ import annotations

from collections.abc import Sequence

from receiver.rulefile import Limits
from storage import Job, NewJob, Note, StoreProtocol
from submitter.worker import PAUSE_FLAG

DAY = 24 * 60 * 60.0

__all__ = ["DAY", "PAUSE_FLAG", "cut", "guarded", "pause", "paused", "resume"]


async def pause(store: StoreProtocol, reason: str) -> None:
    """Stop rules from spending: follow-ups and notifications wait, and queued follow-ups are not sent.

    Callbacks are still stored and videos still downloaded; jobs a person submits still go out.
    """
    await store.set_flag(PAUSE_FLAG, reason.strip() or "no reason given")


async def resume(store: StoreProtocol) -> None:
    """Let rules spend again. Wake the workers afterwards (`Service.wake_all()`) so that what waited goes out now."""
    await store.set_flag(PAUSE_FLAG, None)


async def paused(store: StoreProtocol) -> str | None:
    """Why the service is paused, or None while it runs."""
    return await store.get_flag(PAUSE_FLAG)


def guarded(limits: Limits) -> bool:
    """Whether any counting limit is set: without one, follow-ups need no count at all."""
    return limits.max_jobs_per_root is not None or limits.max_jobs_per_day is not None


def cut(
    limits: Limits, job: Job, followups: Sequence[NewJob], in_chain: int, in_day: int
) -> tuple[list[NewJob], list[Note]]:
    """The follow-ups of `job` that the counting limits allow, in order, given the jobs already in its chain and the
    follow-ups of the last 24 hours, and a note on `job` for each one stopped."""
    per_root, per_day = limits.max_jobs_per_root, limits.max_jobs_per_day
    kept: list[NewJob] = []
    notes: list[Note] = []
    for new in followups:
        if per_root is not None and in_chain >= per_root:
            reason = f"max_jobs_per_root {per_root} reached ({in_chain} jobs in the chain of root job {job.root_id})"
        elif per_day is not None and in_day >= per_day:
            reason = f"max_jobs_per_day {per_day} reached ({in_day} follow-ups in the last 24 h)"
        else:
            kept.append(new)
            in_chain += 1
            in_day += 1
            continue
        notes.append(Note(job.id, new.rule, f"{reason}; not submitted: {_describe(new)}"))
    return kept, notes


def _describe(new: NewJob) -> str:
    index = new.params.get("index")
    return f"{new.provider} {new.action}" + ("" if index is None else f" of index {index}")
