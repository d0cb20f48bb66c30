"""What the API and the dashboard both read and do, as functions of the service: one code path for each, whether
it is reached as JSON (`/api/*`) or as a page.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from starlette.datastructures import QueryParams

from receiver import guards
from receiver.jobrequests import BadRequest, read_job_request
from receiver.media import media_urls
from receiver.service import Service
from receiver.views import chain_json, job_json, overview_json, timeline_json
from storage import Job, JobStatus
from submitter.jsonbody import JSONBodyError, parse_json

log = logging.getLogger("reelhook.api")
ID_LENGTH = 32  # uuid4().hex
MIN_PREFIX = 6  # hex characters: 16M ids per prefix, so a pasted six rarely needs a seventh
SPEND_DAYS = 7  # UTC days of spend the overview and `GET /api/status` show, today included


@dataclass(frozen=True)
class JobQuery:
    """`GET /api/jobs`'s query: filters, a page size and where the previous page ended."""

    status: JobStatus | None = None
    limit: int = 50
    before: tuple[float, str] | None = None
    provider: str | None = None
    action: str | None = None
    rule: str | None = None
    root: str | None = None
    q: str | None = None

    PARAMETERS: ClassVar[tuple[str, ...]] = ("status", "limit", "cursor", "provider", "action", "rule", "root", "q")
    MAX_LIMIT: ClassVar[int] = 500
    MAX_TEXT: ClassVar[int] = 200  # characters of a text filter

    @classmethod
    def parse(cls, query: QueryParams) -> JobQuery:
        """The query of `GET /api/jobs`, or BadRequest naming the parameter to fix. Empty values mean no filter."""
        check_query(query, cls.PARAMETERS, "GET /api/jobs")
        values = {key: value for key, value in query.items() if value != ""}
        try:
            status = JobStatus(values["status"]) if "status" in values else None
        except ValueError:
            detail = f"status must be one of {', '.join(JobStatus)}, got {_shorten(values['status'])!r}"
            raise BadRequest(detail, error="invalid_query") from None
        limit = values.get("limit", "50")
        if not (limit.isascii() and limit.isdigit() and len(limit) <= 3 and 1 <= int(limit) <= cls.MAX_LIMIT):
            detail = f"limit must be a whole number from 1 to {cls.MAX_LIMIT}, got {_shorten(limit)!r}"
            raise BadRequest(detail, error="invalid_query")
        before = decode_cursor(values["cursor"]) if "cursor" in values else None
        texts = {}
        for name in ("provider", "action", "rule", "root", "q"):
            value = values.get(name)
            if value is not None and (len(value) > cls.MAX_TEXT or not value.isprintable()):
                detail = f"{name} must be printable text of at most {cls.MAX_TEXT} characters"
                raise BadRequest(detail, error="invalid_query")
            texts[name] = value.strip() if name == "q" and value is not None else value
        return cls(status, int(limit), before, **texts)


def check_query(query: QueryParams, known: tuple[str, ...], route: str) -> None:
    """BadRequest naming the parameters of `query` that `route` does not read: a misspelt filter (`?provder=`) must
    not quietly answer as if there were none."""
    unknown = sorted({_shorten(name) for name in query if name not in known})
    if unknown:
        takes = f"takes {', '.join(known)}" if known else "takes no query parameters"
        plural = "s" if len(unknown) > 1 else ""
        raise BadRequest(
            f"unknown query parameter{plural} {', '.join(unknown)}; {route} {takes}", error="invalid_query"
        )


async def jobs_page(service: Service, query: JobQuery) -> dict[str, Any]:
    jobs = await service.store.list_jobs(
        status=query.status, limit=query.limit, before=query.before, provider=query.provider, action=query.action,
        rule=query.rule, root=query.root, q=query.q or None,
    )  # fmt: skip
    next_cursor = encode_cursor(jobs[-1]) if len(jobs) == query.limit else None
    urls = media_urls(service.settings)
    return {"jobs": [job_json(job, media_url=urls) for job in jobs], "next_cursor": next_cursor}


async def find_job(service: Service, job_id: str) -> Job | None:
    """The job with this id, or the one job whose id starts with it (at least MIN_PREFIX hex characters); None for
    none; BadRequest 409 naming the candidates when the prefix fits several."""
    # Job ids are ASCII (uuid hex); anything else, such as a lone surrogate a server decoded, names no job.
    job = await service.store.get_job(job_id) if job_id.isascii() else None
    prefix = job_id.lower()
    if job is not None or len(prefix) < MIN_PREFIX or not all(c in "0123456789abcdef" for c in prefix):
        return job
    # The `q` filter also matches provider job ids; only ids that start with the prefix are candidates.
    candidates = [
        found.id for found in await service.store.list_jobs(q=prefix, limit=11) if found.id.startswith(prefix)
    ]
    if len(candidates) > 1:
        count = "over 10" if len(candidates) > 10 else str(len(candidates))
        shown = ", ".join(candidates[:5]) + (", ..." if len(candidates) > 5 else "")
        detail = f"job id prefix {prefix} fits {count} jobs ({shown}): give more of the id"
        raise BadRequest(detail, 409, "ambiguous")
    return await service.store.get_job(candidates[0]) if candidates else None


