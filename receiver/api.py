"""The API: jobs (`POST /api/jobs`, `GET /api/jobs`, `GET /api/jobs/{id}`), `POST /api/reconcile`, and the kill
switch (`POST /api/pause`, `POST /api/resume`, `GET /api/status`), all behind a bearer token.

The receiver's port is exposed through a tunnel, so everything here needs `Authorization: Bearer <token>`; only
`/hooks/*` and `/healthz` are open. Bad input answers 4xx with `{"error", "detail"}` and records nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver import guards
from receiver.jobrequests import BadRequest, read_job_request
from receiver.requests import BodyTooLarge, error, read_body
from receiver.service import Service
from receiver.views import job_json
from storage import Job, JobStatus

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
    return JSONResponse(job_json(job), status_code=201)


async def list_jobs(request: Request) -> Response:
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    query = request.query_params
    try:
        status = JobStatus(query["status"]) if "status" in query else None
        limit = int(query.get("limit", "50"))
        if not 1 <= limit <= 500:
            raise ValueError
        before = _decode_cursor(query["cursor"]) if "cursor" in query else None
    except (ValueError, KeyError, TypeError):
        detail = f"status must be one of {', '.join(JobStatus)}; limit 1-500; cursor as returned in next_cursor"
        return error(400, "invalid_query", detail)
    jobs = await service.store.list_jobs(status=status, limit=limit, before=before)
    next_cursor = _encode_cursor(jobs[-1]) if len(jobs) == limit else None
    return JSONResponse({"jobs": [job_json(job) for job in jobs], "next_cursor": next_cursor})


async def get_job(request: Request) -> Response:
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    job = await service.store.get_job(request.path_params["job_id"])
    if job is None:
        return error(404, "not_found", f"no job {request.path_params['job_id']}")
    return JSONResponse(job_json(job))


async def reconcile(request: Request) -> Response:
    """`POST /api/reconcile`: look up now the jobs whose results are overdue, and give up on the lost ones
    (receiver/reconcile.py)."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    report = await service.reconciler.reconcile()
    return JSONResponse({"looked_up": report.looked_up, "settled": report.settled, "lost": report.lost})


async def pause(request: Request) -> Response:
    """`POST /api/pause` `{"reason"?}`: the kill switch. Callbacks are still stored; rules' follow-ups wait."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    try:
        body = await _json_object(request) if (await request.body()) else {}
    except BadRequest as exc:
        return error(exc.status_code, exc.error, exc.detail)
    reason = body.get("reason") or "paused from the API"
    if not isinstance(reason, str):
        return error(400, "invalid_request", "reason must be a string")
    await guards.pause(service.store, reason)
    log.warning("paused: %s", reason)
    return JSONResponse({"paused": reason})


async def resume(request: Request) -> Response:
    """`POST /api/resume`: rules may spend again; what waited goes out now."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    await guards.resume(service.store)
    service.wake_all()
    log.warning("resumed")
    return JSONResponse({"paused": None})


async def status(request: Request) -> Response:
    """`GET /api/status`: whether the kill switch is on, and why."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    return JSONResponse({"paused": await guards.paused(service.store)})


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        raw = await read_body(request, MAX_REQUEST)
    except BodyTooLarge:
        raise BadRequest(f"request bodies are limited to {MAX_REQUEST} bytes", 413, "too_large") from None
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body must be JSON: {exc}", error="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(json.dumps([job.created_at, job.id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    return float(created_at), str(job_id)
