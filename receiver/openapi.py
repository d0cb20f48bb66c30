"""`GET /api/openapi.json`: the OpenAPI 3.1 document of every `/api/*` route.

The document is data built here, but what the API validates comes from the tables the API itself checks against:
`GET /api/jobs`'s parameters from `JobQuery.PARAMETERS` and its limits, the body of `POST /api/jobs` from the action
and field tables of receiver/jobrequests.py (`FRESH`, `FOLLOW_UP`, `TYPES`), the providers from the registry and the
statuses from their enums. A parameter, action or field added there without a line here raises KeyError when the
document is built, so the document cannot fall behind silently; `tests/receiver/test_openapi.py` also walks
`app.routes` for a route missing here, and runs schemathesis against a live server for answers that differ from it.

The document sits behind the API token like every other `/api/*` route: the port is reachable through a tunnel, and
one rule for the whole prefix (every `/api/*` route answers 401 without the token) is easier to keep than exceptions.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from receiver import api
from receiver.jobrequests import DEFAULT_PROVIDER, FOLLOW_UP, FRESH, TYPES
from receiver.requests import TextSafeJSONResponse, error
from receiver.web.reads import ID_LENGTH, MIN_PREFIX, JobQuery
from storage import JobStatus
from storage.records import VideoStatus
from submitter.providers import PROVIDERS

Schema = dict[str, Any]

ERROR = "#/components/schemas/Error"
JOB = "#/components/schemas/Job"
JSON_TYPES: dict[type, str] = {str: "string", int: "integer", bool: "boolean", dict: "object", list: "array"}
WHY: dict[int, str] = {
    400: "a parameter or body the route cannot take (`invalid_request`, `invalid_json`, `invalid_query`)",
    401: "no `Authorization: Bearer <REELHOOK_API_TOKEN>`",
    404: "no such job (`not_found`)",
    408: "the body did not arrive in time (`timeout`)",
    409: "the job is not in a state for this, or an id prefix fits several jobs (`conflict`, `ambiguous`)",
    413: "the body is over 64 KiB, or an image frame over the provider's limit (`too_large`)",
    415: "the body is not a PNG, JPEG or WebP image (`unsupported_media_type`)",
}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "application/octet-stream")  # checked by the bytes
TIMELINE_KINDS = ("created", "sent", "callback", "event", "lookup", "lost", "download", "note", "fired", "notification")


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None, *, closed: bool = True) -> Schema:
    """An object with these properties (required ones first), and no others when `closed`."""
    schema: Schema = {"type": "object", "properties": {**required, **(optional or {})}, "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
TIME: Schema = {"type": "string", "format": "date-time"}
PROMPT: Schema = {"type": "string", "pattern": r"\S", "description": "not only spaces"}
URL: Schema = {"type": "string", "format": "uri", "pattern": "^https?://"}
# A first or last frame: a URL the provider fetches, an uploaded frame (`POST /api/frames`), or a data: URL (APIMart).
FRAME: Schema = {
    "anyOf": [URL, {"type": "string", "pattern": "^frame:[0-9a-f]{64}$"}, {"type": "string", "pattern": "^data:"}]
}
URLS = ("image_url", "end_image_url")  # checked as http(s) URLs before the provider sees them
REF_JOB: Schema = {"$ref": JOB}


def query_parameters() -> list[Schema]:
    """`GET /api/jobs`'s query, one entry per name `JobQuery.parse` reads (an empty value means no filter)."""
    text = {"type": "string", "maxLength": JobQuery.MAX_TEXT}
    schemas: dict[str, Schema] = {
        "status": {"type": "string", "enum": [status.value for status in JobStatus]},
        "limit": {"type": "integer", "minimum": 1, "maximum": JobQuery.MAX_LIMIT, "default": JobQuery.limit},
        "cursor": {"type": "string", "description": "`next_cursor` of the previous page, unchanged"},
        "provider": text,
        "action": text,
        "rule": text,
        "root": {**text, "description": "the id of a chain's first job"},
        "q": {**text, "description": "a job id, an id prefix or a provider's job id"},
    }
    return [{"name": name, "in": "query", "required": False, "schema": schemas[name]} for name in JobQuery.PARAMETERS]


