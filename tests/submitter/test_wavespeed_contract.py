"""Seed 003's exact example JSON (and providers.md §4's documented shapes), pushed through the WaveSpeed module."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest

from storage import JobStatus
from submitter.providers import BadSignature, InvalidParams, MalformedCallback, Rejection, wavespeed
from tests.submitter.support import make_job, refusal

KEY = "ws-key-123"
HOOK = "https://reelhook.example/hooks/wavespeed/job-1/tok?attempt=1&x=a b"
IMAGE = "https://d2g64w682n9w0w.cloudfront.net/media/images/1745492812795806468_P4jFBxup.jpg"
PROMPT = "a lighthouse at dusk, waves rolling in"
TASK = "b2b31f5b2ae4402ab5ddd77c3e1bde9d"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef01234567").decode()
NOW = 1758798328.0

# Seed 003, "Submit the task": the request body of the curl example (image and prompt are required on top).
SEED_SUBMIT_BODY = {
    "resolution": "480p",
    "aspect_ratio": "1:1",
    "quality": 1,
    "stylize": 0,
    "chaos": 0,
    "weird": 0,
    "version": "7",
    "niji": "close",
    "seed": -1,
    "enable_base64_output": False,
}

# Seed 003's response table as JSON (providers.md §4.3).
SEED_SUBMIT_RESPONSE = (
    b'{"code":200,"message":"success","data":{"id":"' + TASK.encode() + b'","model":"midjourney/image-to-video",'
    b'"outputs":[],"urls":{"get":"https://api.wavespeed.ai/api/v3/predictions/' + TASK.encode() + b'/result"},'
    b'"has_nsfw_contents":[],"status":"created","created_at":"2023-04-01T12:34:56.789Z","error":"",'
    b'"timings":{"inference":0}}}'
)

VIDEO = f"https://d1q70pf5vjeyhc.cloudfront.net/predictions/{TASK}/1.mp4"

# The webhook docs' body (docs-api/webhooks), for this model: the bare prediction object, not wrapped.
DOCS_CALLBACK = {
    "id": TASK,
    "model": "midjourney/image-to-video",
    "input": {"image": IMAGE, "prompt": PROMPT},
    "outputs": [VIDEO],
    "urls": {"get": f"https://api.wavespeed.ai/api/v3/predictions/{TASK}/result"},
    "has_nsfw_contents": [False],
    "status": "completed",
    "created_at": "2025-09-25T11:05:21.62Z",
    "error": "",
}

# The signed sample's shape (docs-api/verifying_webhook): no `input`, with `executionTime` and `timings`.
SIGNED_CALLBACK = {key: value for key, value in DOCS_CALLBACK.items() if key != "input"} | {
    "executionTime": 6710,
    "timings": {"inference": 6710},
}


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def signed_headers(
    body: bytes, *, secret: str = SECRET, at: float = NOW, webhook_id: str = "45b392b22c3b449fa935bd4dc"
):
    """Headers as WaveSpeed's own Python sample signs: the secret without `whsec_`, as text, and a hex digest."""
    timestamp = str(int(at))
    digest = hmac.new(secret[6:].encode(), f"{webhook_id}.{timestamp}.{body.decode()}".encode(), hashlib.sha256)
    return {"webhook-id": webhook_id, "webhook-timestamp": timestamp, "webhook-signature": f"v3,{digest.hexdigest()}"}


# -- the record ---------------------------------------------------------------------------------------------------


def test_provider_record_generates_only_at_the_bronze_limit_and_signs() -> None:
    provider = wavespeed.PROVIDER
    assert provider.name == "wavespeed" and provider.default_base_url == "https://api.wavespeed.ai"
    assert provider.actions == {"generate"}  # WaveSpeed has no Midjourney video extend
    assert provider.max_in_flight == 2  # Bronze, the default account level
    assert provider.verify_signature is wavespeed.verify_signature
    assert provider.secret_request is wavespeed.secret_request and provider.parse_secret is wavespeed.parse_secret
    assert provider.fetch_request is wavespeed.fetch_request
    assert provider.parse_fetch_response is wavespeed.parse_fetch_response


# -- submitting ---------------------------------------------------------------------------------------------------


