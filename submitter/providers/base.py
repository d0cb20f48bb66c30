"""What every provider module provides, and the errors they share.

A provider module is sans-I/O (h11's idea): it turns our jobs into HTTP requests and provider bytes into our
records, and never touches the network or the database. The submission worker and the receiver do the I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from storage import CallbackResult, Cost, Job
from submitter.jsonbody import JSONBodyError, parse_json


@dataclass(frozen=True)
class ProviderRequest:
    method: str
    path: str  # joined to the provider's base URL
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Mapping[str, Any] | None = None
    params: Mapping[str, str] = field(default_factory=dict)


class Rejection(Enum):
    FATAL = "fatal"  # the provider said it will never take this job (bad key, no balance, bad parameters)
    RETRY = "retry"  # the provider said it did not take it now (rate limit, queue full)
    UNKNOWN = "unknown"  # the request reached the provider, and we cannot tell whether it took the job


class ProviderError(Exception):
    def __init__(self, kind: Rejection, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status_code = status_code


class MalformedCallback(ValueError):
    """A callback body that cannot be read as this provider's result."""


class InvalidParams(ValueError):
    """A job's parameters that this provider cannot take; the message names the field and the fix."""


class BadSignature(Exception):
    """A signed callback whose signature is missing, wrong, or too old."""


@dataclass(frozen=True)
class Provider:
    name: str
    default_base_url: str
    max_in_flight: int
    actions: frozenset[str]
    # (job, parent or None, api key, hook URL) -> the submit request
    build_request: Callable[[Job, Job | None, str, str], ProviderRequest]
    # (HTTP status, body) -> the provider's job id, or ProviderError
    parse_submit_response: Callable[[int, bytes], str]
    # (raw body, headers) -> what the callback says, or MalformedCallback
    parse_callback: Callable[[bytes, Mapping[str, str]], CallbackResult]
    # (action, params) -> None, or InvalidParams; run before a job is recorded
    validate_params: Callable[[str, Mapping[str, Any]], None]
    # appended by the provider to the URL we give it (APIMart POSTs to <webhook>/callback)
    callback_suffix: str = ""
    # Signed callbacks (WaveSpeed): (raw body, headers, secret, now) -> None, or BadSignature. Checked before parsing.
    verify_signature: Callable[[bytes, Mapping[str, str], str, float], None] | None = None
    # Where that secret comes from when it is not configured: a request (api key -> request) and its answer's parser
    # ((HTTP status, body) -> secret, or ProviderError).
    secret_request: Callable[[str], ProviderRequest] | None = None
    parse_secret: Callable[[int, bytes], str] | None = None
    # The provider's fetch endpoint for one job ((job, api key) -> request, or InvalidParams for a job without a
    # provider id); its answer is read with `parse_fetch_response` ((HTTP status, body) -> CallbackResult), the same
    # result a callback gives. The whole job, not its id alone: TTAPI fetches image jobs from another endpoint.
    fetch_request: Callable[[Job, str], ProviderRequest] | None = None
    parse_fetch_response: Callable[[int, bytes], CallbackResult] | None = None
    # Asked once more when the fetch answers 4xx (TTAPI: its seed's heading says GET, its example POSTs a body).
    fetch_fallback: Callable[[Job, str], ProviderRequest] | None = None
    # Image frames larger than this are refused before anything is sent (APIMart: 12 MiB).
    max_frame_bytes: int | None = None
    # Takes a frame as a `data:` URL as well as an http(s) one (APIMart); the others only fetch URLs.
    takes_data_urls: bool = False
    # `generate` from a finished image job's `task_id` (+ `index`) instead of a first frame: APIMart's alone.
    takes_task_id: bool = False
    # Besides `actions`, any action a parent result lists in result["components"] (TTAPI's U1-U4, V1-V4, ...).
    component_actions: bool = False