def job_request() -> Schema:
    """The body of `POST /api/jobs`: one shape per action, as receiver/jobrequests.py reads them. A field sent as
    null counts as left out."""
    providers = list(PROVIDERS)
    kinds = {name: {"type": JSON_TYPES[kind]} for name, kind in TYPES.items() if isinstance(kind, type)}
    field = {name: nullable(FRAME if name in URLS else kinds[name]) for name in TYPES}
    parent: Schema = {"type": "string", "minLength": 1, "description": "the parent job's id, or a unique prefix of it"}
    shapes: list[Schema] = []
    for action, fields in FRESH.items():
        named: dict[str, Schema] = {
            "action": {"const": action},
            "provider": {"enum": providers, "default": DEFAULT_PROVIDER},
        }
        required: dict[str, Schema] = {} if action == "generate" else {"action": named.pop("action")}
        if action == "imagine":
            required["prompt"] = PROMPT
        shape = obj(required, named | {name: field[name] for name in sorted(fields) if name not in required})
        if action == "generate":  # a prompt and a first frame, or the task_id of an earlier generation to reuse
            shape["anyOf"] = [
                {"required": ["prompt", "image_url"], "properties": {"prompt": PROMPT, "image_url": FRAME}},
                {"required": ["task_id"], "properties": {"task_id": STRING}},
            ]
        shapes.append(shape)
    for action, fields in FOLLOW_UP.items():
        required = {"action": {"const": action}, "parent_id": parent}
        if action == "extend":
            required["index"] = {"type": "integer", "minimum": 0}
        optional = {"provider": {"enum": providers}} | {name: field[name] for name in sorted(fields - {"index"})}
        shapes.append(obj(required, optional))
    # Any other name is a component the parent's result lists (`actions`: upsample1, vary_strong1, ...).
    component: Schema = {"type": "string", "minLength": 1, "not": {"enum": [*FRESH, *FOLLOW_UP]}}
    shapes.append(obj({"action": component, "parent_id": parent}, {"provider": {"enum": providers}}))
    return {"oneOf": shapes}


def components() -> Schema:
    video = obj({
        "index": INTEGER, "url": STRING, "status": {"enum": [status.value for status in VideoStatus]},
        "key": nullable(STRING), "media_url": nullable(STRING), "poster_url": nullable(STRING),
        "sha256": nullable(STRING), "bytes": nullable(INTEGER), "error": nullable(STRING),
    })  # fmt: skip
    result = obj({
        "seed": nullable(STRING), "prompts": nullable({"type": "array", "items": STRING}),
        "actions": nullable({"type": "array", "items": STRING}), "cover_url": nullable(STRING),
    })  # fmt: skip
    job = obj({
        "id": STRING, "provider": STRING, "action": STRING, "status": {"enum": [status.value for status in JobStatus]},
        "provider_job_id": nullable(STRING), "parent_id": nullable(STRING), "root_id": STRING, "depth": INTEGER,
        "rule": nullable(STRING), "prompt": nullable(STRING), "params": {"type": "object"},
        "progress": nullable(INTEGER), "error": nullable(STRING), "attempts": INTEGER, "created_at": TIME,
        "updated_at": TIME, "videos": {"type": "array", "items": video},
        "notes": {"type": "array", "items": obj({"rule": nullable(STRING), "message": STRING, "at": TIME})},
        "result": result,
        "cost": nullable({"type": "object", "additionalProperties": NUMBER, "description": "amount per unit"}),
    })  # fmt: skip
    chain_node = obj({
        "id": STRING, "action": STRING, "status": {"enum": [status.value for status in JobStatus]}, "depth": INTEGER,
        "created_at": TIME, "pending_events": INTEGER,
        "children": {"type": "array", "items": {"$ref": "#/components/schemas/ChainNode"}},
    })  # fmt: skip
    provider = obj({
        "provider": STRING, "in_flight": INTEGER, "limit": nullable(INTEGER), "queued": INTEGER, "overdue": INTEGER,
        "lost_today": INTEGER, "succeeded_today": INTEGER, "failed_today": INTEGER, "downloads_pending": INTEGER,
        "downloads_failed": INTEGER, "last_callback_at": nullable(TIME),
        "last_callback_seconds_ago": nullable(NUMBER),
        "spent_today": {"type": "object", "additionalProperties": NUMBER, "description": "amount per unit, UTC day"},
    })  # fmt: skip
    spend = obj({"day": STRING, "provider": STRING, "unit": STRING, "amount": NUMBER, "jobs": INTEGER})
    public_url = obj({"url": nullable(STRING), "from": STRING, "waiting": nullable(STRING)})
    overview = obj({
        "paused": nullable(STRING), "notifications_pending": INTEGER, "followups_queued": INTEGER,
        "providers": {"type": "array", "items": provider},
        "spend": {"type": "array", "items": spend, "description": "per UTC day, provider and unit, newest first"},
        "public_url": public_url,
    })  # fmt: skip
    return {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": obj({"error": STRING, "detail": STRING}),
            "Job": job,
            "JobRequest": job_request(),
            "ChainNode": chain_node,
            "Overview": overview,
            # Each kind carries its own fields (receiver/views.py timeline_json); `at` and `kind` are always there.
            "TimelineItem": obj({"at": TIME, "kind": {"enum": list(TIMELINE_KINDS)}}, closed=False),
        },
    }


