"""The API: jobs (`POST /api/jobs`, `GET /api/jobs`, `GET /api/jobs/{id}`, `GET /api/jobs/{id}/timeline`),
`GET /api/overview`, `POST /api/reconcile`, and the kill switch (`POST /api/pause`, `POST /api/resume`,
`GET /api/status`), all behind a bearer token.

The receiver's port is exposed through a tunnel, so everything here needs `Authorization: Bearer <token>`; only
`/hooks/*` and `/healthz` are open. Bad input answers 4xx with `{"error", "detail"}` and records nothing.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from receiver.jobrequests import BadRequest
from receiver.media import media_urls
from receiver.requests import BodyTooLarge, TextSafeJSONResponse, error, read_body
from receiver.service import Service
from receiver.views import job_json
from receiver.web import reads
from submitter.jsonbody import JSONBodyError, parse_json

MAX_REQUEST = 64 * 1024
log = logging.getLogger("reelhook.api")


def authorized(request: Request) -> bool:
    service: Service = request.app.state.service
    expected = f"Bearer {service.settings.api_token}"
    return secrets.compare_digest(request.headers.get("authorization", "").encode(), expected.encode())


Handler = Callable[[Request], Awaitable[Response]]


def no_query(handler: Handler) -> Handler:
    """A route that reads no query parameters answers 400 to any, naming it (once the caller is authorized), rather
    than quietly doing what it would do without: `GET /api/jobs` reads its own (`JobQuery.parse`)."""

    @functools.wraps(handler)
    async def checked(request: Request) -> Response:
        if request.query_params and authorized(request):
            try:
                reads.check_query(request.query_params, (), f"{request.method} {request.url.path[:80]}")
            except BadRequest as exc:
                return error(exc.status_code, exc.error, exc.detail)
        return await handler(request)

    return checked


@no_query
async def create_job(request: Request) -> Response:
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    try:
        job = await reads.submit_job(service, await _json_object(request))
    except BadRequest as exc:
        return error(exc.status_code, exc.error, exc.detail)
    return TextSafeJSONResponse(job_json(job, media_url=media_urls(service.settings)), status_code=201)


async def list_jobs(request: Request) -> Response:
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    try:
        query = reads.JobQuery.parse(request.query_params)
    except BadRequest as exc:
        return error(exc.status_code, exc.error, exc.detail)
    return TextSafeJSONResponse(await reads.jobs_page(service, query))


@no_query
async def get_job(request: Request) -> Response:
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    try:
        job = await reads.find_job(service, request.path_params["job_id"])  # the id or a unique prefix of it
    except BadRequest as exc:
        return error(exc.status_code, exc.error, exc.detail)
    if job is None:
        return error(404, "not_found", f"no job {request.path_params['job_id']}")
    return TextSafeJSONResponse(job_json(job, media_url=media_urls(service.settings)))


@no_query
async def reconcile(request: Request) -> Response:
    """`POST /api/reconcile`: look up now the jobs whose results are overdue, and give up on the lost ones
    (receiver/reconcile.py)."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    return TextSafeJSONResponse(await reads.reconcile(service))


@no_query
async def prune(request: Request) -> Response:
    """`POST /api/prune` `{"callbacks_older_than_days"}`: drop the raw bodies of finished jobs' callbacks past that
    age, keeping each one's digest, status and counts (storage/inbox.py)."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    try:
        body = await _json_object(request)
    except BadRequest as exc:
        return error(exc.status_code, exc.error, exc.detail)
    days = body.get("callbacks_older_than_days")
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 <= days <= 36500:
        return error(
            400, "invalid_request", f"callbacks_older_than_days must be a number of days 0-36500, got {days!r}"
        )
    pruned = await service.store.prune_callbacks(older_than=service.store.clock() - days * 86400)
    log.info("pruned the bodies of %d callbacks older than %s days", pruned, days, extra={"event": "callbacks.pruned"})
    return TextSafeJSONResponse({"pruned": pruned})


@no_query
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
    await reads.pause(service, reason)
    return TextSafeJSONResponse({"paused": reason})


@no_query
async def resume(request: Request) -> Response:
    """`POST /api/resume`: rules may spend again; what waited goes out now."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    await reads.resume(service)
    return TextSafeJSONResponse({"paused": None})


@no_query
async def status(request: Request) -> Response:
    """`GET /api/status`: whether the kill switch is on (`paused`: its reason, or null), and per provider what is
    queued, in flight of its limit, overdue, lost today, and its downloads; what a pause holds back. The overview's
    read, so the two never disagree."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    return TextSafeJSONResponse(await reads.overview(request.app.state.service))


@no_query
async def timeline(request: Request) -> Response:
    """`GET /api/jobs/{id}/timeline`: the job, what happened to it in order, and its chain as a tree."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    try:
        found = await reads.job_timeline(request.app.state.service, request.path_params["job_id"])
    except BadRequest as exc:
        return error(exc.status_code, exc.error, exc.detail)
    if found is None:
        return error(404, "not_found", f"no job {request.path_params['job_id']}")
    return TextSafeJSONResponse(found)


@no_query
async def cancel(request: Request) -> Response:
    """`POST /api/jobs/{id}/cancel`: fail a queued job before it is sent (409 for any other)."""
    return await _job_verb(request, reads.cancel)


@no_query
async def retry(request: Request) -> Response:
    """`POST /api/jobs/{id}/retry`: try a job's failed downloads again now (409 if none failed)."""
    return await _job_verb(request, reads.retry_downloads)


async def _job_verb(request: Request, verb: Any) -> Response:
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    try:
        return TextSafeJSONResponse(await verb(request.app.state.service, request.path_params["job_id"]))
    except BadRequest as exc:
        return error(exc.status_code, exc.error, exc.detail)


@no_query
async def overview(request: Request) -> Response:
    """`GET /api/overview`: per provider, what is in flight, queued, finished today, downloading; the kill switch."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    return TextSafeJSONResponse(await reads.overview(request.app.state.service))


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
