"""`POST /hooks/{provider}/{token}`: where providers deliver results.

The order is the promise. Check the token (403), take one of the job's few callback slots (429/503 with Retry-After,
receiver/overload.py), read at most 1 MiB within the body deadline (413, 408), check the signature where the provider
signs (WaveSpeed; 403), parse with the provider's module (400), then store the raw callback and apply it in one
transaction; only after the commit answer 200, since a provider stops re-delivering once it has a 200 (TTAPI counts
nothing else). A body that names no provider job id (a failure without one) is applied to the job the token names.
Every refusal is theirs (400, 403, 413) or ours (503, retried): never a 500. A refused callback changes nothing; a
re-delivered one is counted (storage/inbox.py) and changes nothing else.
"""

from __future__ import annotations

import logging
import time

from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from receiver.overload import take_hook_slot
from receiver.requests import BodyTooLarge, error, read_body
from receiver.service import Service
from storage import JobMismatch
from submitter.providers import PROVIDERS, BadSignature, MalformedCallback
from submitter.tokens import BadHookToken

log = logging.getLogger("reelhook.hooks")

MAX_BODY = 1024 * 1024


async def receive_callback(request: Request) -> Response:
    service: Service = request.app.state.service
    name = request.path_params["provider"]
    provider = PROVIDERS.get(name)
    if provider is None or name not in service.settings.providers:  # a label of its own: a path names no metric
        return _refuse(service, "unknown", "unknown_provider", 404, "unknown_provider", f"no provider named {name!r}")
    # The scope's path as is: `request.url` would build and re-parse the whole URL (host header included) for it.
    if request.scope["path"].endswith("/callback") and not provider.callback_suffix:
        return _refuse(service, name, "not_found", 404, "not_found", f"{name} callbacks have no /callback suffix")
    try:
        claim = service.signer.verify_hook_token(request.path_params["token"], name)
    except BadHookToken as exc:
        log.warning("refused %s callback: %s", name, exc, extra={"event": "callback.refused", "provider": name})
        return _refuse(service, name, "token", 403, "forbidden", str(exc))
    refused = take_hook_slot(request, claim.job_id)  # only now: a bad token holds no slot; one job holds a few
    if refused is not None:
        service.metrics.callbacks.labels(name, "refused", "busy").inc()
        return refused
    try:
        body = await read_body(request, MAX_BODY)
    except BodyTooLarge:
        return _refuse(service, name, "too_large", 413, "too_large", f"callback bodies are limited to {MAX_BODY} bytes")
    except ClientDisconnect:
        return _refuse(service, name, "disconnected", 400, "disconnected", "the body was not received in full")
    if provider.verify_signature is not None:
        try:
            secret = await service.webhook_secret(name)
        except Exception as exc:
            log.error(
                "cannot check a %s callback's signature: %s",
                name,
                exc,
                extra={"event": "callback.unverifiable", "job": claim},
            )
            return _refuse(
                service, name, "unavailable", 503, "unavailable", "cannot check the signature now; please retry"
            )
        try:
            provider.verify_signature(body, request.headers, secret, time.time())
        except BadSignature as exc:
            log.warning(
                "refused %s callback for job %s: %s",
                name,
                claim.job_id,
                exc,
                extra={"event": "callback.refused", "job": claim},
            )
            return _refuse(service, name, "signature", 403, "forbidden", f"bad signature: {exc}")
    try:
        result = provider.parse_callback(body, request.headers)
    except Exception as exc:  # MalformedCallback, or whatever else a hostile body trips in a parser: theirs, 400
        reason = str(exc) if isinstance(exc, MalformedCallback) else f"unreadable ({type(exc).__name__})"
        log.warning(
            "refused %s callback for job %s: %s",
            name,
            claim.job_id,
            reason,
            extra={"event": "callback.refused", "job": claim},
        )
        return _refuse(service, name, "malformed", 400, "malformed", reason)
    try:
        outcome = await service.store.record_callback(
            claim.job_id, name, body=body, headers=request.headers.items(), result=result
        )
    except JobMismatch as exc:
        log.warning(
            "refused %s callback: %s",
            name,
            exc,
            extra={"event": "callback.refused", "job": claim, "provider_job_id": result.provider_job_id},
        )
        return _refuse(service, name, "mismatch", 403, "forbidden", str(exc))
    except LookupError:
        return _refuse(service, name, "unknown_job", 403, "forbidden", f"job {claim.job_id} does not exist")
    except Exception:  # our failure, whatever it is: nothing was committed, and the provider retries a 503
        log.exception(
            "could not store %s callback for job %s",
            name,
            claim.job_id,
            extra={"event": "callback.unstored", "job": claim, "provider_job_id": result.provider_job_id},
        )
        return _refuse(service, name, "unavailable", 503, "unavailable", "could not store the callback; please retry")
    log.info(
        "%s callback for job %s: %s (%s)",
        name,
        claim.job_id,
        result.status,
        outcome,
        extra={"event": f"callback.{outcome.value}", "job": claim, "provider_job_id": result.provider_job_id},
    )
    service.metrics.callbacks.labels(name, outcome.value, "").inc()
    service.faults.trip("callback.stored")
    return JSONResponse({"ok": True, "effect": outcome.value}, background=BackgroundTask(_after_ack, service))


def _refuse(service: Service, provider: str, reason: str, status: int, code: str, detail: str) -> Response:
    """The error answer, counted in the metrics under `reason` (a fixed word: never text from the request)."""
    service.metrics.callbacks.labels(provider, "refused", reason).inc()
    return error(status, code, detail)


async def _after_ack(service: Service) -> None:
    service.faults.trip("callback.acked")
    service.wake_all()