def test_generate_request_is_the_seeds_body_with_the_hook_in_the_query_string() -> None:
    options = {key: value for key, value in SEED_SUBMIT_BODY.items() if key != "resolution"}
    params = {"prompt": PROMPT, "image_url": IMAGE, "resolution": "480p", "options": options}
    job = make_job("wavespeed", params=params)
    request = wavespeed.build_request(job, None, KEY, HOOK)
    assert (request.method, request.path) == ("POST", "/api/v3/midjourney/image-to-video")
    assert dict(request.headers) == {"Authorization": f"Bearer {KEY}"}
    assert request.json == {"image": IMAGE, "prompt": PROMPT} | SEED_SUBMIT_BODY
    assert dict(request.params) == {"webhook": HOOK}
    sent = httpx.Request(request.method, "https://api.wavespeed.ai" + request.path, params=dict(request.params))
    assert sent.url.params["webhook"] == HOOK  # our hook's own query survives, encoded inside WaveSpeed's
    assert "webhook=https%3A%2F%2Freelhook.example%2F" in str(sent.url) and "&x=" not in str(sent.url)


def test_generate_request_maps_the_newest_docs_motion_and_sends_no_unasked_field() -> None:
    params = {"prompt": PROMPT, "image_url": IMAGE, "motion": "high", "resolution": "720p"}
    job = make_job("wavespeed", params=params)
    assert wavespeed.build_request(job, None, KEY, HOOK).json == {
        "image": IMAGE,
        "prompt": PROMPT,
        "resolution": "720p",
        "motion": "high",
    }


def test_seed_submit_response_names_the_prediction() -> None:
    assert wavespeed.parse_submit_response(200, SEED_SUBMIT_RESPONSE) == TASK


@pytest.mark.parametrize(
    ("status_code", "kind"),
    [(401, Rejection.FATAL), (400, Rejection.FATAL), (404, Rejection.FATAL), (408, Rejection.FATAL)]
    + [(429, Rejection.RETRY)]
    + [(code, Rejection.UNKNOWN) for code in (500, 502, 503, 504)],
)
def test_http_refusals_are_classified_as_the_official_sdk_retries(status_code: int, kind: Rejection) -> None:
    body = encode({"code": status_code, "message": "Unauthorized: invalid api key", "data": None})
    caught = refusal(wavespeed.parse_submit_response, status_code, body)
    assert caught.kind is kind and caught.status_code == status_code
    assert "Unauthorized: invalid api key" in caught.message


@pytest.mark.parametrize(
    ("code", "kind"), [(401, Rejection.FATAL), (400, Rejection.FATAL), (429, Rejection.RETRY), (500, Rejection.UNKNOWN)]
)
def test_200_with_a_refusing_code_is_classified_by_that_code(code: int, kind: Rejection) -> None:
    body = encode({"code": code, "message": "insufficient balance", "data": None})
    caught = refusal(wavespeed.parse_submit_response, 200, body)
    assert caught.kind is kind and caught.status_code == code
    assert "insufficient balance" in caught.message


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway</html>", b"", b"[]", b'{"code":200,"message":"success","data":{}}', b'{"code":200}'],
    ids=["html", "empty", "array", "no-id", "no-data"],
)
def test_200_without_a_readable_prediction_id_is_unknown(body: bytes) -> None:
    caught = refusal(wavespeed.parse_submit_response, 200, body)
    assert caught.kind is Rejection.UNKNOWN


# -- callbacks ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [DOCS_CALLBACK, SIGNED_CALLBACK], ids=["docs", "signed-sample"])
def test_completed_callback_is_a_success_with_its_outputs(payload: dict[str, Any]) -> None:
    result = wavespeed.parse_callback(encode(payload), {})
    assert result.status is JobStatus.SUCCEEDED and result.provider_job_id == TASK
    assert result.media_urls == (VIDEO,) and result.error is None
    assert result.result["model"] == "midjourney/image-to-video" and result.result["has_nsfw_contents"] == [False]
    assert "input" not in result.result and "urls" not in result.result


def test_signed_sample_keeps_its_timings() -> None:
    result = wavespeed.parse_callback(encode(SIGNED_CALLBACK), {})
    assert result.result["executionTime"] == 6710 and result.result["timings"] == {"inference": 6710}


def test_result_envelope_is_read_too() -> None:
    body = encode({"code": 200, "message": "success", "data": SIGNED_CALLBACK | {"outputs": [VIDEO, VIDEO + "?2"]}})
    result = wavespeed.parse_callback(body, {})
    assert result.status is JobStatus.SUCCEEDED and result.media_urls == (VIDEO, VIDEO + "?2")


