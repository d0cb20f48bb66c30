"""Deadlines for jobs in flight: a job whose result is late is looked up at its provider, and one that never
reports back is given up on, so that no job holds a provider slot forever and nothing needs a restart or a person.

reelhook does not poll: a provider calls back when a job ends, and the callback is how results arrive. But callbacks
are best effort everywhere (TTAPI delivers at most three times, APIMart gives up after about two minutes, AceData
and WaveSpeed document no retries at all), so a tunnel that is down for those minutes loses a result for good, and a
submission whose answer was lost leaves a job that no fetch can name. So every job that leaves is given a deadline
when it is claimed (`REELHOOK_<PROVIDER>_CALLBACK_GRACE` after sending), and at each deadline:

- past `REELHOOK_<PROVIDER>_GIVE_UP_AFTER` since it was sent, the job is failed as lost (its error begins `lost:`,
  a note and a `job.failed` event say so) and its slot is freed. The provider may still have run it, and charged for
  it: a result that arrives later is applied all the same (storage/lifecycle.py);
- a job with a provider id is looked up once through the provider's fetch endpoint, and its next deadline is set,
  committed *before* the request leaves, backing off (twice the grace, then doubling, at most hourly), so a crash
  mid-lookup does not ask again early and a job still running is asked again later;
- a job with no provider id (its submission's answer never arrived) cannot be named by any fetch: it waits for its
  callback until its give-up time.

These are due times, like the submission retries: the worker sleeps until the earliest one, and nothing wakes when
nothing is due. One lookup per job per deadline, never a polling loop. Due deadlines are claimed
(`Store.claim_lookups`: pushed `LOOKUP_LEASE` ahead in the claim), so with several instances one of them looks a job
up; one that dies mid-lookup leaves the job due again when the lease ends. `reelhook reconcile` (POST
/api/reconcile) looks up every job past its grace at once, whatever its next deadline.

A terminal answer takes exactly the path a callback takes: `Store.record_callback` stores the raw answer in the
inbox (marked `x-reelhook-source: fetch`) and applies it in one transaction, so a callback that arrived meanwhile
makes it a duplicate and an answer about another provider job is refused; downloads and rules follow as after any
callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

import anyio
import httpx

from receiver.metrics import Metrics
from storage import CallbackOutcome, Job, JobMismatch, StoreProtocol
from submitter.providers import InvalidParams, MalformedCallback, ProviderError, ProviderRequest
from submitter.worker import Endpoint

log = logging.getLogger("reelhook.reconcile")

SOURCE_HEADER = ("x-reelhook-source", "fetch")
MAX_CONCURRENT = 8  # lookups in flight at once: a backlog after an outage should not burst a provider's rate limit
MAX_INTERVAL = 3600.0  # a job still running is asked again at most hourly
MIN_GRACE = 0.25  # a grace of 0 ("look up as soon as it is sent") must not turn the backoff into a busy loop
BATCH = 100
LOOKUP_LEASE = 300.0  # seconds a claimed deadline stays hidden from other instances: each lookup reschedules its own
UNCONFIGURED_GIVE_UP = 86400.0  # a job of a provider no longer configured still gives up its slot


class Look(Enum):
    SETTLED = "settled"  # the answer finished the job
    OPEN = "open"  # asked; still running, or the lookup failed: asked again at its next deadline
    WAITING = "waiting"  # cannot be looked up (no provider id, no fetch endpoint): waits until its give-up time
    LOST = "lost"  # given up on
    GONE = "gone"  # settled by something else meanwhile


@dataclass(frozen=True)
class ReconcileReport:
    looked_up: int  # jobs their provider was asked about
    settled: int  # of those, jobs the answer finished (succeeded or failed)
    lost: int = 0  # jobs given up on


class Reconciler:
    def __init__(
        self,
        store: StoreProtocol,
        http: httpx.AsyncClient,
        endpoints: Mapping[str, Endpoint],
        *,
        on_recorded: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._http = http
        self._endpoints = endpoints
        self._on_recorded = on_recorded
        self._metrics = metrics or Metrics()
        self._clock = store.clock
        # The deadline worker and a lookup asked for by hand must not both ask about one job at once.
        self._lock = anyio.Lock()

    async def next_due(self) -> float | None:
        return await self._store.next_lookup_at()

    async def run_once(self) -> int:
        """Act on every job whose deadline has come; return how many."""
        async with self._lock:
            jobs = await self._store.claim_lookups(limit=BATCH, lease=LOOKUP_LEASE)
            await self._look_at_all(jobs)
        return len(jobs)

    async def reconcile(self) -> ReconcileReport:
        """Look up every job in flight that is past its provider's grace now, whatever its next deadline."""
        async with self._lock:
            now = self._clock()
            graces = [endpoint.callback_grace for endpoint in self._endpoints.values()] or [0.0]
            candidates = await self._store.overdue_jobs(sent_before=now - min(graces))
            jobs = [job for job in candidates if (job.sent_at or 0.0) <= now - self._grace(job)]
            looks = await self._look_at_all(jobs)
        report = ReconcileReport(
            looked_up=sum(look in (Look.SETTLED, Look.OPEN) for look in looks),
            settled=looks.count(Look.SETTLED),
            lost=looks.count(Look.LOST),
        )
        if jobs:
            log.info(
                "reconcile: asked about %d overdue jobs, %d settled, %d lost",
                *report.__dict__.values(),
                extra={"event": "lookup.round", **report.__dict__},
            )
        return report

    async def _look_at_all(self, jobs: list[Job]) -> list[Look]:
        looks: list[Look] = []
        limiter = anyio.CapacityLimiter(MAX_CONCURRENT)

        async def look(job: Job) -> None:
            async with limiter:
                looks.append(await self._look_logged(job))

        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(look, job)
        if any(look in (Look.SETTLED, Look.LOST) for look in looks):
            self._on_recorded()
        return looks

    def _grace(self, job: Job) -> float:
        endpoint = self._endpoints.get(job.provider)
        return endpoint.callback_grace if endpoint else 0.0

    async def _look_logged(self, job: Job) -> Look:
        # One job's failure (say, the database is locked) must not cancel its siblings' lookups. Its deadline is
        # unchanged then, so it comes due again.
        try:
            look = await self._look(job)
        except Exception:
            log.exception(
                "job %s: looking it up at %s failed; tried again at its next deadline",
                job.id,
                job.provider,
                extra={"event": "lookup.error", "job": job},
            )
            look = Look.OPEN
        self._metrics.lookups.labels(job.provider, look.value).inc()
        return look

    async def _look(self, job: Job) -> Look:
        endpoint = self._endpoints.get(job.provider)
        now = self._clock()
        sent_at = job.sent_at if job.sent_at is not None else job.created_at
        give_up_at = sent_at + (endpoint.give_up_after if endpoint else UNCONFIGURED_GIVE_UP)
        if now >= give_up_at:
            return await self._give_up(job, now - sent_at)
        spec = endpoint.provider if endpoint else None
        if spec is None or spec.fetch_request is None or spec.parse_fetch_response is None or not job.provider_job_id:
            await self._store.schedule_lookup(job.id, at=give_up_at, looked_up=False)
            return Look.WAITING
        assert endpoint is not None
        interval = min(max(endpoint.callback_grace, MIN_GRACE) * 2 ** min(job.lookups + 1, 30), MAX_INTERVAL)
        if not await self._store.schedule_lookup(job.id, at=min(now + interval, give_up_at), looked_up=True):
            return Look.GONE  # committed first: asked once per deadline, even across a crash
        try:
            request = spec.fetch_request(job, endpoint.api_key)
        except InvalidParams as exc:
            log.warning("job %s: cannot look it up: %s", job.id, exc, extra={"event": "lookup.impossible", "job": job})
            return Look.OPEN
        try:
            response = await self._send(endpoint, request)
            if 400 <= response.status_code < 500 and spec.fetch_fallback is not None:
                response = await self._send(endpoint, spec.fetch_fallback(job, endpoint.api_key))
        except httpx.HTTPError as exc:
            log.warning("job %s: %s fetch failed (%s: %s); asked again later", job.id, job.provider,
                        type(exc).__name__, exc, extra={"event": "lookup.failed", "job": job})  # fmt: skip
            return Look.OPEN
        try:
            result = spec.parse_fetch_response(response.status_code, response.content)
        except (ProviderError, MalformedCallback) as exc:
            log.warning("job %s: %s fetch answered %s: %s; asked again later", job.id, job.provider,
                        response.status_code, exc, extra={"event": "lookup.failed", "job": job})  # fmt: skip
            return Look.OPEN
        if not result.status.terminal:
            log.info(
                "job %s: %s still reports it %s; asked again later",
                job.id,
                job.provider,
                result.status,
                extra={"event": "lookup.open", "job": job},
            )
            return Look.OPEN
        headers = [SOURCE_HEADER, *response.headers.items()]
        try:
            outcome = await self._store.record_callback(
                job.id, job.provider, body=response.content, headers=headers, result=result
            )
        except JobMismatch as exc:
            log.warning(
                "job %s: refused the %s fetch answer: %s",
                job.id,
                job.provider,
                exc,
                extra={"event": "lookup.refused", "job": job},
            )
            return Look.OPEN
        log.info(
            "job %s: %s fetch answered %s (%s)",
            job.id,
            job.provider,
            result.status,
            outcome,
            extra={
                "event": "lookup.settled",
                "job": job,
                "provider_job_id": job.provider_job_id or result.provider_job_id,
                "outcome": outcome.value,
            },
        )
        return Look.SETTLED if outcome is CallbackOutcome.APPLIED else Look.GONE

    async def _send(self, endpoint: Endpoint, request: ProviderRequest) -> httpx.Response:
        return await self._http.send(endpoint.request(self._http, request))

    async def _give_up(self, job: Job, waited: float) -> Look:
        if job.provider_job_id:
            known = f"{job.provider} took it as {job.provider_job_id} and may have charged for it"
        else:
            known = f"the answer to its submission never arrived; {job.provider} may have taken and charged for it"
        error = f"lost: no result {waited:.0f}s after it was sent ({known}); a result that still arrives is applied"
        note = f"given up on after {waited:.0f}s with no result; its slot is free again. {known.capitalize()}."
        if not await self._store.give_up(job.id, error, note=note):
            return Look.GONE
        log.warning("job %s: %s", job.id, error, extra={"event": "job.lost", "job": job})
        return Look.LOST