async def job_timeline(service: Service, job_id: str) -> dict[str, Any] | None:
    """A job, what happened to it in order, and its chain as a tree; None for no such job."""
    job = await find_job(service, job_id)
    if job is None:
        return None
    callbacks = await service.store.job_callbacks(job.id)
    events = await service.store.job_events(job.id)
    chain = await service.store.chain(job.root_id)
    job_view = job_json(job, media_url=media_urls(service.settings))
    notifications = await service.store.job_notifications(job.id)
    timeline = timeline_json(job, callbacks, events, chain, notifications)
    return {"job": job_view, "timeline": timeline, "chain": chain_json(chain)}


async def overview(service: Service) -> dict[str, Any]:
    """`GET /api/overview` and `GET /api/status`, and the dashboard's front page: one read of the service's state."""
    now = time.time()
    midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    counts = await service.store.provider_counts(list(service.settings.providers), since=midnight, now=now)
    limits = {name: endpoint.slots for name, endpoint in service.endpoints.items()}
    waiting = await service.store.waiting_counts()
    spend = await service.store.spend_by_day(since=midnight - (SPEND_DAYS - 1) * 86400)
    view = overview_json(counts, limits, await guards.paused(service.store), now, waiting, spend)
    found = await service.public_url.find()  # the tunnel agent's answer of the last seconds, or asked now
    view["public_url"] = {"url": found.url, "from": found.source, "waiting": service.public_url.waiting}
    return view


async def submit_job(service: Service, body: dict[str, Any]) -> Job:
    """`POST /api/jobs`: record the job a body asks for and wake the submitter, or BadRequest. A follow-up's
    `parent_id` may be a unique prefix of the parent's id."""
    parent_id = body.get("parent_id")
    # A whole id (uuid hex) goes straight to read_job_request, which looks it up anyway.
    if isinstance(parent_id, str) and len(parent_id) < ID_LENGTH and (parent := await find_job(service, parent_id)):
        body = {**body, "parent_id": parent.id}
    new = await read_job_request(service, body)
    job, _ = await service.store.create_job(new)
    service.wake_submitter()
    return job


async def cancel(service: Service, job_id: str) -> dict[str, Any]:
    """`POST /api/jobs/{id}/cancel`: a queued job is failed before it is sent; BadRequest for any other."""
    job = await _existing(service, job_id)
    if not await service.store.cancel_job(job.id):
        raise BadRequest(f"job {job.id} is {job.status}: only a queued job can be cancelled", 409, "conflict")
    service.wake_events()
    log.info("job %s: cancelled before it was sent", job.id, extra={"event": "job.cancelled", "job": job})
    return {"cancelled": job.id}


async def retry_downloads(service: Service, job_id: str) -> dict[str, Any]:
    """`POST /api/jobs/{id}/retry`: the job's failed downloads are tried again now; BadRequest if none failed."""
    job = await _existing(service, job_id)
    retried = await service.store.retry_downloads(job.id)
    if not retried:
        raise BadRequest(f"job {job.id} has no failed download to retry", 409, "conflict")
    service.wake_all()
    log.info(
        "job %s: retrying %d failed downloads", job.id, retried, extra={"event": "download.retry_asked", "job": job}
    )
    return {"retried": retried}


async def _existing(service: Service, job_id: str) -> Job:
    job = await find_job(service, job_id)
    if job is None:
        raise BadRequest(f"no job {_shorten(job_id)}", 404, "not_found")
    return job


async def pause(service: Service, reason: str) -> None:
    """`POST /api/pause`: the kill switch. Callbacks are still stored; rules' follow-ups wait."""
    await guards.pause(service.store, reason)
    log.warning("paused: %s", reason, extra={"event": "service.paused"})
    service.changes.notify()


async def resume(service: Service) -> None:
    """`POST /api/resume`: rules may spend again; what waited goes out now."""
    await guards.resume(service.store)
    service.wake_all()
    log.warning("resumed", extra={"event": "service.resumed"})


async def reconcile(service: Service) -> dict[str, int]:
    """`POST /api/reconcile`: look up now the jobs whose results are overdue (receiver/reconcile.py)."""
    report = await service.reconciler.reconcile()
    return {"looked_up": report.looked_up, "settled": report.settled, "lost": report.lost}


def encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(json.dumps([job.created_at, job.id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    wrong = BadRequest("cursor must be a next_cursor from an earlier answer, unchanged", error="invalid_query")
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
    except (UnicodeEncodeError, ValueError):
        raise wrong from None
    try:
        value = parse_json(raw, what="cursor", surrogates="refuse")
    except JSONBodyError as exc:
        raise BadRequest(f"{exc} (send next_cursor unchanged)", error="invalid_query") from None
    match value:
        case [int() | float() as created_at, str() as job_id] if not isinstance(created_at, bool):
            return float(created_at), job_id  # finite: parse_json refused 1e400 and NaN, and ints past 40 digits
    raise wrong


def _shorten(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:37]}..."
