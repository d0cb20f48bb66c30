"""Seed 004's contract and APIMart's documented example JSON, pushed through the APIMart provider module."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from storage import JobStatus
from submitter.providers import InvalidParams, MalformedCallback, Rejection, apimart
from tests.submitter.support import make_job, refusal

KEY = "sk-apimart-123"
HOOK = "https://hooks.example.com/hooks/apimart/tok3n"
IMAGE = "https://cdn.example.com/frames/first.png"
TASK = "task_01KV7FXR8BEYS1BWHJCT3JMCJ5"

# providers.md §5.2: APIMart's documented answer to the video submit.
SEED_SUBMIT_RESPONSE = b'{"code":200,"data":[{"status":"submitted","task_id":"task_01KV52C0TEJSYZMCG0NCS4YWKK"}]}'

# APIMart "Task Completion Callback (Webhook)", success example, with `result.videos` as its note says for video.
DOC_CALLBACK = b"""{
  "id": "task_01KV7FXR8BEYS1BWHJCT3JMCJ5",
  "status": "completed",
  "progress": 100,
  "created": 1781589029,
  "completed": 1781589058,
  "actual_time": 29,
  "cost": 0.006,
  "credits_cost": 0.06,
  "result": {
    "videos": [{ "url": ["https://upload.apimart.ai/f/video/0.mp4"], "expires_at": 1781675458 }]
  }
}"""

# The same webhook page, failure examples: the Chinese page's and the English page's `error`.
DOC_FAILED_CN = b"""{"id": "task_xxx", "status": "failed", "progress": 100, "created": 1781589029,
  "completed": 1781589050, "error": { "message": "prompt rejected by moderation", "code": "" }}"""
DOC_FAILED_EN = b"""{"id": "task_xxx", "status": "failed", "progress": 100, "created": 1781589029,
  "completed": 1781589050,
  "error": {"message": "prompt rejected by moderation", "type": "task_failed", "param": "", "code": "task_failed"}}"""

# Seed 004: "On SUCCESS it includes video_url (the first) plus video_urls (length === batch_size)", MJ-style query.
MJ_CALLBACK = {
    "id": "1761234567890123",
    "action": "VIDEO",
    "status": "SUCCESS",
    "progress": "100%",
    "prompt": "a lighthouse at dusk",
    "video_url": "https://cdn.example.com/v/0.mp4",
    "video_urls": ["https://cdn.example.com/v/0.mp4", "https://cdn.example.com/v/1.mp4"],
}

# The 401 envelope observed from APIMart without a key (providers.md §5.5).
OBSERVED_401 = (
    b'{"error":{"code":"","message":"invalid API key (request id: 20260919182056471923385yBRUUrTx)",'
    b'"param":"","type":"apimart_error"}}'
)


def envelope(code: str, message: str, kind: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "param": "", "type": kind}}).encode()


def test_provider_record_states_what_apimart_offers() -> None:
    provider = apimart.PROVIDER
    assert provider.name == "apimart" and provider.default_base_url == "https://api.apimart.ai"
    assert provider.actions == {"generate"}  # "extend-style values are not accepted"
    assert provider.callback_suffix == "/callback"
    assert provider.max_frame_bytes == 12 * 1024 * 1024
    assert provider.max_in_flight == 10
    assert provider.fetch_request is apimart.fetch_request
    assert provider.parse_fetch_response is apimart.parse_fetch_response


def test_documented_submit_answer_names_the_task() -> None:
    assert apimart.parse_submit_response(200, SEED_SUBMIT_RESPONSE) == "task_01KV52C0TEJSYZMCG0NCS4YWKK"


def test_first_frame_request_is_the_seeds_body() -> None:
    job = make_job("apimart", params={"prompt": "waves", "image_url": IMAGE})
    request = apimart.build_request(job, None, KEY, HOOK)
    assert (request.method, request.path) == ("POST", "/v1/midjourney/generations/video")
    assert dict(request.headers) == {"Authorization": f"Bearer {KEY}", "Idempotency-Key": job.id}
    assert request.json == {"prompt": "waves", "image_urls": [IMAGE], "video_type": "vid_1.1_i2v_480", "webhook": HOOK}


def test_animating_an_imagine_sends_task_id_and_index_and_may_omit_the_prompt() -> None:
    params = {"task_id": TASK, "index": 0, "options": {"animate_mode": "auto"}, "motion": "low", "batch_size": 4}
    body = apimart.build_request(make_job("apimart", params=params), None, KEY, HOOK).json
    assert body == {
        "task_id": TASK,
        "index": 0,
        "video_type": "vid_1.1_i2v_480",
        "motion": "low",
        "batch_size": 4,
        "animate_mode": "auto",
        "webhook": HOOK,
    }


@pytest.mark.parametrize(
    ("extra", "video_type"),
    [
        ({"resolution": "720p"}, "vid_1.1_i2v_720"),
        ({"resolution": "480p"}, "vid_1.1_i2v_480"),
        ({"end_image_url": "https://cdn.example.com/end.png"}, "vid_1.1_i2v_start_end_480"),
        ({"end_image_url": "https://cdn.example.com/end.png", "resolution": "720p"}, "vid_1.1_i2v_start_end_720"),
        ({"options": {"video_type": "vid_1.1_i2v_720"}}, "vid_1.1_i2v_720"),
    ],
)
def test_resolution_and_end_frame_pick_the_video_type(extra: dict[str, Any], video_type: str) -> None:
    job = make_job("apimart", params={"prompt": "p", "image_url": IMAGE} | extra)
    body = apimart.build_request(job, None, KEY, HOOK).json
    assert body is not None and body["video_type"] == video_type
    assert body.get("end_url") == extra.get("end_image_url")


def test_documented_callback_is_a_success_keeping_expiry_and_cost() -> None:
    result = apimart.parse_callback(DOC_CALLBACK, {"content-type": "application/json"})
    assert result.status is JobStatus.SUCCEEDED and result.provider_job_id == TASK
    assert result.media_urls == ("https://upload.apimart.ai/f/video/0.mp4",)
    assert result.progress == 100 and result.error is None
    assert result.result == {"cost": 0.006, "credits_cost": 0.06, "expires_at": 1781675458}


def test_wrapped_callback_reads_as_the_bare_one() -> None:
    wrapped = b'{"code":200,"data":' + DOC_CALLBACK + b"}"
    assert apimart.parse_callback(wrapped, {}) == apimart.parse_callback(DOC_CALLBACK, {})


def test_videos_in_order_with_the_earliest_expiry() -> None:
    payload = json.loads(DOC_CALLBACK)
    payload["result"]["videos"] = [
        {"url": ["https://v/0.mp4", "https://v/1.mp4"], "expires_at": 1781675999},
        {"url": "https://v/2.mp4", "expires_at": 1781675001},  # a single URL, not a list: read it anyway
    ]
    result = apimart.parse_callback(json.dumps(payload).encode(), {})
    assert result.media_urls == ("https://v/0.mp4", "https://v/1.mp4", "https://v/2.mp4")
    assert result.result["expires_at"] == 1781675001


def test_mj_style_success_reads_video_urls() -> None:
    result = apimart.parse_callback(json.dumps(MJ_CALLBACK).encode(), {})
    assert result.status is JobStatus.SUCCEEDED and result.provider_job_id == "1761234567890123"
    assert result.media_urls == ("https://cdn.example.com/v/0.mp4", "https://cdn.example.com/v/1.mp4")
    assert result.progress == 100 and "expires_at" not in result.result
    only_first = {key: value for key, value in MJ_CALLBACK.items() if key != "video_urls"}
    assert apimart.parse_callback(json.dumps(only_first).encode(), {}).media_urls == (MJ_CALLBACK["video_url"],)


def test_mj_style_failure_carries_fail_reason() -> None:
    body = json.dumps({"id": "17612", "status": "FAILURE", "progress": "0%", "fail_reason": "banned prompt"})
    result = apimart.parse_callback(body.encode(), {})
    assert result.status is JobStatus.FAILED and result.error == "banned prompt" and result.progress == 0


@pytest.mark.parametrize("body", [DOC_FAILED_CN, DOC_FAILED_EN], ids=["cn-page", "en-page"])
def test_failed_callback_carries_apimarts_message(body: bytes) -> None:
    result = apimart.parse_callback(body, {})
    assert result.status is JobStatus.FAILED and result.provider_job_id == "task_xxx"
    assert result.error == "prompt rejected by moderation" and result.media_urls == ()


def test_cancelled_and_empty_success_are_failures() -> None:
    cancelled = apimart.parse_callback(b'{"id":"task_1","status":"cancelled"}', {})
    assert cancelled.status is JobStatus.FAILED and cancelled.error == "apimart reported cancelled"
    empty = apimart.parse_callback(b'{"id":"task_1","status":"completed","result":{"videos":[]}}', {})
    assert empty.status is JobStatus.FAILED and "without a video" in (empty.error or "")


@pytest.mark.parametrize(
    "status",
    ["pending", "submitted", "processing", "in_progress", "NOT_START", "SUBMITTED", "IN_PROGRESS", "MODAL", "weird"],
)
def test_non_terminal_statuses_are_running(status: str) -> None:
    body = json.dumps({"id": TASK, "status": status, "progress": "40%", "video_urls": ["https://v/0.mp4"]})
    result = apimart.parse_callback(body.encode(), {})
    assert result.status is JobStatus.RUNNING and result.progress == 40 and result.media_urls == ()


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "task_1", "status": ',
        b"\xff\xfe",
        b'["completed"]',
        b'{"id": "task_1", "progress": 100}',
        b'{"code": 200, "data": {"id": "task_1"}}',
        b'{"id": "task_1", "status": "completed", "result": {"videos": [{"url": [7]}]}}',
    ],
    ids=["broken-json", "not-utf8", "array", "no-status", "wrapped-no-status", "url-not-text"],
)
def test_unreadable_callbacks_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedCallback):
        apimart.parse_callback(body, {})


@pytest.mark.parametrize(
    ("status_code", "body", "words"),
    [
        (401, OBSERVED_401, "invalid API key"),
        (400, envelope("invalid_request", "image_urls and task_id cannot be used together", "x"), "cannot be used"),
        (402, envelope("", "insufficient balance", "payment_required"), "insufficient balance"),
        (403, envelope("", "not your task", "permission_error"), "not your task"),
        (404, envelope("", "task not found", "not_found_error"), "task not found"),
        (500, envelope("", "build_request_failed: bad video_type", "server_error"), "build_request_failed"),
    ],
)
def test_refusals_are_fatal_with_apimarts_message(status_code: int, body: bytes, words: str) -> None:
    caught = refusal(apimart.parse_submit_response, status_code, body)
    assert caught.kind is Rejection.FATAL
    assert words in caught.message and caught.status_code == status_code


@pytest.mark.parametrize("status_code", [429, 500, 502, 503])
def test_busy_apimart_is_retried_and_a_broken_one_is_outcome_unknown(status_code: int) -> None:
    caught = refusal(apimart.parse_submit_response, status_code, envelope("", "upstream error", "server_error"))
    assert caught.kind is (Rejection.RETRY if status_code == 429 else Rejection.UNKNOWN)
    assert "upstream error" in caught.message


@pytest.mark.parametrize(
    ("code", "kind"),
    [(4, Rejection.FATAL), (24, Rejection.FATAL), (3, Rejection.FATAL), (9, Rejection.RETRY), (21, Rejection.UNKNOWN)],
)
def test_mj_codes_in_a_2xx_body_are_classified(code: int, kind: Rejection) -> None:
    body = json.dumps({"code": code, "description": f"mj code {code}", "result": None}).encode()
    caught = refusal(apimart.parse_submit_response, 200, body)
    assert caught.kind is kind and f"mj code {code}" in caught.message


@pytest.mark.parametrize(
    "body",
    [b"<html>502</html>", b"", b'{"code":200,"data":[]}', b'{"code":200,"data":[{"status":"submitted"}]}'],
    ids=["html", "empty", "no-data", "no-task-id"],
)
def test_2xx_without_a_task_id_is_unknown(body: bytes) -> None:
    caught = refusal(apimart.parse_submit_response, 200, body)
    assert caught.kind is Rejection.UNKNOWN


def test_fetch_asks_the_unified_task_endpoint_and_reads_its_answer() -> None:
    request = apimart.fetch_request(make_job("apimart", provider_job_id=TASK), KEY)
    assert (request.method, request.path) == ("GET", f"/v1/tasks/{TASK}")
    assert dict(request.headers) == {"Authorization": f"Bearer {KEY}"}
    result = apimart.parse_fetch_response(200, b'{"code":200,"data":' + DOC_CALLBACK + b"}")
    assert result.status is JobStatus.SUCCEEDED and result.media_urls == ("https://upload.apimart.ai/f/video/0.mp4",)
    caught = refusal(apimart.parse_fetch_response, 404, envelope("", "task not found", "not_found_error"))
    assert caught.kind is Rejection.FATAL and "task not found" in caught.message
    with pytest.raises(InvalidParams, match="no apimart id to fetch"):
        apimart.fetch_request(make_job("apimart"), KEY)


def data_url(size: int) -> str:
    return "data:image/png;base64," + base64.b64encode(b"\0" * size).decode()


@pytest.mark.parametrize(
    "params",
    [
        {"prompt": "p", "image_url": IMAGE},
        {"task_id": TASK, "index": 3},
        {"task_id": TASK, "index": 0, "animate_mode": "auto", "batch_size": 2, "resolution": "720p"},
        {
            "prompt": "p",
            "image_url": IMAGE,
            "end_image_url": IMAGE,
            "options": {"video_type": "vid_1.1_i2v_start_end_720"},
        },
        {"prompt": "p", "image_url": data_url(12 * 1024 * 1024), "motion": "high", "loop": False},
    ],
)
def test_valid_params_pass(params: dict[str, Any]) -> None:
    apimart.validate_params("generate", params)


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"prompt": "p"}, "give image_url .* or task_id"),
        ({"prompt": "p", "image_url": IMAGE, "task_id": TASK, "index": 0}, "not both"),
        ({"task_id": TASK}, "index must be 0-3"),
        ({"task_id": TASK, "index": 4}, "index must be 0-3"),
        ({"task_id": TASK, "index": True}, "index must be 0-3"),
        ({"prompt": "p", "image_url": IMAGE, "index": 1}, "index applies only with task_id"),
        ({"prompt": "p", "image_url": IMAGE, "animate_mode": "auto"}, "animate_mode 'auto' needs task_id"),
        ({"prompt": "p", "image_url": IMAGE, "options": {"animate_mode": "auto"}}, "animate_mode 'auto' needs"),
        ({"prompt": "p", "image_url": IMAGE, "animate_mode": "both"}, "animate_mode must be one of manual, auto"),
        ({"prompt": "p", "image_url": IMAGE, "batch_size": 3}, "batch_size must be one of 1, 2, 4"),
        ({"prompt": "p", "image_url": IMAGE, "resolution": "1080p"}, "resolution must be one of 480p, 720p"),
        ({"prompt": "p", "image_url": IMAGE, "options": {"video_type": "vid_1.1_extend_480"}}, "extend-style"),
        ({"prompt": "p", "image_url": IMAGE, "options": {"video_type": "vid_1.1_i2v_start_end_480"}}, "end_image_url"),
        (
            {"prompt": "p", "image_url": IMAGE, "resolution": "480p", "options": {"video_type": "vid_1.1_i2v_720"}},
            "contr",
        ),
        ({"prompt": "p", "image_url": IMAGE, "motion": "medium"}, "motion must be one of low, high"),
        ({"image_url": IMAGE}, "prompt is required unless task_id"),
        ({"prompt": "  ", "image_url": IMAGE}, "prompt is required unless task_id"),
        ({"prompt": "p", "image_url": data_url(12 * 1024 * 1024 + 1)}, "image_url: .*12 MiB"),
        ({"prompt": "p", "image_url": IMAGE, "end_image_url": data_url(13 * 1024 * 1024)}, "end_image_url: .*12 MiB"),
        ({"prompt": "p", "image_url": IMAGE, "options": {"aspect_ratio": "16:9"}}, "options may hold only"),
        ({"prompt": "p", "image_url": IMAGE, "loop": True}, "loop"),
    ],
)
def test_each_seed_rule_is_refused_naming_the_field(params: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidParams, match=words):
        apimart.validate_params("generate", params)


def test_extend_is_refused_and_never_built() -> None:
    with pytest.raises(InvalidParams, match="generate only"):
        apimart.validate_params("extend", {"index": 0})
    with pytest.raises(InvalidParams, match="generate only"):
        apimart.build_request(make_job("apimart", "extend", {"index": 0}), None, KEY, HOOK)
