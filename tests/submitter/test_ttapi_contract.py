"""Seed 000's exact example JSON, pushed through the TTAPI provider module."""

from __future__ import annotations

import json
from typing import Any

import pytest

from storage import Job, JobStatus
from submitter.providers import PROVIDERS, InvalidParams, MalformedCallback, Rejection, ttapi
from tests.submitter.support import make_job, refusal

KEY = "tt-key-123"
HOOK = "https://webhook-test.com/1cb411db3bc4bfa7729c7df3ca2c1a5e"

# Seed 000, "Generate Video", Example Response.
SEED_SUBMIT_RESPONSE = b"""{
    "status": "SUCCESS",
    "message": "",
    "data": {
        "jobId": "afa774a3-1aee-5aba-4510-14818d6875e4"
     }
}"""

# Seed 000, "Generate Video", Example Request: the body.
SEED_SUBMIT_REQUEST = {
    "prompt": "hyperrealistic album cover: Black sacral Ocean. Sunken prayer canoe. Ghost Canoe Horizon",
    "imageUrl": "https://unlimbot.hb.ru-msk.vkcloud-storage.ru/AQADJvYxG8ZHiEt-.jpeg",
    "mode": "fast",
    "manual": "high",
    "hookUrl": HOOK,
}

# Seed 000, "Async callback & fetch json", verbatim.
SEED_CALLBACK = b"""{
    "status": "SUCCESS",
    "message": "success",
    "jobId": "943583cb-08f4-4077-ad1e-f1bfc6c1191a",
    "data": {
        "action": "generate",
        "jobId": "943583cb-08f4-4077-ad1e-f1bfc6c1191a",
        "progress": "100",
        "prompt": "hyperrealistic album cover: Black sacral Ocean. Sunken prayer canoe. Ghost Canoe Horizon",
        "quota": "30",
        "videos": [
            "https://cdn.midjourney.com/video/780b1227-227a-418c-998e-3eb90eb4824a/0.mp4",
            "https://cdn.midjourney.com/video/780b1227-227a-418c-998e-3eb90eb4824a/1.mp4",
            "https://cdn.midjourney.com/video/780b1227-227a-418c-998e-3eb90eb4824a/2.mp4",
            "https://cdn.midjourney.com/video/780b1227-227a-418c-998e-3eb90eb4824a/3.mp4"
        ],
        "hookUrl": "https://webhook-test.com/1cb411db3bc4bfa7729c7df3ca2c1a5e"
    }
}"""

SEED_VIDEOS = tuple(f"https://cdn.midjourney.com/video/780b1227-227a-418c-998e-3eb90eb4824a/{i}.mp4" for i in range(4))


