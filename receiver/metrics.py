"""`/metrics`: what the service did and what waits, in Prometheus's text format.

Two kinds of numbers. What happened (callbacks, submissions, lookups, downloads, follow-ups, notifications) is counted
as it happens, by the worker or handler that did it, on the `Metrics` object the service hands it. What waits (jobs in
flight and queued per provider, the age of the oldest item of each queue) is not counted at all: it is read from the
store when Prometheus scrapes, so it is right after a restart and cannot drift from the tables. The store is async
and a collector is not, so the route reads first (`StoreGauges.refresh`) and the collector reports that reading.

Each app has its own registry, never prometheus_client's global one: two apps in one process (the tests) do not see
each other's counts. `/metrics` on the main port is behind the API token; with `REELHOOK_METRICS_ADDR` it is served
instead on that address, without a token, by `metrics_app` (keep that address local).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage import StoreProtocol

if TYPE_CHECKING:  # the service makes a Metrics: only the type goes the other way
    from receiver.service import Service

QUEUES = ("submissions", "downloads", "events", "notifications")
# Downloads run from under a second (a small file nearby) to the download deadline (REELHOOK_DOWNLOAD_DEADLINE).
DOWNLOAD_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class StoreGauges(Collector):
    """Jobs in flight, their limit, queued, overdue, per provider, and each queue's oldest item; and what jobs have
    cost: as last read.

    Spend is a counter, `reelhook_spend_total{provider,unit}`, the sum of every cost recorded (Prometheus users ask
    `increase(reelhook_spend_total[1d])` for a day's, and alert on its rate). It is read from the table at scrape
    like the gauges, not bumped in the callback handler: it survives restarts, counts each job once however often its
    result is delivered, and agrees with `GET /api/status`. Units are labels, never added together."""

    def __init__(self) -> None:
        self._providers: dict[str, tuple[int, int | None, int, int]] = {}
        self._oldest: dict[str, float | None] = {}
        self._spend: list[tuple[str, str, float]] = []

    async def refresh(self, store: StoreProtocol, limits: Mapping[str, int]) -> None:
        now = store.clock()
        midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        counts = await store.provider_counts(list(limits), since=midnight, now=now)
        self._providers = {name: (c.in_flight, limits.get(name), c.queued, c.overdue) for name, c in counts.items()}
        oldest = await store.oldest_waiting()
        self._oldest = {queue: None if at is None else max(0.0, now - at) for queue, at in oldest.items()}
        self._spend = [(spent.provider, spent.unit, spent.amount) for spent in await store.spend_totals()]

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily("reelhook_jobs_in_flight", "Jobs sent and not yet finished", labels=["provider"])
        limit = GaugeMetricFamily(
            "reelhook_jobs_in_flight_limit", "Jobs a provider may have in flight", labels=["provider"]
        )
        queued = GaugeMetricFamily("reelhook_jobs_queued", "Jobs waiting to be sent", labels=["provider"])
        overdue = GaugeMetricFamily(
            "reelhook_jobs_overdue", "Jobs in flight past their callback grace (looked up)", labels=["provider"]
        )
        for name, (flying, most, waiting, late) in sorted(self._providers.items()):
            in_flight.add_metric([name], flying)
            if most is not None:
                limit.add_metric([name], most)
            queued.add_metric([name], waiting)
            overdue.add_metric([name], late)
        oldest = GaugeMetricFamily(
            "reelhook_queue_oldest_age_seconds", "Age of the oldest item waiting in a queue (0: none)", labels=["queue"]
        )
        for queue in QUEUES:
            oldest.add_metric([queue], self._oldest.get(queue) or 0.0)
        spend = CounterMetricFamily(
            "reelhook_spend", "What jobs cost, as their providers reported it, in each provider's unit",
            labels=["provider", "unit"],
        )  # fmt: skip
        for provider, unit, amount in self._spend:
            spend.add_metric([provider, unit], amount)
        yield from (in_flight, limit, queued, overdue, oldest, spend)


class Metrics:
    """The counters the workers and handlers bump, and the gauges read at scrape time, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.callbacks = Counter(
            "reelhook_callbacks", "Callbacks received: applied, duplicate, progress, or refused (reason)",
            ["provider", "result", "reason"], registry=r,
        )  # fmt: skip
        self.submissions = Counter(
            "reelhook_submissions", "Submission attempts, by outcome (submitted, retry, unknown, failed)",
            ["provider", "outcome"], registry=r,
        )  # fmt: skip
        self.lookups = Counter(
            "reelhook_lookups", "Deadline lookups of late jobs, by outcome (settled, open, waiting, lost, gone)",
            ["provider", "outcome"], registry=r,
        )  # fmt: skip
        self.downloads = Counter(
            "reelhook_downloads", "Download attempts, by result (downloaded, retried, failed)", ["result"], registry=r
        )
        self.download_bytes = Counter("reelhook_download_bytes", "Bytes of videos downloaded", registry=r)
        self.download_seconds = Histogram(
            "reelhook_download_duration_seconds", "Time to download one video", buckets=DOWNLOAD_BUCKETS, registry=r
        )
        self.followups = Counter(
            "reelhook_followups", "Rule follow-ups, by outcome (fired, stopped_by_limit)", ["outcome"], registry=r
        )
        self.notifications = Counter(
            "reelhook_notifications", "Notification deliveries, by result (delivered, failed)", ["result"], registry=r
        )
        self.gauges = StoreGauges()
        r.register(self.gauges)

    def submission(self, provider: str, outcome: str) -> None:
        """The submitter's hook (submitter/ cannot import this module, so it is handed this method)."""
        self.submissions.labels(provider, outcome).inc()

    async def render(self, store: StoreProtocol, limits: Mapping[str, int]) -> bytes:
        await self.gauges.refresh(store, limits)
        return generate_latest(self.registry)


async def metrics_response(service: Service) -> Response:
    """The service's metrics, the gauges read from its store just now."""
    limits = {name: endpoint.slots for name, endpoint in service.endpoints.items()}
    return Response(await service.metrics.render(service.store, limits), media_type=CONTENT_TYPE_LATEST)


def metrics_app(main: Starlette) -> Starlette:
    """`/metrics` alone, without a token, for `REELHOOK_METRICS_ADDR`: the metrics of `main`'s service (503 until it
    has started)."""

    async def serve_metrics(request: Request) -> Response:
        service: Service | None = getattr(main.state, "service", None)
        if service is None:
            return Response("starting\n", status_code=503, media_type="text/plain")
        return await metrics_response(service)

    return Starlette(routes=[Route("/metrics", serve_metrics, methods=["GET"])])
