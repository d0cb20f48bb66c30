"""Callback slots: at most `limit` callbacks in progress at once, and at most `per_job` of them for one job.

A slot is what a callback holds from the moment its token is verified until its answer is sent: the body upload,
the parse, the database transaction. It is taken *after* the token check (receiver/hooks.py calls
`take_hook_slot` right after `verify_hook_token`), so a request with a forged or expired token never holds one and
is answered 403 without its body being read; and it is counted per job, so whoever holds one job's token (a
leaked hook URL) can hold `per_job` slots and not the service's whole capacity. Past either limit the answer is
immediate, with `Retry-After`: 429 when the job has its share, 503 when the service is full. A provider that gets
no answer in time counts the delivery as failed anyway and retries it; an immediate refusal says the same without
tying up a connection, a database slot and the provider's patience. Nothing of a refused callback was read, so
nothing of it was stored; every callback that got a slot runs to its commit as usual. `/healthz` and the API take
no slot, so an operator can see what is going on.

The middleware owns each slot's lifetime (released when the request ends, whichever way it ends); the handler
only decides when to take it, since only the handler knows the job.
"""

from __future__ import annotations

from collections import Counter

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.requests import error

HOOKS = "/hooks/"
SCOPE_KEY = "reelhook.hook_slot"


class HookSlots:
    def __init__(self, app: ASGIApp, *, limit: int, per_job: int, retry_after: int = 5) -> None:
        if limit < 1 or per_job < 1:
            raise ValueError("HookSlots: limit and per_job must be at least 1")
        self.app = app
        self.limit = limit
        self.per_job = per_job
        self.retry_after = retry_after
        self.in_progress = 0
        self.by_job: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(HOOKS):
            await self.app(scope, receive, send)
            return
        slot = _Slot(self)
        scope[SCOPE_KEY] = slot
        try:
            await self.app(scope, receive, send)
        finally:
            slot.release()


class _Slot:
    def __init__(self, slots: HookSlots) -> None:
        self.slots = slots
        self.job_id: str | None = None

    def take(self, job_id: str) -> Response | None:
        slots = self.slots
        if self.job_id is not None:
            raise RuntimeError("a request takes one hook slot at most")
        if slots.by_job[job_id] >= slots.per_job:
            detail = f"{slots.per_job} callbacks for this job are in progress; retry in {slots.retry_after}s"
            return self._refuse(429, "too_many_requests", detail)
        if slots.in_progress >= slots.limit:
            detail = f"more than {slots.limit} callbacks in progress; retry in {slots.retry_after}s"
            return self._refuse(503, "overloaded", detail)
        slots.in_progress += 1
        slots.by_job[job_id] += 1
        self.job_id = job_id
        return None

    def release(self) -> None:
        if self.job_id is None:
            return
        slots = self.slots
        slots.in_progress -= 1
        slots.by_job[self.job_id] -= 1
        if not slots.by_job[self.job_id]:
            del slots.by_job[self.job_id]
        self.job_id = None

    def _refuse(self, status_code: int, code: str, detail: str) -> Response:
        response = error(status_code, code, detail)
        response.headers["retry-after"] = str(self.slots.retry_after)
        return response


def take_hook_slot(request: Request, job_id: str) -> Response | None:
    """Hold a callback slot for `job_id` until this request ends; or the response to send instead (429/503)."""
    slot = request.scope.get(SCOPE_KEY)
    if not isinstance(slot, _Slot):
        raise RuntimeError("take_hook_slot needs the HookSlots middleware in front of the /hooks/ routes")
    return slot.take(job_id)