def callback(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def test_registry_names_ttapi_with_the_seeds_limit() -> None:
    assert PROVIDERS["ttapi"] is ttapi.PROVIDER
    assert ttapi.PROVIDER.max_in_flight == 10  # "The max job in progressing is 10"
    # The image API (seed 001) is the same provider: its actions join the video ones (test_ttapi_image_contract.py).
    assert {"generate", "extend"} < ttapi.PROVIDER.actions


def test_seed_submit_response_names_the_job() -> None:
    assert ttapi.parse_submit_response(200, SEED_SUBMIT_RESPONSE) == "afa774a3-1aee-5aba-4510-14818d6875e4"


def test_newer_docs_job_id_shape_names_the_job() -> None:
    body = b'{"status":"SUCCESS","message":"success","data":{"job_id":"5c1d0c52-0b0e-4f7e-9d5c-3d2b1f0a9e11"}}'
    assert ttapi.parse_submit_response(200, body) == "5c1d0c52-0b0e-4f7e-9d5c-3d2b1f0a9e11"


def test_seed_callback_is_a_success_with_four_videos_in_order() -> None:
    result = ttapi.parse_callback(SEED_CALLBACK, {"content-type": "application/json"})
    assert result.status is JobStatus.SUCCEEDED
    assert result.provider_job_id == "943583cb-08f4-4077-ad1e-f1bfc6c1191a"
    assert result.media_urls == SEED_VIDEOS
    assert result.progress == 100
    assert result.error is None
    assert result.result["action"] == "generate" and result.result["quota"] == "30"


def test_failed_callback_carries_the_providers_message() -> None:
    body = callback(
        {
            "status": "FAILED",
            "message": "prompt violation",
            "jobId": "943583cb-08f4-4077-ad1e-f1bfc6c1191a",
            "data": {"action": "generate", "jobId": "943583cb-08f4-4077-ad1e-f1bfc6c1191a", "progress": "0"},
        }
    )
    result = ttapi.parse_callback(body, {})
    assert result.status is JobStatus.FAILED
    assert result.error == "prompt violation"
    assert result.provider_job_id == "943583cb-08f4-4077-ad1e-f1bfc6c1191a"
    assert result.media_urls == ()


@pytest.mark.parametrize("status", ["PENDING_QUEUE", "ON_QUEUE", "RUNNING"])
def test_non_terminal_callback_is_running(status: str) -> None:
    payload = json.loads(SEED_CALLBACK)
    payload["status"], payload["data"]["progress"], payload["data"]["videos"] = status, "50", []
    result = ttapi.parse_callback(callback(payload), {})
    assert result.status is JobStatus.RUNNING
    assert result.progress == 50
    assert result.media_urls == ()


@pytest.mark.parametrize(
    ("progress", "percent"),
    [("45.5", 45), ("99.99", 99), ("7.0", 7), ("45.5%", 45), (45.5, 45), ("0.4", 0), ("100.0", 100), ("12", 12)],
)
def test_progress_with_a_decimal_is_a_whole_percent_rounded_down(progress: object, percent: int) -> None:
    # TTAPI reports progress as a string ("100" in the seed); mid-job it can carry a decimal ("45.5").
    payload = json.loads(SEED_CALLBACK)
    payload["status"], payload["data"]["progress"], payload["data"]["videos"] = "ON_QUEUE", progress, []
    assert ttapi.parse_callback(callback(payload), {}).progress == percent


@pytest.mark.parametrize("progress", ["", "soon", None, "nan", "inf", [50]])
def test_progress_that_is_no_number_is_unknown(progress: object) -> None:
    payload = json.loads(SEED_CALLBACK)
    payload["status"], payload["data"]["progress"], payload["data"]["videos"] = "ON_QUEUE", progress, []
    result = ttapi.parse_callback(callback(payload), {})
    assert result.status is JobStatus.RUNNING and result.progress is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"status": "SUCCESS", "jobId": ',  # broken JSON
        b"\xff\xfe not utf-8",
        b'["SUCCESS"]',  # not an object
        b'"SUCCESS"',
        SEED_CALLBACK.replace(b'"status": "SUCCESS",', b""),  # no status
    ],
    ids=["broken-json", "not-utf8", "array", "string", "no-status"],
)
def test_unreadable_callbacks_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedCallback):
        ttapi.parse_callback(body, {})


def test_generate_request_is_the_seeds_example_body() -> None:
    job = make_job(
        "ttapi",
        "generate",
        {"prompt": SEED_SUBMIT_REQUEST["prompt"], "image_url": SEED_SUBMIT_REQUEST["imageUrl"], "motion": "high"},
    )
    request = ttapi.build_request(job, None, KEY, HOOK)
    assert request.method == "POST"
    assert request.path == "/midjourney/video/submit"
    assert dict(request.headers) == {"TT-API-KEY": KEY}
    assert request.json == SEED_SUBMIT_REQUEST


def test_generate_request_maps_the_newer_docs_options() -> None:
    params = {"prompt": "p", "image_url": "https://x/a.png", "end_image_url": "https://x/b.png"}
    job = make_job("ttapi", "generate", params | {"resolution": "720p", "batch_size": 2})
    body = ttapi.build_request(job, None, KEY, HOOK).json
    assert body is not None
    assert body["endingUrl"] == "https://x/b.png" and body["resolution"] == "hd" and body["bs"] == 2
    assert "manual" not in body  # TTAPI's own default (low) applies


