"""Notifications: the rules' `notify`, delivered as Standard Webhooks until the receiver answers 2xx.

A notification is recorded in the same transaction as the event that caused it (see `FollowUps`), so it cannot be
lost to a crash; its body and `webhook-id` are fixed then, so every retry sends the same message and a receiver can
drop a duplicate by id. Each attempt is signed afresh (the timestamp is part of what is signed):

    webhook-id: msg_…
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>

where the key is the base64 part of a `whsec_…` secret, decoded (the Standard Webhooks scheme; WaveSpeed's inbound
variant differs, see submitter/providers/wavespeed.py). Retries back off up to ten minutes and never give up: a
receiver that was down for a day gets its backlog when it returns. Each notification is claimed before it is sent
(`Store.claim_notifications`), so two instances never send the same one at once. Notification URLs come from the
user's own rules file, so they are not held to the download guard's public-address rule: a local service is a normal
target.

"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging

import anyio
import httpx

from receiver.metrics import Metrics
from storage import Notification, StoreProtocol
from submitter.backoff import next_attempt_at

log = logging.getLogger("reelhook.notify")

MAX_BACKOFF = 600.0
CONCURRENCY = 8
# Seconds a claimed batch stays hidden from other instances: more than its slowest send takes (each at most the
# client's timeout, CONCURRENCY at a time). A notifier that dies releases its batch when this runs out.
NOTIFY_LEASE = 600.0


def sign_webhook(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one message under a `whsec_` secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class Notifier:
    def __init__(
        self,
        store: StoreProtocol,
        http: httpx.AsyncClient,
        secret: str,
        *,
        retry_base: float = 2.0,
        metrics: Metrics | None = None,
    ) -> None:
        base64.b64decode(secret.removeprefix("whsec_"), validate=True)  # a bad secret fails at start-up, not later
        self._store = store
        self._http = http
        self._secret = secret
        self._retry_base = retry_base
        self._metrics = metrics or Metrics()
        self._clock = store.clock

    async def next_due(self) -> float | None:
        return await self._store.next_notification_at()

    async def run_once(self) -> int:
        due = await self._store.claim_notifications(limit=100, lease=NOTIFY_LEASE)
        limiter = anyio.CapacityLimiter(CONCURRENCY)

        async def send(notification: Notification) -> None:
            async with limiter:
                await self._send(notification)

        async with anyio.create_task_group() as tg:
            for notification in due:
                tg.start_soon(send, notification)
        return len(due)

    async def _send(self, notification: Notification) -> None:
        timestamp = int(self._clock())
        headers = {
            "content-type": "application/json",
            "webhook-id": notification.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(self._secret, notification.message_id, timestamp, notification.body),
        }
        try:
            response = await self._http.post(notification.url, content=notification.body, headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            log.info("notification %s (rule %s) delivered to %s", notification.message_id, notification.rule,
                     notification.url, extra={"event": "notify.delivered", "message_id": notification.message_id,
                                              "rule": notification.rule})  # fmt: skip
            await self._store.record_notification(
                notification.id, error=None, retry_at=None, claim=notification.claim_id
            )
            self._metrics.notifications.labels("delivered").inc()
            return
        retry_at = next_attempt_at(notification.attempts + 1, self._clock(), base=self._retry_base, cap=MAX_BACKOFF)
        log.warning("notification %s to %s failed (%s); retrying in %.0fs", notification.message_id,
                    notification.url, error, retry_at - self._clock(),
                    extra={"event": "notify.failed", "message_id": notification.message_id,
                           "rule": notification.rule})  # fmt: skip
        if not await self._store.record_notification(
            notification.id, error=error, retry_at=retry_at, claim=notification.claim_id
        ):
            log.warning("notification %s: its claim was taken over (the lease ran out); its failure is not recorded",
                        notification.message_id, extra={"event": "notify.lease_lost",
                                                        "message_id": notification.message_id})  # fmt: skip
            return
        self._metrics.notifications.labels("failed").inc()
