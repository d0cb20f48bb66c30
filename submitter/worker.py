"""The submission worker: sends queued jobs to their providers, at most `max_in_flight` per provider.

The rule that keeps money safe is "never send twice what may have been accepted". So a job is claimed (committed as
SUBMITTED, for good) before its request leaves: `Store.claim_submissions` counts the provider's jobs in flight and
claims as many due jobs as its limit leaves free in one transaction, serialised per provider on every engine, so
the limit holds across any number of instances and no two instances ever hold the same job. A worker that dies
after its claim leaves the job SUBMITTED with a deadline: its callback or its lookup settles it, it is never resent.
Past the claim, only a failure that proves the provider
never took it puts it back in the queue: a connection that was never made, or an answer that says in words it was
not taken (429, TTAPI's 499). Everything else once the request may have been written (a 5xx, a timeout, a dropped
connection, an answer we cannot read, any exception) is "outcome unknown": the job stays SUBMITTED, never resent,
and its callback (whose token names our job) or its deadline lookup (receiver/reconcile.py) settles it. A request
that cannot even be built (a parameter the provider module refuses, a body that cannot be encoded) was never sent:
the job fails with the reason. No path leaves a claimed job without a recorded way forward.

The worker never polls: `run_once()` drains what is due, and the loop that calls it waits to be woken (a job was
recorded, a callback freed a slot) or for the next retry time.

A job's callback URL is fixed when it leaves, so a paid job asks for the public base URL (`callback_base`, a tunnel's
URL that may change: receiver/tunnel.py) right before it does. While none is known, paid jobs are not claimed at
all: they stay queued, and the worker asks again at a backed-off due time (`next_due`), never in a loop. Jobs of a
built-in simulator call back on the local `public_url` and go out regardless.

While the service is paused (the `paused` flag in the store, the money guards' kill switch) queued jobs that rules
created stay queued; jobs a person submitted still go out, since someone asked for each of them just now. Whoever
resumes wakes this worker, and the held jobs go out in their usual order.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import anyio
import anyio.abc
import httpx

from storage import Job, StoreProtocol
from submitter.backoff import next_attempt_at
from submitter.providers import InvalidParams, Provider, ProviderError, ProviderRequest, Rejection
from submitter.tokens import HookSigner

log = logging.getLogger("reelhook.submitter")

# Errors raised before a single byte of the request could have reached the provider.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
MAX_ATTEMPTS = 10
PAUSE_FLAG = "paused"  # the store flag of the kill switch (receiver.guards sets it); its value is the reason
FRAME_FIELDS = ("image_url", "end_image_url")
FRAME_PREFIX = "frame:"  # an uploaded frame (receiver/frames.py), sent as a URL signed at build time
ASK_AGAIN = (1.0, 30.0)  # seconds before asking again for a public URL while none is known: first, at most


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one provider."""

    provider: Provider
    base_url: str
    api_key: str
    max_in_flight: int | None = None  # None: the provider's documented limit
    callback_grace: float = 900.0  # seconds after sending before a job with no result is looked up
    give_up_after: float = 86400.0  # seconds after sending before a job with no result is failed as lost
    simulated: bool = False  # the built-in simulator: free, and it calls back on the local URL

    @property
    def slots(self) -> int:
        return self.max_in_flight if self.max_in_flight is not None else self.provider.max_in_flight

    def request(self, http: httpx.AsyncClient, spec: ProviderRequest) -> httpx.Request:
        """`spec` as an httpx request to this provider. The body is encoded here: text that cannot be fails here,
        before anything is sent."""
        return http.build_request(
            spec.method, self.base_url + spec.path, headers=dict(spec.headers), json=spec.json, params=dict(spec.params)
        )