def test_extend_request_names_the_parents_ttapi_job_and_index() -> None:
    params = {"prompt": "p", "image_url": "u"}
    parent = make_job("ttapi", "generate", params, provider_job_id="9fd71109-f508-4f0e-a26c-d776d6b38b58")
    job = make_job("ttapi", "extend", {"index": 0, "motion": "low"})
    request = ttapi.build_request(job, parent, KEY, HOOK)
    assert request.method == "POST"
    assert request.path == "/midjourney/video/extend"
    assert dict(request.headers) == {"TT-API-KEY": KEY}
    assert request.json == {
        "jobId": "9fd71109-f508-4f0e-a26c-d776d6b38b58",
        "index": 0,
        "hookUrl": HOOK,
        "manual": "low",
    }


@pytest.mark.parametrize("parent", [None, make_job("ttapi", "generate", {"prompt": "p", "image_url": "u"})])
def test_extend_without_a_ttapi_parent_job_is_invalid(parent: Job | None) -> None:
    with pytest.raises(InvalidParams, match="parent"):
        ttapi.build_request(make_job("ttapi", "extend", {"index": 1}), parent, KEY, HOOK)


@pytest.mark.parametrize(
    ("status_code", "body", "message"),
    [
        (401, b'{"status":"FAILED","message":"Wrong TT-API-KEY or email is not activated."}', "Wrong TT-API-KEY"),
        (402, b'{"status":"FAILED","message":"Insufficient balance","data":null}', "Insufficient balance"),
        (400, b'{"status":"FAILED","message":"imageUrl is required","data":null}', "imageUrl is required"),
    ],
)
def test_refusals_are_fatal_with_the_providers_message(status_code: int, body: bytes, message: str) -> None:
    caught = refusal(ttapi.parse_submit_response, status_code, body)
    assert caught.kind is Rejection.FATAL
    assert message in caught.message
    assert caught.status_code == status_code


@pytest.mark.parametrize("status_code", [429, 499, 500, 503])
def test_busy_provider_is_retried_and_a_broken_one_is_outcome_unknown(status_code: int) -> None:
    body = b'{"status":"FAILED","message":"Queue exhausted","data":null}'
    caught = refusal(ttapi.parse_submit_response, status_code, body)
    assert caught.kind is (Rejection.RETRY if status_code in (429, 499) else Rejection.UNKNOWN)
    assert caught.status_code == status_code
    assert "Queue exhausted" in caught.message


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway</html>", b"", b"[]", b'{"status":"SUCCESS","message":"","data":{}}'],
    ids=["html", "empty", "array", "no-job-id"],
)
def test_200_without_a_readable_job_id_is_unknown(body: bytes) -> None:
    caught = refusal(ttapi.parse_submit_response, 200, body)
    assert caught.kind is Rejection.UNKNOWN


def test_200_with_a_failed_body_is_fatal() -> None:
    caught = refusal(ttapi.parse_submit_response, 200, b'{"status":"FAILED","message":"prompt violation","data":null}')
    assert caught.kind is Rejection.FATAL
    assert "prompt violation" in caught.message


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("generate", {"prompt": "p", "image_url": "u"}),
        ("generate", {"prompt": "p", "image_url": "u", "motion": "high", "resolution": "hd", "batch_size": 4}),
        ("extend", {"index": 0}),
        ("extend", {"index": 3, "motion": "low"}),
    ],
)
def test_valid_params_pass(action: str, params: dict[str, Any]) -> None:
    ttapi.validate_params(action, params)


@pytest.mark.parametrize(
    ("action", "params", "names"),
    [
        ("Upscale!", {}, "generate, extend"),  # "upscale" is a valid component name since the image API
        ("generate", {"motion": "medium"}, "motion"),
        ("generate", {"resolution": "1080p"}, "resolution"),
        ("generate", {"batch_size": 3}, "batch_size"),
        ("extend", {}, "index"),
        ("extend", {"index": 4}, "index"),
        ("extend", {"index": -1}, "index"),
        ("extend", {"index": "0"}, "index"),
        ("extend", {"index": True}, "index"),
    ],
)
def test_invalid_params_name_the_field(action: str, params: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidParams, match=names):
        ttapi.validate_params(action, params)
