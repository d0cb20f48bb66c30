"""Seed 002's exact example JSON (and the AceData docs' envelopes), pushed through the AceData provider module."""

from __future__ import annotations

import json
from typing import Any

import pytest

from storage import Job, JobStatus
from submitter.providers import InvalidParams, MalformedCallback, Rejection, acedata
from tests.submitter.support import make_job, refusal

KEY = "ace-token-123"
HOOK = "https://webhook.site/556e6971-b41f-4fa8-9151-6e91acd0399f"
HEADERS = {"authorization": f"Bearer {KEY}", "accept": "application/json", "content-type": "application/json"}

# Seed 002, "Basic Usage": the CURL body.
SEED_GENERATE = {
    "action": "generate",
    "prompt": "A cat sitting on a table",
    "image_url": "https://cdn.acedata.cloud/jgo1cw.jpg",
}

# Seed 002, "Extend Video Functionality": the Python payload.
SEED_EXTEND = {
    "action": "extend",
    "prompt": "A cat sitting on a table",
    "video_id": "1751816807896311",
    "video_index": 1,
}

SEED_TASK_ID = "b726a27a-f379-4d91-b569-cfe4b7b299ee"

# Seed 002, "Asynchronous Callback": the immediate answer.
SEED_SUBMIT_ANSWER = b"""{
  "task_id": "b726a27a-f379-4d91-b569-cfe4b7b299ee"
}"""

# Seed 002, "Asynchronous Callback": what reached the webhook, verbatim.
SEED_CALLBACK = b"""{
  "image_url": "https://storage.fonedis.cc/upload_1751818513244368774.png",
  "image_width": 560,
  "image_height": 688,
  "progress": 100,
  "video_id": "1751818512924054",
  "video_urls": [
    "https://storage.fonedis.cc//video/9ff3783e-bcf6-4f11-b738-09aa52318e6e/0_0.mp4",
    "https://storage.fonedis.cc//video/9ff3783e-bcf6-4f11-b738-09aa52318e6e/0_1.mp4",
    "https://storage.fonedis.cc//video/9ff3783e-bcf6-4f11-b738-09aa52318e6e/0_2.mp4",
    "https://storage.fonedis.cc//video/9ff3783e-bcf6-4f11-b738-09aa52318e6e/0_3.mp4"
  ],
  "task_id": "b726a27a-f379-4d91-b569-cfe4b7b299ee",
  "success": true
}"""
SEED_VIDEOS = tuple(
    f"https://storage.fonedis.cc//video/9ff3783e-bcf6-4f11-b738-09aa52318e6e/0_{i}.mp4" for i in range(4)
)

# Seed 002, "Extend Video Functionality": the blocking answer, verbatim.
SEED_EXTEND_RESULT = b"""{
    "image_url": "https://storage.fonedis.cc/upload_1751817471047011172.png",
    "image_width": 560,
    "image_height": 688,
    "progress": 100,
    "video_id": "1751818094559027",
    "video_urls": [
        "https://storage.fonedis.cc//video/a4bd2f43-b925-462d-9725-8aef98403133/0_0.mp4",
        "https://storage.fonedis.cc//video/a4bd2f43-b925-462d-9725-8aef98403133/0_1.mp4",
        "https://storage.fonedis.cc//video/a4bd2f43-b925-462d-9725-8aef98403133/0_2.mp4",
        "https://storage.fonedis.cc//video/a4bd2f43-b925-462d-9725-8aef98403133/0_3.mp4"
    ],
    "task_id": "da3bdcd0-9c21-4b40-877a-2c36e5f479e5",
    "success": true
}"""

# Seed 002, "Error Response Example", verbatim.
SEED_ERROR = b"""{
  "success": false,
  "error": {
    "code": "api_error",
    "message": "fetch failed"
  },
  "trace_id": "2cf86e86-22a4-46e1-ac2f-032c0f2a4e89"
}"""

# The concept docs' failure callback (async-tasks.mdx), with values filled in.
FAILED_CALLBACK = {
    "success": False,
    "task_id": "b726a27a-f379-4d91-b569-cfe4b7b299ee",
    "trace_id": "5b1c9a4e-3f2d-4c1e-9a7b-2d6e8f0a1b3c",
    "error": {"code": "forbidden", "message": "the prompt was refused by moderation"},
}


