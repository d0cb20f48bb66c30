"""The event worker: reads the event outbox and turns each event into follow-up jobs and notifications, as the
rules say.

Each event is handled in one transaction that records its follow-ups and marks it processed, so a crash either
replays the whole event or none of it; and a follow-up's `origin` is unique, so a replay never doubles a job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from receiver.rules import RuleSet
from receiver.views import event_json
from storage import NewNotification, Store

log = logging.getLogger("reelhook.followups")


class FollowUps:
    def __init__(
        self,
        store: Store,
        rules: RuleSet,
        *,
        on_recorded: Callable[[], None] = lambda: None,
        on_notify: Callable[[], None] = lambda: None,
        fault: Callable[[str], None] = lambda point: None,
    ) -> None:
        self._store = store
        self._rules = rules
        self._on_recorded = on_recorded
        self._on_notify = on_notify
        self._fault = fault

    async def run_once(self) -> int:
        events = await self._store.pending_events(limit=100)
        created, notified = 0, False
        for event in events:
            job = await self._store.get_job(event.job_id)
            if job is None:  # events reference jobs by foreign key; this cannot happen short of manual edits
                await self._store.complete_event(event.id)
                continue
            followups, skips = self._rules.followups(event, job)
            for skip in skips:
                log.info("rule %s: no follow-up for job %s: %s", skip.rule, skip.job_id, skip.reason)
            notifications = [
                NewNotification(rule, url, event_json(event, job))
                for rule, url in self._rules.notifications(event, job)
            ]
            new_ids = await self._store.complete_event(event.id, followups, notifications)
            notified = notified or bool(notifications)
            for new in new_ids:
                log.info("event %s on job %s: follow-up job %s recorded", event.type, job.id, new)
            if new_ids:
                self._fault("followup.recorded")
            created += len(new_ids)
        if created:
            self._on_recorded()
        if notified:
            self._on_notify()
        return len(events)
