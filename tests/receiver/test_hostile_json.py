"""Hostile JSON on every route family: each is a 4xx naming the problem, renders as JSON, and changes nothing.

Bodies nested 100,000 deep, 5,000-digit integers, `1e400`, NaN and lone surrogates used to answer 500 (a
RecursionError, the int-digit ValueError, an error body that could not itself be encoded). A lone surrogate in a
callback is the exception: a provider cannot be told to fix it, so the callback is stored as received and applied
with U+FFFD in its place.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from storage import JobStatus
from tests.receiver.conftest import AUTH, Harness, ttapi_callback

pytestmark = pytest.mark.anyio

GENERATE = {"provider": "ttapi", "action": "generate", "prompt": "a cat", "image_url": "https://img.example/a.png"}
DEEP = "[" * 100_000 + "]" * 100_000  # callbacks may be 1 MiB
DEEP_API = "[" * 20_000 + "]" * 20_000  # API bodies 64 KiB; json.loads gave up past ~1,000 levels
HUGE = "9" * 5000


def _json(template: dict[str, Any], key: str, raw: str | bytes) -> bytes:
    """`template` as JSON with `key`'s value replaced by the raw JSON text `raw` (which json.dumps cannot write)."""
    raw = raw.encode() if isinstance(raw, str) else raw
    return json.dumps(template | {key: "@@"}).encode().replace(b'"@@"', raw)