def finished(result: dict[str, Any], params: dict[str, Any] | None = None) -> Job:
    """A generate job AceData finished as the seed's task, with this result."""
    return make_job("acedata", params=params, status=JobStatus.SUCCEEDED, provider_job_id=SEED_TASK_ID, result=result)


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def test_provider_record() -> None:
    provider = acedata.PROVIDER
    assert (provider.name, provider.default_base_url) == ("acedata", "https://api.acedata.cloud")
    assert provider.max_in_flight == 10  # not documented: our choice
    assert provider.actions == {"generate", "extend"}
    assert provider.verify_signature is None and provider.callback_suffix == ""  # "no signature header"
    assert provider.fetch_request is acedata.fetch_request
    assert provider.parse_fetch_response is acedata.parse_fetch_response


@pytest.mark.parametrize(
    ("body", "task_id"),
    [
        (SEED_SUBMIT_ANSWER, "b726a27a-f379-4d91-b569-cfe4b7b299ee"),
        (
            b'{"success": true, "task_id": "27a1128f-14b5-440e-a82d-510c81e6fcd4"}',
            "27a1128f-14b5-440e-a82d-510c81e6fcd4",
        ),
        (b'{"data": {"task_id": "27a1128f-14b5-440e-a82d-510c81e6fcd4"}}', "27a1128f-14b5-440e-a82d-510c81e6fcd4"),
        (SEED_EXTEND_RESULT, "da3bdcd0-9c21-4b40-877a-2c36e5f479e5"),  # a blocking answer names its task too
    ],
    ids=["seed", "concept-docs", "sdk-data", "blocking-result"],
)
def test_submit_answers_name_the_task(body: bytes, task_id: str) -> None:
    assert acedata.parse_submit_response(200, body) == task_id


def test_seed_callback_is_a_success_keeping_video_id_and_cover() -> None:
    result = acedata.parse_callback(SEED_CALLBACK, {"content-type": "application/json"})
    assert result.status is JobStatus.SUCCEEDED
    assert result.provider_job_id == "b726a27a-f379-4d91-b569-cfe4b7b299ee"
    assert result.media_urls == SEED_VIDEOS
    assert result.progress == 100 and result.error is None
    assert result.result == {
        "video_id": "1751818512924054",
        "image_url": "https://storage.fonedis.cc/upload_1751818513244368774.png",
        "image_width": 560,
        "image_height": 688,
        "cover_url": "https://storage.fonedis.cc/upload_1751818513244368774.png",  # what the job JSON shows
    }


def test_seed_extend_result_reads_as_a_success_too() -> None:
    result = acedata.parse_callback(SEED_EXTEND_RESULT, {})
    assert result.status is JobStatus.SUCCEEDED and result.provider_job_id == "da3bdcd0-9c21-4b40-877a-2c36e5f479e5"
    assert result.result["video_id"] == "1751818094559027" and len(result.media_urls) == 4


def test_numeric_video_id_is_kept_as_a_string() -> None:
    payload = json.loads(SEED_CALLBACK) | {"video_id": 1751818512924054}
    assert acedata.parse_callback(encode(payload), {}).result["video_id"] == "1751818512924054"


def test_failed_callback_carries_code_and_message() -> None:
    result = acedata.parse_callback(encode(FAILED_CALLBACK), {})
    assert result.status is JobStatus.FAILED
    assert result.provider_job_id == "b726a27a-f379-4d91-b569-cfe4b7b299ee"
    assert result.error == "forbidden: the prompt was refused by moderation"
    assert result.media_urls == () and result.result == {}


def test_failed_callback_without_an_error_object_still_fails() -> None:
    result = acedata.parse_callback(b'{"success": false, "task_id": "t-1"}', {})
    assert result.status is JobStatus.FAILED and result.error == "acedata reported the task failed"


@pytest.mark.parametrize("success", [None, "true", 1])
def test_body_without_a_boolean_success_is_running(success: object) -> None:
    payload = {"task_id": "t-1", "progress": 40} | ({} if success is None else {"success": success})
    result = acedata.parse_callback(encode(payload), {})
    assert result.status is JobStatus.RUNNING and result.progress == 40 and result.media_urls == ()


