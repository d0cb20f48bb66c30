"""Seed 001's exact example JSON (TTAPI's Midjourney image API), pushed through the ttapi provider module."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from storage import JobStatus
from submitter.providers import InvalidParams, MalformedCallback, Rejection, ttapi
from tests.submitter.support import make_job, refusal
from tests.submitter.test_ttapi_contract import KEY, SEED_CALLBACK

PARENT_ID = "afa774a3-1aee-5aba-4510-14818d6875e4"
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n not really a png").decode()

# Seed 001, "Async callback return json structure", verbatim.
SEED_IMAGE_CALLBACK = b"""{
    "status": "SUCCESS",
    "jobId": "f5850038-90a3-8a97-0476-107ea4b8dac4",
    "message": "success",
    "data": {
        "actions": "imagine",
        "jobId": "f5850038-90a3-8a97-0476-107ea4b8dac4",
        "progress": "100",
        "prompt": "Soccer star Max Kruse and Jan-Peter Jachtmann victims of \xe2\x82\xac528,695 poker scam, German soccer star Max Kruse and WSOP Main Event finalist Jan-Peter Jachtmann are among the players who have been swindled out of \xe2\x82\xac528,695., poker, realistic --ar 1280:720",
        "discordImage": "https://cdn.discordapp.com/attachments/1107938555931656214/1176340921227423844/voyagel_Soccer_star_Max_Kruse_and_Jan-Peter_Jachtmann_victims_o_c513a87b-eed3-4a3b-ab97-6be4dbc3ea99.png?ex=656e83da&is=655c0eda&hm=6e06a1dec3c6c1be209799884681969878eabb81ce81f8db22d54480379fcd9b&",
        "cdnImage": "http://127.0.0.1/8080/pics/452020f2-6793-4525-a1b5-472cac439610.png",
        "hookUrl": "",
        "components": [
            "upsample1",
            "upsample2",
            "upsample3",
            "upsample4",
            "variation1",
            "variation2",
            "variation3",
            "variation4"
        ],
        "seed":"",
        "images":[
            "https://cdnb.ttapi.io/2024-04-02/27024084bcd54b1c38d085d11d8dc841037a2262ebeda29b3f67b741441f6736.png",
            "https://cdnb.ttapi.io/2024-04-02/e15e39f6eb39191fdf3f176f8c979b6e57254114a8bfea826e30f23850d0d485.png",
            "https://cdnb.ttapi.io/2024-04-02/4b7910497a0d79d0155cd8b33eea313425cf2b809efef4b6ba3960aa1c2bd484.png",
            "https://cdnb.ttapi.io/2024-04-02/98b162a1da713eef23c3cfd5f166aee8e4ee09f8cf1f7bbc24bf72990eb80adf.png"
        ]
    }
}"""  # noqa: E501

SEED_TILES = (
    "https://cdnb.ttapi.io/2024-04-02/27024084bcd54b1c38d085d11d8dc841037a2262ebeda29b3f67b741441f6736.png",
    "https://cdnb.ttapi.io/2024-04-02/e15e39f6eb39191fdf3f176f8c979b6e57254114a8bfea826e30f23850d0d485.png",
    "https://cdnb.ttapi.io/2024-04-02/4b7910497a0d79d0155cd8b33eea313425cf2b809efef4b6ba3960aa1c2bd484.png",
    "https://cdnb.ttapi.io/2024-04-02/98b162a1da713eef23c3cfd5f166aee8e4ee09f8cf1f7bbc24bf72990eb80adf.png",
)
UV = ["upsample1", "upsample2", "upsample3", "upsample4", "variation1", "variation2", "variation3", "variation4"]

# Seed 001's example request bodies, one per endpoint. The seed's examples spell the speed "model" where its tables
# (and TTAPI's founder) say "mode": we send "mode", so those three are compared with the key renamed.
SEED_IMAGINE = {"prompt": "a cute cat", "model": "fast", "hookUrl": ""}
SEED_ACTION = {"jobId": PARENT_ID, "action": "upsample1", "hookUrl": ""}
SEED_SEED = {"jobId": PARENT_ID, "hookUrl": ""}
SEED_BLEND = {"imgBase64Array": ["", ""], "dimensions": "SQUARE", "model": "fast", "hookUrl": ""}
SEED_DESCRIBE = {"base64": "", "model": "fast", "hookUrl": ""}
SEED_INPAINT = {
    "jobId": PARENT_ID,
    "prompt": "white background",
    "mask": "UklGRrw0AABXRUJQVlA4WAoAAAAgAAAA...",
    "hookUrl": "",
}


def as_sent(seed_body: dict[str, Any]) -> dict[str, Any]:
    return {("mode" if key == "model" else key): value for key, value in seed_body.items()}


def image_callback(**data: Any) -> bytes:
    payload = json.loads(SEED_IMAGE_CALLBACK)
    payload["data"].update(data)
    return json.dumps(payload).encode()


def parent(components: list[str] | None = UV, provider_job_id: str | None = PARENT_ID) -> Any:
    result = {} if components is None else {"components": components}
    return make_job("ttapi", "imagine", {"prompt": "a cute cat"}, provider_job_id=provider_job_id, result=result)


def test_provider_record_takes_image_actions_and_components() -> None:
    provider = ttapi.PROVIDER
    assert provider.actions == {
        "generate",
        "extend",
        "imagine",
        "seed",
        "blend",
        "describe",
        "inpaint",
        *(f"upsample{i}" for i in range(1, 5)),
        *(f"variation{i}" for i in range(1, 5)),
    }
    assert provider.component_actions is True
    assert provider.max_in_flight == 10  # seed 001 too: "The max job in progressing is 10"
    assert provider.fetch_request is ttapi.fetch_request
    assert provider.parse_fetch_response is ttapi.parse_fetch_response


def test_seed_image_callback_is_a_success_with_the_four_tiles_in_order() -> None:
    result = ttapi.parse_callback(SEED_IMAGE_CALLBACK, {"content-type": "application/json"})
    assert result.status is JobStatus.SUCCEEDED
    assert result.provider_job_id == "f5850038-90a3-8a97-0476-107ea4b8dac4"
    assert result.media_urls == SEED_TILES  # the tiles, not the grid in cdnImage / discordImage
    assert result.progress == 100 and result.error is None
    assert result.result["action"] == "imagine"  # read from the image API's plural key
    assert result.result["components"] == UV
    assert result.result["seed"] == ""
    assert result.result["prompt"].endswith("poker, realistic --ar 1280:720")
    assert "discordImage" not in result.result and "images" not in result.result
    # The grid, for the job JSON: TTAPI's own CDN copy (the seed's is a placeholder address, kept as given).
    assert result.result["cover_url"] == "http://127.0.0.1/8080/pics/452020f2-6793-4525-a1b5-472cac439610.png"


def test_an_upscale_result_is_its_cdn_image_before_discords() -> None:
    cdn, discord = "https://cdnb.ttapi.io/2024-04-02/u1.png", "https://cdn.discordapp.com/attachments/1/2/u1.png"
    body = image_callback(actions="upsample1", images=[], cdnImage=cdn, discordImage=discord, components=["zoom_out_2"])
    result = ttapi.parse_callback(body, {})
    assert result.status is JobStatus.SUCCEEDED
    assert result.media_urls == (cdn,)
    assert result.result["action"] == "upsample1" and result.result["components"] == ["zoom_out_2"]
    no_cdn = ttapi.parse_callback(image_callback(actions="upsample1", images=[], cdnImage="", discordImage=discord), {})
    assert no_cdn.media_urls == (discord,)
    assert (result.result["cover_url"], no_cdn.result["cover_url"]) == (cdn, discord)


def test_a_seed_result_succeeds_without_an_image() -> None:
    body = image_callback(actions="seed", images=[], cdnImage="", discordImage="", components=[], seed="3282937712")
    result = ttapi.parse_callback(body, {})
    assert result.status is JobStatus.SUCCEEDED
    assert result.media_urls == ()
    assert result.result["seed"] == "3282937712" and result.result["action"] == "seed"
    assert "cover_url" not in result.result


def test_a_describe_result_keeps_its_four_prompts_as_a_list() -> None:
    text = "\n\n".join(f"{i}\ufe0f\u20e3 a cat on a mat, take {i} --ar 1:1" for i in range(1, 5))
    body = image_callback(actions="describe", images=[], cdnImage="", discordImage="", components=[], prompt=text)
    result = ttapi.parse_callback(body, {})
    assert result.status is JobStatus.SUCCEEDED and result.media_urls == ()
    assert result.result["prompts"] == [f"a cat on a mat, take {i} --ar 1:1" for i in range(1, 5)]
    assert "prompt" not in result.result
    listed = ttapi.parse_callback(image_callback(actions="describe", images=[], prompts=["a", "b"]), {})
    assert listed.result["prompts"] == ["a", "b"]


def test_a_failed_image_callback_carries_ttapis_message() -> None:
    payload = json.loads(SEED_IMAGE_CALLBACK)
    payload["status"], payload["message"], payload["data"]["images"] = "FAILED", "banned prompt words: poker", []
    result = ttapi.parse_callback(json.dumps(payload).encode(), {})
    assert result.status is JobStatus.FAILED and result.error == "banned prompt words: poker"
    assert result.media_urls == ()


@pytest.mark.parametrize("status", ["PENDING_QUEUE", "ON_QUEUE", "SOMETHING_NEW"])
def test_a_non_terminal_image_callback_is_running(status: str) -> None:
    payload = json.loads(SEED_IMAGE_CALLBACK)
    payload["status"], payload["data"]["progress"] = status, "40"
    result = ttapi.parse_callback(json.dumps(payload).encode(), {})
    assert result.status is JobStatus.RUNNING and result.progress == 40 and result.media_urls == ()


def test_an_image_callback_with_a_decimal_progress_is_a_whole_percent() -> None:
    payload = json.loads(SEED_IMAGE_CALLBACK)
    payload["status"], payload["data"]["progress"] = "ON_QUEUE", "45.5"
    result = ttapi.parse_callback(json.dumps(payload).encode(), {})
    assert result.status is JobStatus.RUNNING and result.progress == 45


@pytest.mark.parametrize("data", [{"action": "generate", "videos": []}, {"videos": []}, {"action": "extend"}])
def test_only_a_video_job_without_videos_fails(data: dict[str, Any]) -> None:
    payload = json.loads(SEED_CALLBACK)
    payload["data"].pop("videos")
    payload["data"].pop("action")
    payload["data"].update(data)
    result = ttapi.parse_callback(json.dumps(payload).encode(), {})
    assert result.status is JobStatus.FAILED and result.error == "ttapi reported SUCCESS without any video"


def test_an_image_job_is_not_failed_by_an_empty_videos_field() -> None:
    body = image_callback(actions="upsample1", images=[], videos=[], cdnImage="https://cdnb.ttapi.io/u1.png")
    result = ttapi.parse_callback(body, {})
    assert result.status is JobStatus.SUCCEEDED and result.media_urls == ("https://cdnb.ttapi.io/u1.png",)


@pytest.mark.parametrize("images", ["https://cdnb.ttapi.io/a.png", [1, 2], ["https://cdnb.ttapi.io/a.png", ""]])
def test_unreadable_images_are_malformed(images: object) -> None:
    with pytest.raises(MalformedCallback, match=r"data\.images"):
        ttapi.parse_callback(image_callback(images=images), {})


def test_imagine_request_is_the_seeds_example_body() -> None:
    job = make_job("ttapi", "imagine", {"prompt": "a cute cat", "options": {"mode": "fast"}})
    request = ttapi.build_request(job, None, KEY, "")
    assert (request.method, request.path) == ("POST", "/midjourney/v1/imagine")
    assert dict(request.headers) == {"TT-API-KEY": KEY}
    assert request.json == as_sent(SEED_IMAGINE)


def test_imagine_passes_its_options_and_the_hook_url() -> None:
    options = {"mode": "turbo", "timeout": 600, "getUImages": True}
    job = make_job("ttapi", "imagine", {"prompt": "p", "options": options})
    request = ttapi.build_request(job, None, KEY, "https://h/x")
    assert request.json == {
        "prompt": "p",
        "hookUrl": "https://h/x",
        "mode": "turbo",
        "timeout": 600,
        "getUImages": True,
    }


def test_action_request_is_the_seeds_example_body() -> None:
    request = ttapi.build_request(make_job("ttapi", "upsample1", {}), parent(), KEY, "")
    assert (request.method, request.path) == ("POST", "/midjourney/v1/action")
    assert request.json == SEED_ACTION


def test_any_component_the_parent_lists_goes_to_the_action_endpoint() -> None:
    job = make_job("ttapi", "zoom_out_2", {})
    request = ttapi.build_request(job, parent(["zoom_out_2", "pan_left"]), KEY, "https://h/x")
    assert request.path == "/midjourney/v1/action"
    assert request.json == {"jobId": PARENT_ID, "action": "zoom_out_2", "hookUrl": "https://h/x"}
    assert ttapi.build_request(make_job("ttapi", "pan_left", {}), parent(None), KEY, "").path == "/midjourney/v1/action"


def test_seed_request_is_the_seeds_example_body() -> None:
    request = ttapi.build_request(make_job("ttapi", "seed", {}), parent(), KEY, "")
    assert (request.method, request.path) == ("POST", "/midjourney/v1/seed")
    assert request.json == SEED_SEED


def test_blend_request_is_the_seeds_example_body() -> None:
    params = {"images_base64": ["", ""], "dimensions": "SQUARE", "options": {"mode": "fast"}}
    request = ttapi.build_request(make_job("ttapi", "blend", params), None, KEY, "")
    assert (request.method, request.path) == ("POST", "/midjourney/v1/blend")
    assert request.json == as_sent(SEED_BLEND)
    default = ttapi.build_request(make_job("ttapi", "blend", {"images_base64": ["a", "b"]}), None, KEY, "").json
    assert default is not None and default["dimensions"] == "SQUARE"


def test_describe_request_is_the_seeds_example_body() -> None:
    job = make_job("ttapi", "describe", {"image_base64": "", "options": {"mode": "fast"}})
    request = ttapi.build_request(job, None, KEY, "")
    assert (request.method, request.path) == ("POST", "/midjourney/v1/describe")
    assert request.json == as_sent(SEED_DESCRIBE)


def test_inpaint_request_is_the_seeds_example_body() -> None:
    params = {"mask_base64": SEED_INPAINT["mask"], "prompt": "white background"}
    request = ttapi.build_request(make_job("ttapi", "inpaint", params), parent(), KEY, "")
    assert (request.method, request.path) == ("POST", "/midjourney/v1/inpaint")
    assert request.json == SEED_INPAINT
    without_prompt = ttapi.build_request(make_job("ttapi", "inpaint", {"mask_base64": PNG_B64}), parent(), KEY, "").json
    assert without_prompt == {"jobId": PARENT_ID, "mask": PNG_B64, "hookUrl": ""}


@pytest.mark.parametrize("action", ["upsample2", "seed", "inpaint", "high_variation"])
@pytest.mark.parametrize("given", [None, parent(provider_job_id=None)], ids=["no-parent", "parent-not-accepted"])
def test_a_follow_up_without_a_ttapi_parent_job_is_invalid(action: str, given: Any) -> None:
    job = make_job("ttapi", action, {"mask_base64": PNG_B64} if action == "inpaint" else {})
    with pytest.raises(InvalidParams, match="parent"):
        ttapi.build_request(job, given, KEY, "")


def test_a_component_the_parent_does_not_list_is_invalid() -> None:
    with pytest.raises(InvalidParams, match=r"pan_left is not one of the parent job's components \(upsample1"):
        ttapi.build_request(make_job("ttapi", "pan_left", {}), parent(), KEY, "")


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("imagine", {"prompt": "a cute cat --ar 1:1"}),
        ("imagine", {"prompt": "p", "options": {"mode": "relax", "timeout": 300, "getUImages": False}}),
        ("upsample4", {}),
        ("variation1", {"options": {"timeout": 120}}),
        ("zoom_out_1_5", {}),
        ("seed", {}),
        ("blend", {"images_base64": [PNG_B64, f"data:image/png;base64,{PNG_B64}"]}),
        ("blend", {"images_base64": [PNG_B64] * 5, "dimensions": "PORTRAIT", "options": {"mode": "turbo"}}),
        ("describe", {"image_base64": PNG_B64}),
        ("inpaint", {"mask_base64": PNG_B64}),
        ("inpaint", {"mask_base64": PNG_B64, "prompt": "white background"}),
    ],
)
def test_valid_image_params_pass(action: str, params: dict[str, Any]) -> None:
    ttapi.validate_params(action, params)


@pytest.mark.parametrize(
    ("action", "params", "names"),
    [
        ("Upscale 1", {}, "generate, extend, blend, describe"),
        ("2x", {}, "any component"),
        ("imagine", {}, "imagine needs prompt"),
        ("imagine", {"prompt": "  "}, "prompt must be a non-empty string"),
        ("imagine", {"prompt": "p", "image_url": "https://x/a.png"}, "remove image_url"),
        ("imagine", {"prompt": "p", "options": {"mode": "slow"}}, "options.mode must be one of fast, relax, turbo"),
        ("imagine", {"prompt": "p", "options": {"timeout": 0}}, "options.timeout"),
        ("imagine", {"prompt": "p", "options": {"timeout": True}}, "options.timeout"),
        ("imagine", {"prompt": "p", "options": {"getUImages": "yes"}}, "options.getUImages"),
        ("imagine", {"prompt": "p", "options": {"aspect": "1:1"}}, "mode, timeout, getUImages"),
        ("seed", {"options": {"mode": "fast"}}, "options for seed may hold only timeout"),
        ("upsample1", {"index": 0}, "remove index"),
        ("blend", {}, "blend needs images_base64"),
        ("blend", {"images_base64": [PNG_B64]}, "2-5 base64 images, got 1"),
        ("blend", {"images_base64": [PNG_B64] * 6}, "2-5 base64 images, got 6"),
        ("blend", {"images_base64": PNG_B64}, "2-5 base64 images, got str"),
        ("blend", {"images_base64": [PNG_B64, "not base64!"]}, r"images_base64\[1\] must be a base64"),
        ("blend", {"images_base64": [PNG_B64, PNG_B64], "dimensions": "WIDE"}, "PORTRAIT, SQUARE, LANDSCAPE"),
        ("describe", {}, "describe needs image_base64"),
        ("describe", {"image_base64": "data:image/png,raw"}, "image_base64 must be a base64"),
        ("inpaint", {"prompt": "p"}, "inpaint needs mask_base64"),
        ("inpaint", {"mask_base64": SEED_INPAINT["mask"]}, "mask_base64 must be a base64"),  # the seed elides it
    ],
)
def test_invalid_image_params_name_the_field(action: str, params: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidParams, match=names):
        ttapi.validate_params(action, params)


def test_fetch_requests_pick_the_api_that_made_the_job() -> None:
    video = ttapi.fetch_request(make_job("ttapi", "generate", {}, provider_job_id="943583cb"), KEY)
    assert (video.method, video.path, dict(video.params)) == ("GET", "/midjourney/video/fetch", {"jobId": "943583cb"})
    assert dict(video.headers) == {"TT-API-KEY": KEY} and video.json is None
    extend = make_job("ttapi", "extend", {"index": 0}, provider_job_id="v-1")
    assert ttapi.fetch_request(extend, KEY).path == "/midjourney/video/fetch"
    image = ttapi.fetch_request(make_job("ttapi", "upsample1", {}, provider_job_id="i-1"), KEY)
    assert (image.method, image.path, dict(image.params)) == ("GET", "/midjourney/v1/fetch", {"jobId": "i-1"})
    with pytest.raises(InvalidParams, match="no ttapi id to fetch"):
        ttapi.fetch_request(make_job("ttapi", "imagine", {"prompt": "p"}), KEY)


def test_fetch_answers_read_like_callbacks() -> None:
    assert ttapi.parse_fetch_response(200, SEED_IMAGE_CALLBACK).media_urls == SEED_TILES
    assert ttapi.parse_fetch_response(200, SEED_CALLBACK).status is JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("status_code", "body", "kind", "words"),
    [
        (400, b'{"status":"FAILED","message":"job not found","data":null}', Rejection.FATAL, "job not found"),
        (401, b'{"status":"FAILED","message":"Wrong TT-API-KEY or email is not activated."}', Rejection.FATAL, "Wrong"),
        (500, b"<html>oops</html>", Rejection.UNKNOWN, "oops"),
        (200, b'{"status":"FAILED","message":"job not found","data":null}', Rejection.UNKNOWN, "job not found"),
        (200, b"not json", Rejection.UNKNOWN, "not JSON"),
    ],
)
def test_fetch_failures_are_provider_errors(status_code: int, body: bytes, kind: Rejection, words: str) -> None:
    caught = refusal(ttapi.parse_fetch_response, status_code, body)
    assert caught.kind is kind and words in caught.message
    assert caught.status_code == status_code