def assert_refused(response: httpx.Response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    body = json.loads(response.content)  # the error itself renders as JSON
    assert set(body) == {"error", "detail"}, body
    assert needle in body["detail"], body


# /api/* -------------------------------------------------------------------------------------------------------

API_BODIES = {
    "deep": (_json(GENERATE, "prompt", DEEP_API), "the body nests deeper than 64 levels"),
    "huge-int": (_json(GENERATE, "batch_size", HUGE), "batch_size: an integer of 5000 digits"),
    "overflow": (_json(GENERATE, "batch_size", "1e400"), "batch_size: 1e400 is not a finite number"),
    "nan": (_json(GENERATE, "batch_size", "NaN"), "batch_size: NaN is not a number JSON allows"),
    "surrogate-prompt": (_json(GENERATE, "prompt", '"sunset \\ud83d"'), "prompt: lone surrogate \\ud83d at position 7"),
    "surrogate-nested": (
        _json(GENERATE, "options", '{"style": ["x", "\\udc00"]}'),
        "options.style[1]: lone surrogate \\udc00",
    ),
    "surrogate-key": (_json(GENERATE, "\ud83d", '"x"'), 'the body: "\\ud83d": lone surrogate'),
    "surrogate-bytes": (_json(GENERATE, "prompt", b'"\xed\xa0\xbd"'), "prompt: lone surrogate \\ud83d at position 0"),
    "not-utf8": (_json(GENERATE, "prompt", b'"\xff"'), "the body is not UTF-8 (byte 0xff at"),
}


@pytest.mark.parametrize(("body", "needle"), API_BODIES.values(), ids=API_BODIES.keys())
async def test_hostile_job_bodies_are_400_and_record_nothing(harness: Harness, body: bytes, needle: str) -> None:
    before = harness.snapshot()
    response = await harness.client.post("/api/jobs", headers=AUTH, content=body)
    assert_refused(response, 400, needle)
    assert harness.snapshot() == before and harness.provider.requests == []
    listed = await harness.client.get("/api/jobs", headers=AUTH)
    assert listed.status_code == 200 and listed.json()["jobs"] == []


PAUSE_BODIES = {
    "deep": (_json({}, "reason", DEEP_API), "nests deeper than 64 levels"),
    "deep-object": (b'{"reason": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_001, "nests deeper than 64 levels"),
    "huge-int": (_json({}, "reason", HUGE), "reason: an integer of 5000 digits"),
    "surrogate": (_json({}, "reason", '"\\udead"'), "reason: lone surrogate \\udead at position 0"),
}


@pytest.mark.parametrize(("body", "needle"), PAUSE_BODIES.values(), ids=PAUSE_BODIES.keys())
async def test_hostile_pause_bodies_are_400_and_do_not_pause(harness: Harness, body: bytes, needle: str) -> None:
    before = harness.snapshot()
    response = await harness.client.post("/api/pause", headers=AUTH, content=body)
    assert_refused(response, 400, needle)
    assert harness.snapshot() == before
    assert (await harness.client.get("/api/status", headers=AUTH)).json()["paused"] is None


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


QUERIES = {
    "cursor-overflow": ({"cursor": _cursor('[1e400, "x"]')}, "cursor: [0]: 1e400 is not a finite number"),
    "cursor-huge-int": ({"cursor": _cursor(f'[{HUGE}, "x"]')}, "cursor: [0]: an integer of 5000 digits"),
    "cursor-nan": ({"cursor": _cursor('[NaN, "x"]')}, "cursor: [0]: NaN is not a number"),
    "cursor-deep": ({"cursor": _cursor(DEEP_API)}, "cursor nests deeper than 64 levels"),
    "cursor-surrogate": ({"cursor": _cursor('[1, "\\ud83d"]')}, "cursor: [1]: lone surrogate"),
    "cursor-shape": ({"cursor": _cursor('{"a": 1}')}, "cursor must be a next_cursor"),
    "cursor-not-base64": ({"cursor": "%ED%A0%BD"}, "cursor must be a next_cursor"),
    "limit-text": ({"limit": "ten"}, "limit must be a whole number from 1 to 500, got 'ten'"),
    "limit-huge": ({"limit": HUGE}, "limit must be a whole number from 1 to 500"),
    "limit-zero": ({"limit": "0"}, "limit must be a whole number from 1 to 500, got '0'"),
    "limit-float": ({"limit": "1e400"}, "limit must be a whole number from 1 to 500, got '1e400'"),
    "status": ({"status": "%ED%A0%BD"}, "status must be one of queued"),
}


@pytest.mark.parametrize(("params", "needle"), QUERIES.values(), ids=QUERIES.keys())
async def test_hostile_list_queries_are_400(harness: Harness, params: dict[str, str], needle: str) -> None:
    await harness.submitted_job()
    before = harness.snapshot()
    query = "&".join(f"{key}={value}" for key, value in params.items())  # as sent: %ED%A0%BD stays percent-encoded
    response = await harness.client.get(f"/api/jobs?{query}", headers=AUTH)
    assert_refused(response, 400, needle)
    assert harness.snapshot() == before


async def test_a_percent_encoded_surrogate_in_a_query_is_400(harness: Harness) -> None:
    response = await harness.client.get("/api/jobs?cursor=%ED%A0%BD&limit=%ED%A0%BD", headers=AUTH)
    assert_refused(response, 400, "limit must be a whole number from 1 to 500")


# /hooks/* -----------------------------------------------------------------------------------------------------

CALLBACK = json.loads(ttapi_callback("tt-1", status="ON_QUEUE"))
HOOK_BODIES = {
    "deep": (_json(CALLBACK, "data", DEEP), "ttapi callback nests deeper than 64 levels"),
    "huge-int": (
        _json(CALLBACK, "data", f'{{"progress": {HUGE}}}'),
        "ttapi callback: data.progress: an integer of 5000 digits",
    ),
    "overflow": (_json(CALLBACK, "data", '{"progress": 1e400}'), "data.progress: 1e400 is not a finite number"),
    "nan": (_json(CALLBACK, "data", '{"progress": NaN}'), "data.progress: NaN is not a number JSON allows"),
}


@pytest.mark.parametrize(("body", "needle"), HOOK_BODIES.values(), ids=HOOK_BODIES.keys())
async def test_hostile_callbacks_are_400_and_change_nothing(harness: Harness, body: bytes, needle: str) -> None:
    job_id = await harness.submitted_job("tt-1")
    before = harness.snapshot()
    response = await harness.client.post(harness.hook_path(job_id), content=body)
    assert_refused(response, 400, needle)
    assert harness.snapshot() == before


async def test_a_failed_callback_with_a_lone_surrogate_is_stored_as_sent_and_applied(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    body = _json(json.loads(ttapi_callback("tt-1", status="FAILED")), "message", '"boom \\ud83d here"')
    for _ in range(2):  # the re-delivery is a duplicate, not a 500
        response = await harness.client.post(harness.hook_path(job_id), content=body)
        assert response.status_code == 200, response.text
    job = await harness.store.get_job(job_id)
    assert job is not None and job.status is JobStatus.FAILED and job.error == "boom \ufffd here"
    [row] = harness.snapshot()["callbacks"]
    assert row[5] == body and row[10] == 2  # the raw bytes, as received; the re-delivery counted
    listed = await harness.client.get("/api/jobs", headers=AUTH)
    assert listed.status_code == 200 and listed.json()["jobs"][0]["error"] == "boom \ufffd here"


async def test_a_callback_with_a_surrogate_job_id_is_refused_and_changes_nothing(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    before = harness.snapshot()
    body = _json(CALLBACK, "jobId", '"tt-1\\ud83d"')
    response = await harness.client.post(harness.hook_path(job_id), content=body)
    assert response.status_code == 403 and set(json.loads(response.content)) == {"error", "detail"}
    assert harness.snapshot() == before


async def asgi_request(harness: Harness, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
    """Straight to the ASGI app: a server may hand it a path no HTTP client would write (a lone surrogate)."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode("utf-8", "surrogatepass"), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-length", str(len(body)).encode()),
                    (b"authorization", AUTH["Authorization"].encode())],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await harness.app(scope, receive, send)
    status = next(message["status"] for message in sent if message["type"] == "http.response.start")
    content = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return status, json.loads(content)


@pytest.mark.parametrize("tail", ["\ud83d", "", "x\udc00y"])
async def test_a_lone_surrogate_in_a_hook_token_is_403(harness: Harness, tail: str) -> None:
    job_id = await harness.submitted_job("tt-1")
    before = harness.snapshot()
    token = harness.hook_path(job_id).rsplit("/", 1)[1]
    status, body = await asgi_request(harness, "POST", f"/hooks/ttapi/{token[:-2]}{tail}", ttapi_callback("tt-1"))
    assert status == 403 and set(body) == {"error", "detail"}
    percent = await harness.client.post(f"/hooks/ttapi/{token}%ED%A0%BD", content=ttapi_callback("tt-1"))
    assert percent.status_code == 403 and set(percent.json()) == {"error", "detail"}
    assert harness.snapshot() == before


async def test_a_lone_surrogate_in_a_job_id_path_is_404(harness: Harness) -> None:
    status, body = await asgi_request(harness, "GET", "/api/jobs/x\ud83d")
    assert (status, body) == (404, {"error": "not_found", "detail": "no job x\ud83d"})
