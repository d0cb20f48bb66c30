from __future__ import annotations

import pytest

from storage import InvalidTransition, JobStatus, check_transition
from storage.lifecycle import TRANSITIONS


def test_every_status_has_a_row() -> None:
    assert set(TRANSITIONS) == set(JobStatus)


@pytest.mark.parametrize("terminal", [JobStatus.SUCCEEDED, JobStatus.FAILED])
@pytest.mark.parametrize("target", list(JobStatus))
def test_finished_jobs_never_move(terminal: JobStatus, target: JobStatus) -> None:
    with pytest.raises(InvalidTransition, match=f"cannot go from {terminal} to {target}"):
        check_transition("j", terminal, target)


def test_running_cannot_go_back_to_the_queue() -> None:
    with pytest.raises(InvalidTransition):
        check_transition("j", JobStatus.RUNNING, JobStatus.QUEUED)
    check_transition("j", JobStatus.SUBMITTED, JobStatus.QUEUED)
