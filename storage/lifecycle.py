"""The job lifecycle, in one table.

Every status change anywhere in reelhook asks `check_transition` first, so an impossible change (a finished job
going back to the queue, a second success) raises instead of quietly corrupting the record.

    QUEUED ──claim──▶ SUBMITTED ──progress──▶ RUNNING ──▶ SUCCEEDED | FAILED
      ▲                  │
      └── not sent ──────┘   (connect error, 429/499/5xx: the provider did not take it, try again later)

A callback may also reach a QUEUED job: the provider answered 5xx but had in fact accepted the job. Taking the
callback then is what stops us from sending the job a second time.
"""

from __future__ import annotations

from storage.records import JobStatus

QUEUED, SUBMITTED, RUNNING = JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING
SUCCEEDED, FAILED = JobStatus.SUCCEEDED, JobStatus.FAILED

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    QUEUED: frozenset({SUBMITTED, RUNNING, SUCCEEDED, FAILED}),
    SUBMITTED: frozenset({QUEUED, RUNNING, SUCCEEDED, FAILED}),
    RUNNING: frozenset({SUCCEEDED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
}


class InvalidTransition(Exception):
    def __init__(self, job_id: str, current: JobStatus, target: JobStatus) -> None:
        super().__init__(f"job {job_id}: cannot go from {current} to {target}")
        self.job_id = job_id
        self.current = current
        self.target = target


def check_transition(job_id: str, current: JobStatus, target: JobStatus) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(job_id, current, target)