@pytest.mark.parametrize(("progress", "percent"), [(45.5, 45), ("45.5", 45), ("60%", 60), ("x", None)])
def test_a_decimal_progress_is_a_whole_percent(progress: object, percent: int | None) -> None:
    result = acedata.parse_callback(encode({"task_id": "t-1", "progress": progress}), {})
    assert result.status is JobStatus.RUNNING and result.progress == percent


def test_success_without_videos_is_a_failure() -> None:
    payload = json.loads(SEED_CALLBACK) | {"video_urls": []}
    result = acedata.parse_callback(encode(payload), {})
    assert result.status is JobStatus.FAILED and "without any video" in (result.error or "")


@pytest.mark.parametrize(
    "body",
    [
        b'{"success": true, "task_id": ',
        b"\xff\xfe not utf-8",
        b'["success"]',
        encode(json.loads(SEED_CALLBACK) | {"video_urls": "https://x/0.mp4"}),
        encode(json.loads(SEED_CALLBACK) | {"video_urls": ["https://x/0.mp4", None]}),
    ],
    ids=["broken-json", "not-utf8", "array", "urls-not-a-list", "null-url"],
)
def test_unreadable_callbacks_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedCallback):
        acedata.parse_callback(body, {})


def test_generate_request_is_the_seeds_body_plus_mode_and_callback() -> None:
    params = {"prompt": SEED_GENERATE["prompt"], "image_url": SEED_GENERATE["image_url"]}
    request = acedata.build_request(make_job("acedata", params=params), None, KEY, HOOK)
    assert (request.method, request.path) == ("POST", "/midjourney/videos")
    assert dict(request.headers) == HEADERS
    assert request.json == SEED_GENERATE | {"mode": "fast", "callback_url": HOOK}


def test_generate_request_maps_every_option() -> None:
    params = {
        "prompt": "p",
        "image_url": "https://x/a.png",
        "end_image_url": "https://x/b.png",
        "resolution": "480p",
        "loop": False,
        "batch_size": 4,
        "options": {"mode": "turbo"},
    }
    body = acedata.build_request(make_job("acedata", params=params), None, KEY, HOOK).json
    assert body == {
        "action": "generate",
        "prompt": "p",
        "image_url": "https://x/a.png",
        "end_image_url": "https://x/b.png",
        "mode": "turbo",
        "resolution": "480p",
        "loop": False,
        "callback_url": HOOK,
    }


def test_extend_request_names_the_parents_video_id_not_its_task_id() -> None:
    parent = finished({"video_id": "1751816807896311"}, {"prompt": "p", "image_url": "u"})
    job = make_job("acedata", "extend", {"index": 1, "prompt": "A cat sitting on a table"})
    request = acedata.build_request(job, parent, KEY, HOOK)
    assert (request.method, request.path) == ("POST", "/midjourney/videos")
    assert dict(request.headers) == HEADERS
    assert request.json == SEED_EXTEND | {"mode": "fast", "callback_url": HOOK}


def test_extend_of_a_parsed_callback_uses_its_video_id_and_leaves_out_an_absent_prompt() -> None:
    parent = finished(acedata.parse_callback(SEED_CALLBACK, {}).result, {"prompt": "p", "image_url": "u"})
    body = acedata.build_request(make_job("acedata", "extend", {"index": 3}), parent, KEY, HOOK).json
    assert body == {
        "action": "extend",
        "video_id": "1751818512924054",
        "video_index": 3,
        "mode": "fast",
        "callback_url": HOOK,
    }


@pytest.mark.parametrize(
    "parent",
    [None, make_job("acedata", "generate", {"prompt": "p", "image_url": "u"}), finished({"video_id": ""})],
    ids=["no-parent", "no-result", "empty-video-id"],
)
def test_extend_without_a_parent_video_id_is_invalid(parent: Job | None) -> None:
    with pytest.raises(InvalidParams, match="video_id"):
        acedata.build_request(make_job("acedata", "extend", {"index": 0}), parent, KEY, HOOK)


