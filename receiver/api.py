"""The API: jobs (`POST /api/jobs`, `GET /api/jobs`, `GET /api/jobs/{id}`), `POST /api/reconcile`, and the kill
switch (`POST /api/pause`, `POST /api/resume`, `GET /api/status`), all behind a bearer token.

The receiver's port is exposed through a tunnel, so everything here needs `Authorization: Bearer <token>`; only
`/hooks/*` and `/healthz` are open. Bad input answers 4xx with `{"error", "detail"}` and records nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from receiver import guards
from receiver.jobrequests import BadRequest, read_job_request
from receiver.media import media_urls
from receiver.requests import BodyTooLarge, TextSafeJSONResponse, error, read_body
from receiver.service import Service
from receiver.views import job_json
from storage import Job, JobStatus
from submitter.jsonbody import JSONBodyError, parse_json

MAX_REQUEST = 64 * 1024
log = logging.getLogger("reelhook.api")


def authorized(request: Request) -> bool:
    service: Service = request.app.state.service
    expected = f"Bearer {service.settings.api_token}"
    return secrets.compare_digest(request.headers.get("authorization", "").encode(), expected.encode())


async def create_job(request: Request) -> Response:
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    try:
        body = await _json_object(request)
        new = await read_job_request(service, body)
    except BadRequest as exc:
        return error(exc.status_code, exc.error, exc.detail)
    job, _ = await service.store.create_job(new)
    service.wake_submitter()
    return TextSafeJSONResponse(job_json(job, media_url=media_urls(service.settings)), status_code=201)


async def list_jobs(request: Request) -> Response:
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    try:
        status, limit, before = _list_query(request.query_params)
    except BadRequest as exc:
        return error(exc.status_code, exc.error, exc.detail)
    jobs = await service.store.list_jobs(status=status, limit=limit, before=before)
    next_cursor = _encode_cursor(jobs[-1]) if len(jobs) == limit else None
    urls = media_urls(service.settings)
    return TextSafeJSONResponse({"jobs": [job_json(job, media_url=urls) for job in jobs], "next_cursor": next_cursor})


async def get_job(request: Request) -> Response:
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    job_id: str = request.path_params["job_id"]
    # Job ids are ASCII (uuid hex); anything else, such as a lone surrogate a server decoded, names no job.
    job = await service.store.get_job(job_id) if job_id.isascii() else None
    if job is None:
        return error(404, "not_found", f"no job {request.path_params['job_id']}")
    return TextSafeJSONResponse(job_json(job, media_url=media_urls(service.settings)))


async def reconcile(request: Request) -> Response:
    """`POST /api/reconcile`: look up now the jobs whose results are overdue, and give up on the lost ones
    (receiver/reconcile.py)."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    report = await service.reconciler.reconcile()
    return TextSafeJSONResponse({"looked_up": report.looked_up, "settled": report.settled, "lost": report.lost})


async def pause(request: Request) -> Response:
    """`POST /api/pause` `{"reason"?}`: the kill switch. Callbacks are still stored; rules' follow-ups wait."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    try:
        body = await _json_object(request, empty={})
    except BadRequest as exc:
        return error(exc.status_code, exc.error, exc.detail)
    reason = body.get("reason") or "paused from the API"
    if not isinstance(reason, str):
        return error(400, "invalid_request", "reason must be a string")
    await guards.pause(service.store, reason)
    log.warning("paused: %s", reason)
    return TextSafeJSONResponse({"paused": reason})


async def resume(request: Request) -> Response:
    """`POST /api/resume`: rules may spend again; what waited goes out now."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    await guards.resume(service.store)
    service.wake_all()
    log.warning("resumed")
    return TextSafeJSONResponse({"paused": None})


async def status(request: Request) -> Response:
    """`GET /api/status`: whether the kill switch is on, and why."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    return TextSafeJSONResponse({"paused": await guards.paused(service.store)})


async def _json_object(request: Request, *, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body as a JSON object (`empty` stands for no body at all where that is allowed), or BadRequest."""
    try:
        raw = await read_body(request, MAX_REQUEST)
    except BodyTooLarge:
        raise BadRequest(f"request bodies are limited to {MAX_REQUEST} bytes", 413, "too_large") from None
    if not raw and empty is not None:
        return empty
    try:
        body = parse_json(raw, what="the body", surrogates="refuse")
    except JSONBodyError as exc:
        raise BadRequest(str(exc), error="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _list_query(query: QueryParams) -> tuple[JobStatus | None, int, tuple[float, str] | None]:
    """`status`, `limit` and `cursor` of `GET /api/jobs`, or BadRequest naming the one to fix."""
    try:
        status = JobStatus(query["status"]) if "status" in query else None
    except ValueError:
        detail = f"status must be one of {', '.join(JobStatus)}, got {_shorten(query['status'])!r}"
        raise BadRequest(detail, error="invalid_query") from None
    limit = query.get("limit", "50")
    if not (limit.isascii() and limit.isdigit() and len(limit) <= 3 and 1 <= int(limit) <= 500):
        raise BadRequest(f"limit must be a whole number from 1 to 500, got {_shorten(limit)!r}", error="invalid_query")
    before = _decode_cursor(query["cursor"]) if "cursor" in query else None
    return status, int(limit), before


def _shorten(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:37]}..."


def _encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(json.dumps([job.created_at, job.id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    wrong = BadRequest("cursor must be a next_cursor from an earlier answer, unchanged", error="invalid_query")
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
    except (UnicodeEncodeError, binascii.Error):
        raise wrong from None
    try:
        value = parse_json(raw, what="cursor", surrogates="refuse")
    except JSONBodyError as exc:
        raise BadRequest(f"{exc} (send next_cursor unchanged)", error="invalid_query") from None
    match value:
        case [int() | float() as created_at, str() as job_id] if not isinstance(created_at, bool):
            return float(created_at), job_id  # finite: parse_json refused 1e400 and NaN, and ints past 40 digits
    raise wrong
