"""Missed-callback recovery: a job whose callback is long overdue is looked up once at its provider.

reelhook does not poll: a provider calls back when a job ends, and the callback is how every result arrives. But
callbacks are best effort everywhere (TTAPI delivers at most three times, APIMart gives up after about two minutes,
AceData and WaveSpeed document no retries at all), so a tunnel that is down for those minutes loses a result for
good. A job the provider took (it gave us its id) whose callback is later than that provider's grace
(REELHOOK_<PROVIDER>_CALLBACK_GRACE, a generous multiple of its usual time) is therefore asked about through the
provider's fetch endpoint: once at start-up, and whenever someone runs `reelhook reconcile` (POST /api/reconcile).
Never on a timer.

Once means once. The job is marked reconciled, and that is committed, *before* the request leaves, so a crash
mid-fetch does not ask again at the next start. A terminal answer then takes exactly the path a callback takes:
`Store.record_callback` stores the raw answer in the callback inbox (marked `x-reelhook-source: fetch`) and applies
it in one transaction, so a callback that arrived meanwhile makes it a duplicate and an answer about another
provider job is refused; then the workers are woken, and downloads and rules follow as after any callback. A
non-terminal answer or a failed fetch is logged and left: the callback may still come, and the job is not asked
about again (its `reconciled_at` and the log say what happened).

What this cannot recover: a job with no provider id, whose submit answer was lost (SUBMITTED, provider_job_id
NULL). No fetch endpoint can name it, so `jobs_awaiting_callback` leaves it out; its callback, whose token names our
job, remains the only way it completes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio
import httpx

from storage import CallbackOutcome, Job, JobMismatch, Store
from submitter.providers import InvalidParams, MalformedCallback, ProviderError
from submitter.worker import Endpoint

log = logging.getLogger("reelhook.reconcile")

SOURCE_HEADER = ("x-reelhook-source", "fetch")
MAX_CONCURRENT = 8  # lookups in flight at once: a backlog after an outage should not burst a provider's rate limit


@dataclass(frozen=True)
class ReconcileReport:
    looked_up: int  # jobs their provider was asked about
    settled: int  # of those, jobs the answer finished (succeeded or failed)


class Reconciler:
    def __init__(
        self,
        store: Store,
        http: httpx.AsyncClient,
        endpoints: Mapping[str, Endpoint],
        grace: Mapping[str, float],
        *,
        on_recorded: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._http = http
        self._endpoints = endpoints
        # Only providers we can reach and whose module can fetch are asked about; the others keep waiting.
        self._grace = {name: seconds for name, seconds in grace.items() if _can_fetch(endpoints.get(name))}
        self._on_recorded = on_recorded
        # Two passes at once (start-up and an API call) could both pick a job before either marked it.
        self._lock = anyio.Lock()

    async def run_once(self) -> ReconcileReport:
        """Look up every job whose callback is overdue and was never looked up; apply the terminal answers."""
        async with self._lock:
            jobs = await self._store.jobs_awaiting_callback(self._grace)
            settled: list[bool] = []
            limiter = anyio.CapacityLimiter(MAX_CONCURRENT)

            async def look_up(job: Job) -> None:
                async with limiter:
                    settled.append(await self._look_up_logged(job))

            async with anyio.create_task_group() as tg:
                for job in jobs:
                    tg.start_soon(look_up, job)
        report = ReconcileReport(looked_up=len(jobs), settled=sum(settled))
        if jobs:
            log.info("reconcile: asked about %d overdue jobs, %d settled", report.looked_up, report.settled)
        return report

    async def _look_up_logged(self, job: Job) -> bool:
        # One job's failure (say, the database is locked) must not cancel its siblings' lookups.
        try:
            return await self._look_up(job)
        except Exception:
            log.exception("job %s: looking it up at %s failed; left for its callback", job.id, job.provider)
            return False

    async def _look_up(self, job: Job) -> bool:
        # True when the provider's answer finished the job.
        endpoint = self._endpoints[job.provider]
        spec = endpoint.provider
        assert spec.fetch_request is not None and spec.parse_fetch_response is not None  # see __init__
        await self._store.mark_reconciled(job.id)  # committed first: asked once, even across a crash
        try:
            request = spec.fetch_request(job, endpoint.api_key)
        except InvalidParams as exc:
            log.warning("job %s: cannot look it up: %s", job.id, exc)
            return False
        try:
            response = await self._http.request(
                request.method,
                endpoint.base_url + request.path,
                headers=dict(request.headers),
                json=request.json,
                params=dict(request.params),
            )
        except httpx.HTTPError as exc:
            log.warning("job %s: %s fetch failed (%s: %s); left for its callback", job.id, job.provider,
                        type(exc).__name__, exc)  # fmt: skip
            return False
        try:
            result = spec.parse_fetch_response(response.status_code, response.content)
        except (ProviderError, MalformedCallback) as exc:
            log.warning("job %s: %s fetch answered %s: %s; left for its callback", job.id, job.provider,
                        response.status_code, exc)  # fmt: skip
            return False
        if not result.status.terminal:
            log.info("job %s: %s still reports it %s; left for its callback", job.id, job.provider, result.status)
            return False
        headers = [SOURCE_HEADER, *response.headers.items()]
        try:
            outcome = await self._store.record_callback(
                job.id, job.provider, body=response.content, headers=headers, result=result
            )
        except JobMismatch as exc:
            log.warning("job %s: refused the %s fetch answer: %s", job.id, job.provider, exc)
            return False
        log.info("job %s: %s fetch answered %s (%s)", job.id, job.provider, result.status, outcome)
        self._on_recorded()
        return outcome is CallbackOutcome.APPLIED


def _can_fetch(endpoint: Endpoint | None) -> bool:
    return endpoint is not None and None not in (
        endpoint.provider.fetch_request,
        endpoint.provider.parse_fetch_response,
    )
