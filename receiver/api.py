"""The jobs API: `POST /api/jobs`, `GET /api/jobs`, `GET /api/jobs/{id}`, all behind a bearer token.

The receiver's port is exposed through a tunnel, so everything here needs `Authorization: Bearer <token>`; only
`/hooks/*` and `/healthz` are open. Bad input answers 4xx with `{"error", "detail"}` and records nothing.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.requests import BodyTooLarge, error, read_body
from receiver.service import Service
from receiver.views import job_json
from storage import Job, JobStatus, NewJob
from submitter.providers import PROVIDERS, InvalidParams

MAX_REQUEST = 64 * 1024
GENERATE_FIELDS = {"provider", "action", "prompt", "image_url", "end_image_url", "motion", "resolution", "batch_size"}
EXTEND_FIELDS = {"provider", "action", "parent_id", "index", "prompt", "motion"}
DEFAULT_PROVIDER = "ttapi"


class BadRequest(Exception):
    def __init__(self, detail: str, status_code: int = 400, error: str = "invalid_request") -> None:
        super().__init__(detail)
        self.detail, self.status_code, self.error = detail, status_code, error


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
        new = await _new_job(service, body)
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


async def _new_job(service: Service, body: dict[str, Any]) -> NewJob:
    action = body.get("action", "generate")
    if action == "generate":
        _check_fields(body, GENERATE_FIELDS)
        provider = body.get("provider", DEFAULT_PROVIDER)
        params = {key: body[key] for key in GENERATE_FIELDS - {"provider", "action"} if body.get(key) is not None}
        _require_text(params, "prompt")
        _require_url(params, "image_url", required=True)
        _require_url(params, "end_image_url", required=False)
        parent_id = None
    elif action == "extend":
        _check_fields(body, EXTEND_FIELDS)
        parent = await service.store.get_job(_require_text(body, "parent_id"))
        if parent is None:
            raise BadRequest(f"parent_id: no job {body['parent_id']}", 404, "not_found")
        if parent.status is not JobStatus.SUCCEEDED:
            raise BadRequest(
                f"parent_id: job {parent.id} is {parent.status}; only a succeeded job can be extended", 409, "conflict"
            )
        provider, parent_id = parent.provider, parent.id
        if body.get("provider", provider) != provider:
            raise BadRequest(f"provider: an extend goes to the parent's provider ({provider})")
        params = {key: body[key] for key in ("index", "prompt", "motion") if body.get(key) is not None}
        if not isinstance(params.get("index"), int) or not 0 <= params["index"] < max(len(parent.videos), 1):
            raise BadRequest(
                f"index must be 0-{max(len(parent.videos), 1) - 1} (the parent has {len(parent.videos)} videos)"
            )
    else:
        raise BadRequest(f"action must be 'generate' or 'extend', got {action!r}")
    if provider not in PROVIDERS or provider not in service.settings.providers:
        raise BadRequest(f"provider must be one of {', '.join(service.settings.providers)}, got {provider!r}")
    try:
        PROVIDERS[provider].validate_params(action, params)
    except InvalidParams as exc:
        raise BadRequest(f"{provider}: {exc}") from None
    return NewJob(provider=provider, action=action, params=params, parent_id=parent_id)


def _check_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _require_text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name} is required and must be a non-empty string")
    return value


def _require_url(body: dict[str, Any], name: str, *, required: bool) -> None:
    value = body.get(name)
    if value is None and not required:
        return
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"{name} must be an http(s) URL, got {value!r}")


def _encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(json.dumps([job.created_at, job.id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    return float(created_at), str(job_id)