class Submitter:
    def __init__(
        self,
        store: StoreProtocol,
        http: httpx.AsyncClient,
        endpoints: Mapping[str, Endpoint],
        *,
        signer: HookSigner,
        public_url: str,
        callback_base: Callable[[], Awaitable[str | None]] | None = None,
        on_recorded: Callable[[], None] = lambda: None,
        on_outcome: Callable[[str, str], None] = lambda provider, outcome: None,
        fault: Callable[[str], None] = lambda point: None,
        frame_link: Callable[[str], str | None] = lambda reference: None,
    ) -> None:
        self._store = store
        self._http = http
        self._endpoints = endpoints
        self._signer = signer
        self._public_url = public_url.rstrip("/")
        self._callback_base = callback_base  # paid jobs' base, asked as they leave; None: public_url for all
        self._asks = 0  # asks in a row that found no public URL
        self._ask_again_at: float | None = None
        self._on_recorded = on_recorded
        self._on_outcome = on_outcome  # (provider, submitted | retry | unknown | failed), for the metrics
        self._fault = fault
        self._frame_link = frame_link  # `frame:<sha256>` -> its signed path under the public URL, or None
        self._clock = store.clock
        self._sends: anyio.abc.TaskGroup | None = None  # set while `sending`: where each request runs
        self._in_flight = 0  # requests handed off and not finished
        self._sent: anyio.Event | None = None  # set when the last of them finishes

    def hook_url(self, job_id: str, provider: str, base: str | None = None) -> str:
        # A provider with a callback_suffix appends it itself; the receiver routes both forms.
        token = self._signer.sign_hook_token(job_id, provider)
        return f"{(base or self._public_url).rstrip('/')}/hooks/{provider}/{token}"

    def frame_url(self, reference: str, base: str | None = None) -> str | None:
        # Under the same base as the job's callback: the provider reaches both through the same tunnel.
        link = self._frame_link(reference)
        return None if link is None else (base or self._public_url).rstrip("/") + link

    async def next_due(self) -> float | None:
        due = await self._store.next_submission_at()
        if self._ask_again_at is not None:
            due = self._ask_again_at if due is None else min(due, self._ask_again_at)
        return due

    async def run_once(self) -> int:
        """Send every queued job that is due and has a free slot; return how many were sent or settled."""
        handled = 0
        followups = await self._store.get_flag(PAUSE_FLAG) is None
        self._ask_again_at = None  # set again below only while paid jobs wait for a public URL
        paid_base: list[str | None] = []  # asked at most once a run, and only when a paid job is due
        for name in await self._store.queued_providers():
            endpoint = self._endpoints.get(name)
            base = self._public_url
            if endpoint is not None and not endpoint.simulated and self._callback_base is not None:
                if not paid_base:
                    paid_base.append(await self._ask_for_base())
                if paid_base[0] is None:
                    continue  # they stay queued: a callback URL nobody answers would lose what was paid for
                base = paid_base[0]
            jobs = await self._store.claim_submissions(
                name,
                slots=endpoint.slots if endpoint else 1,
                followups=followups,
                look_up_after=endpoint.callback_grace if endpoint else 900.0,
            )
            if self._sends is not None:  # each request on its own: this run goes on to the next provider now
                for job in jobs:
                    self._start_send(self._sends, job, endpoint, base)
            else:
                async with anyio.create_task_group() as tg:
                    for job in jobs:
                        self._start_send(tg, job, endpoint, base)
            handled += len(jobs)
        return handled

    @asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """While the block runs, a run hands each job it claimed to a request of its own and returns at once, so a
        provider slow to answer holds up nothing else: not another provider's jobs, not a follow-up claimed next.
        (Outside it, as in a one-off call, a run waits for its requests.) Leaving the block cancels what is still
        in flight, as stopping the worker always did: a claimed job is never sent again, its lookup settles it."""
        async with anyio.create_task_group() as tg:
            self._sends = tg
            try:
                yield
            finally:
                self._sends = None
                tg.cancel_scope.cancel()

    async def wait_sent(self) -> None:
        """Until no request handed off by `sending` is in flight."""
        while self._in_flight:
            self._sent = self._sent or anyio.Event()
            await self._sent.wait()

    def _start_send(self, tg: anyio.abc.TaskGroup, job: Job, endpoint: Endpoint | None, base: str) -> None:
        self._in_flight += 1
        tg.start_soon(self._send_one, job, endpoint, base)

    async def _send_one(self, job: Job, endpoint: Endpoint | None, base: str) -> None:
        try:
            await self._submit_logged(job, endpoint, base)
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._sent is not None:
                self._sent.set()
                self._sent = None
        self._on_recorded()  # its outcome is recorded: its job.submitted event (or failure) is for the rules

    async def _ask_for_base(self) -> str | None:
        assert self._callback_base is not None
        try:
            base = await self._callback_base()
        except Exception:
            log.exception("cannot tell the public URL; paid jobs wait")
            base = None
        if base is not None:
            self._asks = 0
            return base
        self._asks += 1
        wait = min(ASK_AGAIN[1], ASK_AGAIN[0] * 2.0 ** (self._asks - 1))
        self._ask_again_at = self._clock() + wait
        if self._asks == 1:
            log.warning("paid jobs wait: no public URL is known for their callbacks; asking again, backing off")
        return None

    async def _submit_logged(self, job: Job, endpoint: Endpoint | None, base: str) -> None:
        # One job's failure (say, the database is locked) must not cancel its siblings' requests mid-flight.
        try:
            await self._submit(job, endpoint, base)
        except Exception:
            log.exception(
                "job %s: submission step failed; it resumes from its recorded state",
                job.id,
                extra={"event": "job.send_failed", "job": job},
            )

    async def _submit(self, job: Job, endpoint: Endpoint | None, base: str) -> None:
        if endpoint is None:
            await self._fail(job, f"provider {job.provider!r} is not configured")
            return
        parent = await self._store.get_job(job.parent_id) if job.parent_id else None
        try:
            request = self._build(job, parent, endpoint, base)
        except Exception as exc:  # nothing left: a request that cannot be built or encoded was never sent
            reason = str(exc) if isinstance(exc, InvalidParams) else f"cannot build the request: {_describe(exc)}"
            log.warning("job %s: %s: %s", job.id, job.provider, reason, extra={"event": "job.invalid", "job": job})
            await self._fail(job, f"{job.provider}: {reason}")
            return
        try:
            response = await self._http.send(request)
        except NOT_SENT as exc:
            await self._retry(job, f"{job.provider}: not sent: {_describe(exc)}")
            return
        except Exception as exc:  # the request may have been written and taken
            await self._unknown(job, _describe(exc))
            return
        self._fault("submit.sent")
        try:
            provider_job_id = endpoint.provider.parse_submit_response(response.status_code, response.content)
        except ProviderError as exc:
            await self._rejected(job, exc)
            return
        except Exception as exc:
            await self._unknown(job, f"unreadable answer ({response.status_code}): {_describe(exc)}")
            return
        await self._store.record_submitted(job.id, provider_job_id)
        self._on_outcome(job.provider, "submitted")
        log.info(
            "job %s: submitted to %s as %s",
            job.id,
            job.provider,
            provider_job_id,
            extra={"event": "job.sent", "job": job, "provider_job_id": provider_job_id},
        )

    def _build(self, job: Job, parent: Job | None, endpoint: Endpoint, base: str) -> httpx.Request:
        job = self._with_frame_urls(job, base)
        hook_url = self.hook_url(job.id, job.provider, base)
        spec = endpoint.provider.build_request(job, parent, endpoint.api_key, hook_url)
        return endpoint.request(self._http, spec)

    def _with_frame_urls(self, job: Job, base: str) -> Job:
        """The job as the provider is to see it: each uploaded frame it names as a URL signed now, so the signature
        is a day old at most when the provider fetches it, however long the job was queued."""
        params = dict(job.params)
        for name in FRAME_FIELDS:
            reference = params.get(name)
            if isinstance(reference, str) and reference.startswith(FRAME_PREFIX):
                url = self.frame_url(reference, base)
                if url is None:
                    raise InvalidParams(f"{name}: {reference} is no longer stored; upload it again (--image FILE)")
                params[name] = url
        return job if params == job.params else replace(job, params=params)

    async def _rejected(self, job: Job, exc: ProviderError) -> None:
        if exc.kind is Rejection.RETRY:
            await self._retry(job, exc.message)
        elif exc.kind is Rejection.FATAL:
            log.warning(
                "job %s: %s refused it: %s",
                job.id,
                job.provider,
                exc.message,
                extra={"event": "job.refused", "job": job},
            )
            await self._fail(job, exc.message)
        else:
            await self._unknown(job, exc.message)

    async def _unknown(self, job: Job, why: str) -> None:
        error = f"outcome unknown ({why}); not resent: the provider's callback will settle it"
        log.warning("job %s: %s %s", job.id, job.provider, error, extra={"event": "job.outcome_unknown", "job": job})
        await self._store.record_unknown_outcome(job.id, error)
        self._on_outcome(job.provider, "unknown")

    async def _retry(self, job: Job, error: str) -> None:
        if job.attempts >= MAX_ATTEMPTS:
            await self._fail(job, f"gave up after {job.attempts} attempts: {error}")
            return
        retry_at = next_attempt_at(job.attempts, self._clock())
        log.info(
            "job %s: %s; retrying in %.1fs",
            job.id,
            error,
            retry_at - self._clock(),
            extra={"event": "job.send_retried", "job": job},
        )
        await self._store.release_submission(job.id, error=error, retry_at=retry_at)
        self._on_outcome(job.provider, "retry")

    async def _fail(self, job: Job, error: str) -> None:
        await self._store.fail_job(job.id, error)
        self._on_outcome(job.provider, "failed")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