def test_failed_callback_carries_wavespeeds_error() -> None:
    payload = DOCS_CALLBACK | {"status": "failed", "outputs": [], "error": "image could not be downloaded"}
    result = wavespeed.parse_callback(encode(payload), {})
    assert result.status is JobStatus.FAILED and result.error == "image could not be downloaded"
    assert result.media_urls == ()


@pytest.mark.parametrize("status", ["cancelled", "timeout", "deleted", "failed"])
def test_other_terminal_failures_name_their_status(status: str) -> None:
    payload = {key: value for key, value in DOCS_CALLBACK.items() if key != "outputs"} | {"status": status}
    result = wavespeed.parse_callback(encode(payload), {})
    assert result.status is JobStatus.FAILED and result.error == f"wavespeed reported {status}"


@pytest.mark.parametrize("status", ["created", "processing", "queued-somewhere-new"])
def test_non_terminal_callback_is_running(status: str) -> None:
    result = wavespeed.parse_callback(encode(DOCS_CALLBACK | {"status": status, "outputs": []}), {})
    assert result.status is JobStatus.RUNNING and result.media_urls == ()


def test_completed_without_outputs_is_a_failure_not_a_success() -> None:
    result = wavespeed.parse_callback(encode(DOCS_CALLBACK | {"outputs": []}), {})
    assert result.status is JobStatus.FAILED and "without any output" in (result.error or "")


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "x", "status": ',
        b"\xff\xfe not utf-8",
        b'["completed"]',
        encode({key: value for key, value in DOCS_CALLBACK.items() if key != "status"}),
        encode(DOCS_CALLBACK | {"outputs": [None]}),
        encode(DOCS_CALLBACK | {"outputs": VIDEO}),
        encode({"code": 404, "message": "not found", "data": None}),
    ],
    ids=["broken-json", "not-utf8", "array", "no-status", "null-output", "outputs-string", "error-envelope"],
)
def test_unreadable_callbacks_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedCallback):
        wavespeed.parse_callback(body, {})


# -- signatures ---------------------------------------------------------------------------------------------------

BODY = encode(SIGNED_CALLBACK)


def test_good_signature_passes() -> None:
    wavespeed.verify_signature(BODY, signed_headers(BODY), SECRET, NOW)


def test_header_names_are_case_insensitive_and_a_bare_secret_works_too() -> None:
    headers = {name.title(): value for name, value in signed_headers(BODY).items()}
    wavespeed.verify_signature(BODY, headers, SECRET, NOW)
    wavespeed.verify_signature(BODY, signed_headers(BODY), SECRET.removeprefix("whsec_"), NOW)


def test_wrong_secret_is_refused() -> None:
    headers = signed_headers(BODY, secret="whsec_someone-elses-secret")
    with pytest.raises(BadSignature, match="does not match"):
        wavespeed.verify_signature(BODY, headers, SECRET, NOW)


def test_changed_body_is_refused() -> None:
    headers = signed_headers(BODY)
    forged = BODY.replace(VIDEO.encode(), b"https://evil.example/x.mp4")
    with pytest.raises(BadSignature, match="does not match"):
        wavespeed.verify_signature(forged, headers, SECRET, NOW)


def test_changed_id_or_timestamp_is_refused() -> None:
    headers = signed_headers(BODY)
    for name, value in (("webhook-id", "another-id"), ("webhook-timestamp", str(int(NOW) - 1))):
        with pytest.raises(BadSignature, match="does not match"):
            wavespeed.verify_signature(BODY, headers | {name: value}, SECRET, NOW)