def classify_status(status_code: int) -> Rejection | None:
    """The common reading of a submit answer's HTTP status; None means 2xx (read the body).

    Only an answer that says in words that the job was not taken may send it again: 429, and TTAPI's 499 "queue
    full". A 5xx (a 504 from a gateway that timed out while the provider took the job), 408 or 425 says nothing
    about the job: outcome unknown, never resent. Any other 4xx names what is wrong with the request: it fails.
    """
    if 200 <= status_code < 300:
        return None
    if status_code in (429, 499):
        return Rejection.RETRY
    if status_code in (408, 425) or status_code >= 500:
        return Rejection.UNKNOWN
    return Rejection.FATAL


def fetch_id(job: Job) -> str:
    """The id the provider gave `job`, which every fetch names; InvalidParams when it never gave one."""
    if not job.provider_job_id:
        raise InvalidParams(f"job {job.id} has no {job.provider} id to fetch (the submit answer never arrived)")
    return job.provider_job_id


def load_json_object(body: bytes, what: str) -> dict[str, Any]:
    """A provider's body (callback or answer) as a JSON object, or MalformedCallback naming what is wrong.

    Read as every body is (submitter/jsonbody.py), with lone surrogates replaced by U+FFFD: a provider cannot be
    asked to fix them, and the caller keeps the raw bytes as they came.
    """
    try:
        value = parse_json(body, what=what, surrogates="replace")
    except JSONBodyError as exc:
        raise MalformedCallback(str(exc)) from None
    if not isinstance(value, dict):
        raise MalformedCallback(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def error_message(body: bytes, *keys: str) -> str:
    """The provider's own words from an error body, or the body itself, shortened."""
    try:
        value = parse_json(body, what="the error body", surrogates="replace")
    except JSONBodyError:
        return body[:300].decode("utf-8", "replace") or "(empty body)"
    for key in keys:
        current: Any = value
        for part in key.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if isinstance(current, str) and current:
            return current
    return json.dumps(value)[:300]


def submitted_id(value: object, message: str, status_code: int) -> str:
    """The job id a submit answer names; without one we cannot tell whether the provider took the job."""
    if not isinstance(value, str) or not value:
        raise ProviderError(Rejection.UNKNOWN, message, status_code=status_code)
    return value


def named_id(value: object) -> str | None:
    """The provider job id a callback names, or None: a body without one (TTAPI's `FAILED` with `data: null`,
    AceData's error envelope) is applied to the job its URL token names, which the receiver has verified."""
    return value if isinstance(value, str) and value else None


def about_the_job(result: CallbackResult, what: str, status_code: int) -> CallbackResult:
    """A fetch answer that names no job (TTAPI's "job not found" is a FAILED with `data: null`) settles nothing:
    we asked about one job, and only an answer about that job may finish it."""
    if result.provider_job_id is None:
        raise ProviderError(
            Rejection.UNKNOWN, f"{what} names no job: {result.error or result.status}", status_code=status_code
        )
    return result


def url_list(value: object, message: str) -> list[str]:
    """A callback's list of media URLs (possibly empty), or MalformedCallback(message)."""
    if not isinstance(value, list) or not all(isinstance(url, str) and url for url in value):
        raise MalformedCallback(message)
    return value


def reported_cost(value: object, unit: str) -> Cost | None:
    """A cost a provider reports (a number, or a number in a string: TTAPI's `quota` is "30") in `unit`, or None
    when it reports none or something that is not an amount: spend is bookkeeping, and a garbled figure must not
    cost the job its videos, nor count as 0."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        amount = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None
    return Cost(amount, unit) if math.isfinite(amount) and amount >= 0 else None


def reported_costs(fields: Mapping[str, Any], units: Mapping[str, str]) -> tuple[Cost, ...]:
    """The costs a body's `fields` report, one per unit: `units` maps each field that carries one to its unit."""
    costs = (reported_cost(fields.get(name), unit) for name, unit in units.items())
    return tuple(cost for cost in costs if cost is not None)