@pytest.mark.parametrize(
    ("status_code", "code", "message"),
    [
        (400, "token_mismatched", "Bad request"),
        (400, "api_not_implemented", "Bad request"),
        (401, "invalid_token", "invalid or missing authorization token"),
        (403, "used_up", "your balance is used up"),
        (403, "forbidden", "prompt refused by moderation"),
    ],
)
def test_refusals_are_fatal_with_code_and_message(status_code: int, code: str, message: str) -> None:
    body = encode({"success": False, "error": {"code": code, "message": message}, "trace_id": "t"})
    caught = refusal(acedata.parse_submit_response, status_code, body)
    assert caught.kind is Rejection.FATAL and caught.status_code == status_code
    assert caught.message.startswith(f"acedata: {status_code} {code}: {message}")
    assert ("out of credit" in caught.message) is (code == "used_up")


@pytest.mark.parametrize(
    ("status_code", "body", "text"),
    [
        (500, SEED_ERROR, "acedata: 500 api_error: fetch failed"),
        (429, b'{"success":false,"error":{"code":"too_many_requests","message":"slow down"}}', "429 too_many_requests"),
        (504, b'{"error":{"code":"timeout","message":"upstream timed out"},"trace_id":"t"}', "504 timeout"),
        (502, b"<html>502 Bad Gateway</html>", "acedata: HTTP 502: <html>502 Bad Gateway</html>"),
    ],
)
def test_busy_provider_is_retried_and_a_broken_one_is_outcome_unknown(status_code: int, body: bytes, text: str) -> None:
    caught = refusal(acedata.parse_submit_response, status_code, body)
    assert caught.kind is (Rejection.RETRY if status_code == 429 else Rejection.UNKNOWN)
    assert caught.status_code == status_code
    assert text in caught.message


@pytest.mark.parametrize(
    "body",
    [b"<html>ok</html>", b"", b"[]", b"{}", b'{"success": true}'],
    ids=["html", "empty", "array", "empty-object", "no-task-id"],
)
def test_2xx_without_a_task_id_is_unknown(body: bytes) -> None:
    caught = refusal(acedata.parse_submit_response, 200, body)
    assert caught.kind is Rejection.UNKNOWN


def test_2xx_carrying_the_error_envelope_is_fatal() -> None:
    caught = refusal(acedata.parse_submit_response, 200, SEED_ERROR)
    assert caught.kind is Rejection.FATAL and "api_error: fetch failed" in caught.message


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("generate", {"prompt": "p", "image_url": "u"}),
        (
            "generate",
            {
                "prompt": "p",
                "image_url": "u",
                "end_image_url": "v",
                "resolution": "720p",
                "loop": True,
                "batch_size": 4,
            },
        ),
        ("generate", {"prompt": "p", "image_url": "u", "options": {"mode": "turbo"}}),
        ("extend", {"index": 3, "prompt": "keep going"}),
    ],
)
def test_valid_params_pass(action: str, params: dict[str, Any]) -> None:
    acedata.validate_params(action, params)


@pytest.mark.parametrize(
    ("action", "params", "names"),
    [
        ("upscale", {}, "generate and extend"),
        ("generate", {"image_url": "u"}, "prompt is required"),
        ("generate", {"prompt": "p"}, "image_url is required"),
        ("generate", {"prompt": "p", "image_url": "u", "end_image_url": 3}, "end_image_url"),
        ("generate", {"prompt": "p", "image_url": "u", "motion": "high"}, "motion"),
        ("generate", {"prompt": "p", "image_url": "u", "resolution": "1080p"}, "resolution"),
        ("generate", {"prompt": "p", "image_url": "u", "batch_size": 2}, "batch_size"),
        ("generate", {"prompt": "p", "image_url": "u", "loop": "yes"}, "loop"),
        ("generate", {"prompt": "p", "image_url": "u", "options": {"mode": "relax"}}, "options.mode"),
        ("generate", {"prompt": "p", "image_url": "u", "options": {"aspect_ratio": "16:9"}}, "options.aspect_ratio"),
        ("generate", {"prompt": "p", "image_url": "u", "options": "turbo"}, "options"),
        ("extend", {}, "index"),
        ("extend", {"index": 4}, "index"),
        ("extend", {"index": -1}, "index"),
        ("extend", {"index": True}, "index"),
        ("extend", {"index": 0, "prompt": 5}, "prompt"),
        ("extend", {"index": 0, "motion": "low"}, "motion"),
        ("extend", {"index": 0, "motion": "low", "prompt": "p"}, "motion"),
        ("extend", {"index": 0}, "extend needs a prompt"),  # seed 002: "you must fill in the prompt"
        ("extend", {"index": 0, "prompt": "  "}, "extend needs a prompt"),
    ],
)
def test_invalid_params_name_the_field(action: str, params: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidParams, match=names):
        acedata.validate_params(action, params)