def test_base64_decoded_secret_does_not_verify() -> None:
    """The Standard Webhooks/Svix habit: decode the part after whsec_ and use the bytes. WaveSpeed does not."""
    webhook_id, timestamp = "45b392b22c3b449fa935bd4dc", str(int(NOW))
    decoded_key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(decoded_key, f"{webhook_id}.{timestamp}.".encode() + BODY, hashlib.sha256).hexdigest()
    headers = {"webhook-id": webhook_id, "webhook-timestamp": timestamp, "webhook-signature": f"v3,{digest}"}
    with pytest.raises(BadSignature, match="does not match"):
        wavespeed.verify_signature(BODY, headers, SECRET, NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_refused_by_name(missing: str) -> None:
    headers = {name: value for name, value in signed_headers(BODY).items() if name != missing}
    with pytest.raises(BadSignature, match=f"no {missing} header"):
        wavespeed.verify_signature(BODY, headers, SECRET, NOW)


@pytest.mark.parametrize(("skew", "when"), [(-600, "600 s old"), (600, "600 s in the future"), (-301, "301 s old")])
def test_timestamp_beyond_five_minutes_either_way_is_refused(skew: int, when: str) -> None:
    headers = signed_headers(BODY, at=NOW + skew)  # correctly signed, just too old or too new
    with pytest.raises(BadSignature, match=when):
        wavespeed.verify_signature(BODY, headers, SECRET, NOW)


@pytest.mark.parametrize("skew", [-300, 300])
def test_timestamp_within_five_minutes_passes(skew: int) -> None:
    wavespeed.verify_signature(BODY, signed_headers(BODY, at=NOW + skew), SECRET, NOW)


@pytest.mark.parametrize("timestamp", ["1758798328.5", "soon", "-1758798328", " 1758798328", "１７５８"])
def test_non_integer_timestamp_is_refused(timestamp: str) -> None:
    headers = signed_headers(BODY) | {"webhook-timestamp": timestamp}
    with pytest.raises(BadSignature, match="Unix seconds"):
        wavespeed.verify_signature(BODY, headers, SECRET, NOW)


def test_any_one_of_several_v3_entries_may_match() -> None:
    good = signed_headers(BODY)["webhook-signature"]
    headers = signed_headers(BODY) | {"webhook-signature": f"v1,c2lnbmF0dXJl v3,{'0' * 64} {good}"}
    wavespeed.verify_signature(BODY, headers, SECRET, NOW)
    headers["webhook-signature"] = f"v3,{'0' * 64} v3,{'1' * 64}"
    with pytest.raises(BadSignature, match="does not match"):
        wavespeed.verify_signature(BODY, headers, SECRET, NOW)


def test_signature_without_a_v3_entry_is_refused() -> None:
    hex_digest = signed_headers(BODY)["webhook-signature"].removeprefix("v3,")
    for value in (f"v1,{hex_digest}", hex_digest):
        with pytest.raises(BadSignature, match="no v3 entry"):
            wavespeed.verify_signature(BODY, signed_headers(BODY) | {"webhook-signature": value}, SECRET, NOW)


def test_empty_secret_verifies_nothing() -> None:
    headers = signed_headers(BODY, secret="whsec_")
    with pytest.raises(BadSignature, match="empty"):
        wavespeed.verify_signature(BODY, headers, "whsec_", NOW)


# -- secret and fetch ---------------------------------------------------------------------------------------------


def test_secret_request_and_its_observed_answer() -> None:
    request = wavespeed.secret_request(KEY)
    assert (request.method, request.path, dict(request.headers)) == (
        "GET",
        "/api/v3/webhook/secret",
        {"Authorization": f"Bearer {KEY}"},
    )
    assert request.json is None and dict(request.params) == {}
    assert wavespeed.parse_secret(200, encode({"code": 200, "data": {"secret": SECRET}})) == SECRET


@pytest.mark.parametrize(
    ("status_code", "body", "kind"),
    [
        (401, b'{"code":401,"message":"invalid api key","data":null}', Rejection.FATAL),
        (200, b'{"code":401,"message":"invalid api key","data":null}', Rejection.FATAL),
        (503, b"upstream down", Rejection.UNKNOWN),
        (200, b'{"code":200,"data":{}}', Rejection.UNKNOWN),
        (200, b'{"code":200,"data":{"secret":""}}', Rejection.UNKNOWN),
    ],
)
def test_secret_answer_without_a_secret_is_a_provider_error(status_code: int, body: bytes, kind: Rejection) -> None:
    caught = refusal(wavespeed.parse_secret, status_code, body)
    assert caught.kind is kind


def test_fetch_request_names_the_prediction_in_the_path() -> None:
    request = wavespeed.fetch_request(make_job("wavespeed", provider_job_id=TASK), KEY)
    assert (request.method, request.path) == ("GET", f"/api/v3/predictions/{TASK}/result")
    assert dict(request.headers) == {"Authorization": f"Bearer {KEY}"}
    odd = make_job("wavespeed", provider_job_id="../../webhook/secret")
    assert wavespeed.fetch_request(odd, KEY).path == "/api/v3/predictions/..%2F..%2Fwebhook%2Fsecret/result"
    with pytest.raises(InvalidParams, match="no wavespeed id to fetch"):
        wavespeed.fetch_request(make_job("wavespeed"), KEY)


def test_fetch_answer_is_the_prediction_in_its_envelope() -> None:
    done = wavespeed.parse_fetch_response(200, encode({"code": 200, "message": "success", "data": SIGNED_CALLBACK}))
    assert done.status is JobStatus.SUCCEEDED and done.media_urls == (VIDEO,) and done.provider_job_id == TASK
    created = wavespeed.parse_fetch_response(200, SEED_SUBMIT_RESPONSE)
    assert created.status is JobStatus.RUNNING and created.provider_job_id == TASK


@pytest.mark.parametrize(
    ("status_code", "body", "kind"),
    [
        (404, b'{"code":404,"message":"prediction not found","data":null}', Rejection.FATAL),
        (500, b'{"code":500,"message":"internal error","data":null}', Rejection.UNKNOWN),
        (200, b'{"code":200,"message":"success","data":{"status":"completed"}}', Rejection.UNKNOWN),
        (200, b"not json", Rejection.UNKNOWN),
    ],
)
def test_fetch_refusals_are_provider_errors(status_code: int, body: bytes, kind: Rejection) -> None:
    caught = refusal(wavespeed.parse_fetch_response, status_code, body)
    assert caught.kind is kind


# -- parameters ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"motion": "low", "resolution": "720p", "loop": False},
        {"options": {key: value for key, value in SEED_SUBMIT_BODY.items() if key != "resolution"}},
        {"options": {"quality": 0.25, "stylize": 1000, "chaos": 100, "weird": 3000, "seed": 2147483647}},
        {"options": {"quality": 2.0, "version": "6.1", "niji": "6", "aspect_ratio": "1:2", "seed": -1}},
    ],
)
def test_valid_params_pass(params: dict[str, Any]) -> None:
    wavespeed.validate_params("generate", {"prompt": PROMPT, "image_url": IMAGE} | params)


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"prompt": ""}, "prompt is required"),
        ({"image_url": None}, "image_url is required"),
        ({"motion": "medium"}, "motion must be 'low' or 'high'"),
        ({"resolution": "1080p"}, "resolution must be '480p' or '720p'"),
        ({"end_image_url": "https://x/b.png"}, "end_image_url"),
        ({"batch_size": 4}, "batch_size"),
        ({"loop": True}, "loop"),
        ({"options": ["aspect_ratio"]}, "options must be an object"),
        ({"options": {"aspect_ratio": "9:16"}}, "options.aspect_ratio must be one of 1:1, 4:3"),
        ({"options": {"quality": 0.75}}, "options.quality"),
        ({"options": {"quality": True}}, "options.quality"),
        ({"options": {"stylize": 1001}}, "options.stylize must be an integer 0-1000"),
        ({"options": {"chaos": -1}}, "options.chaos"),
        ({"options": {"chaos": 5.5}}, "options.chaos"),
        ({"options": {"weird": 3001}}, "options.weird"),
        ({"options": {"version": 7}}, "options.version must be the string"),
        ({"options": {"niji": "4"}}, "options.niji"),
        ({"options": {"seed": -2}}, "options.seed"),
        ({"options": {"seed": 2147483648}}, "options.seed"),
        ({"options": {"enable_base64_output": True}}, "downloads each output by URL"),
        ({"options": {"enable_base64_output": 0}}, "options.enable_base64_output"),
        ({"options": {"motion": "high"}}, "use the job's motion field"),
        ({"options": {"image": "https://x/other.png"}}, "options.image is not a WaveSpeed option"),
    ],
)
def test_invalid_params_name_the_field(params: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidParams, match=names):
        wavespeed.validate_params("generate", {"prompt": PROMPT, "image_url": IMAGE} | params)


def test_extend_is_refused_before_and_at_submission() -> None:
    with pytest.raises(InvalidParams, match="generate only"):
        wavespeed.validate_params("extend", {"index": 0})
    with pytest.raises(InvalidParams, match="generate only"):
        wavespeed.build_request(make_job("wavespeed", "extend", {"index": 0}), None, KEY, HOOK)
