"""What a job cost, read from each provider's documented bodies: TTAPI's `data.quota` (a string), APIMart's `cost`
(dollars) and `credits_cost` (credits); AceData and WaveSpeed report none."""

from __future__ import annotations

import json

import pytest

from storage import Cost, JobStatus
from submitter.providers import acedata, apimart, ttapi, wavespeed
from tests.submitter import test_acedata_contract as ace
from tests.submitter import test_apimart_contract as mart
from tests.submitter import test_ttapi_contract as tt
from tests.submitter import test_ttapi_image_contract as tt_image
from tests.submitter import test_wavespeed_contract as ws


def test_ttapi_reports_its_quota_as_a_string() -> None:
    result = ttapi.parse_callback(tt.SEED_CALLBACK, {})
    assert result.status is JobStatus.SUCCEEDED and result.costs == (Cost(30.0, "quota"),)
    assert ttapi.parse_fetch_response(200, tt.SEED_CALLBACK).costs == (Cost(30.0, "quota"),)


def test_apimart_reports_dollars_and_credits_in_two_units() -> None:
    expected = (Cost(0.006, "usd"), Cost(0.06, "credits"))
    assert apimart.parse_callback(mart.DOC_CALLBACK, {}).costs == expected
    assert apimart.parse_fetch_response(200, b'{"code":200,"data":' + mart.DOC_CALLBACK + b"}").costs == expected


@pytest.mark.parametrize(
    ("parse", "body"),
    [
        (acedata.parse_callback, ace.SEED_CALLBACK),
        (wavespeed.parse_callback, json.dumps(ws.SIGNED_CALLBACK).encode()),
        (ttapi.parse_callback, tt_image.SEED_IMAGE_CALLBACK),  # seed 001's image callback names no quota
        (ttapi.parse_callback, b'{"status":"FAILED","message":"insufficient quota","data":null}'),
        (apimart.parse_callback, mart.DOC_FAILED_EN),
    ],
    ids=["acedata", "wavespeed", "ttapi-image", "ttapi-failed", "apimart-failed"],
)
def test_a_body_that_names_no_cost_gives_none(parse, body: bytes) -> None:  # type: ignore[no-untyped-def]
    assert parse(body, {}).costs == ()


@pytest.mark.parametrize("quota", ["n/a", "", "-5", "inf", "NaN", True, None, ["30"]])
def test_a_quota_that_is_not_an_amount_is_no_cost_and_keeps_the_videos(quota: object) -> None:
    payload = json.loads(tt.SEED_CALLBACK)
    payload["data"]["quota"] = quota
    result = ttapi.parse_callback(json.dumps(payload).encode(), {})
    assert result.status is JobStatus.SUCCEEDED and result.media_urls == tt.SEED_VIDEOS
    assert result.costs == ()


def test_a_number_where_the_seed_has_a_string_is_read_too() -> None:
    payload = json.loads(tt.SEED_CALLBACK)
    payload["data"]["quota"] = 45
    assert ttapi.parse_callback(json.dumps(payload).encode(), {}).costs == (Cost(45.0, "quota"),)


def test_a_progress_report_carries_no_cost() -> None:
    payload = json.loads(tt.SEED_CALLBACK)
    payload["status"] = "ON_QUEUE"
    assert ttapi.parse_callback(json.dumps(payload).encode(), {}).costs == ()