# The fetch endpoint: the tasks guide's record shape, with the seed's video result as its response.
def task_record(**fields: Any) -> dict[str, Any]:
    return {
        "id": "b726a27a-f379-4d91-b569-cfe4b7b299ee",
        "created_at": 1751818450.12,
        "request": SEED_GENERATE | {"callback_url": HOOK},
        "type": "videos",
    } | fields


def test_fetch_request_is_a_retrieve() -> None:
    request = acedata.fetch_request(finished({"video_id": "1"}), KEY)
    assert (request.method, request.path) == ("POST", "/midjourney/tasks")
    assert dict(request.headers) == HEADERS
    assert request.json == {"action": "retrieve", "id": "b726a27a-f379-4d91-b569-cfe4b7b299ee"}
    with pytest.raises(InvalidParams, match="no acedata id to fetch"):
        acedata.fetch_request(make_job("acedata"), KEY)


def test_finished_task_reads_like_its_callback() -> None:
    record = task_record(response=json.loads(SEED_CALLBACK), finished_at=1751818513.5, duration=63.4)
    assert acedata.parse_fetch_response(200, encode(record)) == acedata.parse_callback(SEED_CALLBACK, {})


def test_failed_task_is_failed() -> None:
    record = task_record(response=FAILED_CALLBACK, finished_at=1751818513.5)
    result = acedata.parse_fetch_response(200, encode(record))
    assert result.status is JobStatus.FAILED and result.error == "forbidden: the prompt was refused by moderation"


@pytest.mark.parametrize(
    "record",
    [
        task_record(),
        task_record(response={}),
        task_record(response=None),
        task_record(response={"task_id": "b726a27a-f379-4d91-b569-cfe4b7b299ee", "progress": 30}),
        task_record(response={"success": False, "error": "temporary"}),  # a hiccup, not a verdict (SDK)
        task_record(response={"success": True, "progress": 30}),
    ],
    ids=["no-response", "empty", "null", "progress", "hiccup", "success-without-videos"],
)
def test_unfinished_task_is_running(record: dict[str, Any]) -> None:
    result = acedata.parse_fetch_response(200, encode(record))
    assert result.status is JobStatus.RUNNING
    assert result.provider_job_id == "b726a27a-f379-4d91-b569-cfe4b7b299ee"


def test_task_with_a_coded_error_is_failed_before_finished_at() -> None:
    record = task_record(response=FAILED_CALLBACK)
    assert acedata.parse_fetch_response(200, encode(record)).status is JobStatus.FAILED


def test_finished_task_with_videos_but_no_success_flag_succeeds() -> None:
    response = {k: v for k, v in json.loads(SEED_CALLBACK).items() if k != "success"}
    result = acedata.parse_fetch_response(200, encode(task_record(response=response, finished_at=1.0)))
    assert result.status is JobStatus.SUCCEEDED and result.media_urls == SEED_VIDEOS


def test_finished_task_without_a_result_failed() -> None:
    result = acedata.parse_fetch_response(200, encode(task_record(finished_at=1.0)))
    assert result.status is JobStatus.FAILED


@pytest.mark.parametrize(
    ("status_code", "kind"), [(404, Rejection.FATAL), (401, Rejection.FATAL), (429, Rejection.RETRY)]
)
def test_fetch_refusals_raise_provider_errors(status_code: int, kind: Rejection) -> None:
    body = encode({"success": False, "error": {"code": "not_found", "message": "task not found"}, "trace_id": "t"})
    caught = refusal(acedata.parse_fetch_response, status_code, body)
    assert caught.kind is kind and "task not found" in caught.message


def test_fetch_error_envelope_in_a_200_is_fatal() -> None:
    caught = refusal(acedata.parse_fetch_response, 200, SEED_ERROR)
    assert caught.kind is Rejection.FATAL and "fetch failed" in caught.message


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"created_at": 1.0}'], ids=["not-json", "array", "no-id"])
def test_unreadable_task_answer_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedCallback):
        acedata.parse_fetch_response(200, body)
