"""Fault-injection points for the crash tests.

`REELHOOK_FAULTS=callback.acked` makes the process kill itself with SIGKILL the moment it passes that point, the
way a power cut or an OOM kill would. Production never sets it; the points are named where they are tripped.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable

log = logging.getLogger("reelhook.faults")

POINTS = frozenset(
    {
        "callback.stored",  # the callback is committed, the answer not yet sent
        "callback.acked",  # the 200 is sent, the workers not yet woken
        "download.streaming",  # part of a video is on disk, in its .part file
        "followup.recorded",  # a rule's follow-up job is committed, not yet sent
        "submit.sent",  # the provider has answered a submission; the answer is not yet recorded
    }
)


class Faults:
    def __init__(self, points: Iterable[str] = ()) -> None:
        self._points = frozenset(points)
        unknown = self._points - POINTS
        if unknown:
            raise ValueError(f"REELHOOK_FAULTS: unknown point(s) {', '.join(sorted(unknown))}; known: {sorted(POINTS)}")

    def trip(self, point: str) -> None:
        if point in self._points:
            log.critical(
                "fault injection: killing the process at %s", point, extra={"event": "fault.injected", "point": point}
            )
            os.kill(os.getpid(), signal.SIGKILL)