def answer(status: int, schema: Schema, description: str, *errors: int) -> Schema:
    """An operation's responses: its success, and an `{"error","detail"}` for each of `errors` (401 always)."""
    responses = {str(status): {"description": description, "content": {"application/json": {"schema": schema}}}}
    for code in sorted({401, *errors}):
        responses[str(code)] = {"description": WHY[code], "content": {"application/json": {"schema": {"$ref": ERROR}}}}
    return {"responses": responses}


def body(schema: Schema, *, required: bool = True) -> Schema:
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def paths() -> dict[str, dict[str, Schema]]:
    job_id = {
        "name": "job_id", "in": "path", "required": True,
        "description": f"a job id ({ID_LENGTH} hex characters) or a unique prefix of at least {MIN_PREFIX}",
        "schema": {"type": "string", "minLength": 1},
    }  # fmt: skip
    on_job = {"parameters": [job_id]}
    page = obj({"jobs": {"type": "array", "items": REF_JOB}, "next_cursor": nullable(STRING)})
    timeline = obj({
        "job": REF_JOB, "timeline": {"type": "array", "items": {"$ref": "#/components/schemas/TimelineItem"}},
        "chain": {"type": "array", "items": {"$ref": "#/components/schemas/ChainNode"}},
    })  # fmt: skip
    overview = {"$ref": "#/components/schemas/Overview"}
    frame = obj({"frame": STRING, "sha256": STRING, "bytes": INTEGER, "content_type": STRING})
    stored = answer(201, frame, "the frame, stored under its sha256", 400, 408, 413, 415)
    stored["responses"]["200"] = stored["responses"]["201"] | {"description": "the frame, already stored"}
    days = {"type": "number", "minimum": 0, "maximum": 36500}
    return {
        "/api/jobs": {
            "post": body({"$ref": "#/components/schemas/JobRequest"})
            | answer(201, REF_JOB, "the job, recorded as queued", 400, 404, 408, 409, 413),
            "get": {"parameters": query_parameters()} | answer(200, page, "jobs, newest first", 400),
        },
        "/api/jobs/{job_id}": {"get": on_job | answer(200, REF_JOB, "the job", 400, 404, 409)},
        "/api/jobs/{job_id}/timeline": {
            "get": on_job | answer(200, timeline, "the job, what happened to it, and its chain", 400, 404, 409)
        },
        "/api/jobs/{job_id}/cancel": {
            "post": on_job | answer(200, obj({"cancelled": STRING}), "the queued job is failed", 400, 404, 409)
        },
        "/api/jobs/{job_id}/retry": {
            "post": on_job | answer(200, obj({"retried": INTEGER}), "failed downloads are tried again", 400, 404, 409)
        },
        "/api/overview": {"get": answer(200, overview, "per provider counts and the kill switch", 400)},
        "/api/status": {"get": answer(200, overview, "the kill switch and per provider counts", 400)},
        "/api/reconcile": {
            "post": answer(200, obj({"looked_up": INTEGER, "settled": INTEGER, "lost": INTEGER}), "looked up", 400)
        },
        "/api/prune": {
            "post": body(obj({"callbacks_older_than_days": days}, closed=False))
            | answer(200, obj({"pruned": INTEGER}), "callback bodies dropped", 400, 408, 413)
        },
        "/api/pause": {
            "post": body(obj({}, {"reason": nullable(STRING)}, closed=False), required=False)
            | answer(200, obj({"paused": STRING}), "the kill switch is on, for this reason", 400, 408, 413)
        },
        "/api/resume": {"post": answer(200, obj({"paused": {"type": "null"}}), "the kill switch is off", 400)},
        "/api/login-link": {
            "post": answer(200, obj({"url": STRING, "expires_in": INTEGER}), "a one-time dashboard sign-in link", 400)
        },
        "/api/frames": {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {kind: {"schema": {"type": "string", "format": "binary"}} for kind in IMAGE_TYPES},
                }
            }
            | stored
        },
        "/api/openapi.json": {"get": answer(200, {"type": "object"}, "this document", 400)},
    }


def document() -> dict[str, Any]:
    """The OpenAPI document, built anew on each call (well under a millisecond), so no caller shares one to change."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "reelhook", "version": _version()},
        "security": [{"bearer": []}],
        "paths": paths(),
        "components": components(),
    }


@api.no_query
async def openapi_json(request: Request) -> Response:
    """`GET /api/openapi.json`: this document, behind the token like the rest of `/api/*`."""
    if not api.authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    return TextSafeJSONResponse(document())


def _version() -> str:
    try:
        return metadata.version("reelhook")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
