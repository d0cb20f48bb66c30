"""The job lifecycle, in one table.

Every status change anywhere in reelhook asks `check_transition` first, so an impossible change (a finished job
going back to the queue, a second success, a second claim) raises instead of quietly corrupting the record.

    QUEUED ──claim──▶ SUBMITTED ──progress──▶ RUNNING ──▶ SUCCEEDED | FAILED
      ▲                  │                      ▲  │
      └── not sent ──────┘                      └──┘ (more progress)

A callback may also reach a QUEUED job: the provider answered 5xx but had in fact accepted the job. Taking the
callback then is what stops us from sending the job a second time.

Staying in a status is a transition like any other and must be listed: RUNNING → RUNNING is a progress report,
while SUBMITTED → SUBMITTED would be a second claim of a job already handed to its provider, the one change that
could pay for a job twice.

A job that never reported back is given up on (FAILED, its error beginning `lost:`) so that it frees its slot. The
provider may still have run it and charged for it, so a result that arrives after that is applied anyway: `LATE`
lists what a lost job may still become.
"""

from __future__ import annotations

from storage.records import JobStatus

QUEUED, SUBMITTED, RUNNING = JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING
SUCCEEDED, FAILED = JobStatus.SUCCEEDED, JobStatus.FAILED

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    QUEUED: frozenset({SUBMITTED, RUNNING, SUCCEEDED, FAILED}),
    SUBMITTED: frozenset({QUEUED, RUNNING, SUCCEEDED, FAILED}),
    RUNNING: frozenset({RUNNING, SUCCEEDED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
}

# What a job given up on as lost may still become when its result arrives after all.
LATE: frozenset[JobStatus] = frozenset({SUCCEEDED, FAILED})

IN_FLIGHT: tuple[JobStatus, ...] = (SUBMITTED, RUNNING)  # holding one of the provider's slots
TERMINAL: tuple[JobStatus, ...] = (SUCCEEDED, FAILED)


class InvalidTransition(Exception):
    def __init__(self, job_id: str, current: JobStatus, target: JobStatus) -> None:
        super().__init__(f"job {job_id}: cannot go from {current} to {target}")
        self.job_id = job_id
        self.current = current
        self.target = target


def check_transition(job_id: str, current: JobStatus, target: JobStatus, *, lost: bool = False) -> None:
    if target in TRANSITIONS[current] or (lost and current is FAILED and target in LATE):
        return
    raise InvalidTransition(job_id, current, target)


def sql_list(statuses: tuple[JobStatus, ...]) -> str:
    """`'submitted', 'running'` for an SQL `IN (…)`: status lists in queries come from here, not from literals."""
    return ", ".join(f"'{status.value}'" for status in statuses)
