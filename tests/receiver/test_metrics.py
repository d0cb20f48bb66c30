"""`/metrics`: behind the token on the main port, or alone on REELHOOK_METRICS_ADDR; counters that move with the
work, and gauges read from the store at scrape time."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from receiver.app import create_app
from receiver.followups import FollowUps
from receiver.metrics import Metrics, metrics_app
from receiver.notify import Notifier
from receiver.rules import RuleSet
from receiver.serving import bind_socket, socket_url
from storage import NewJob, Store
from tests.e2e.conftest import deployment, server, wait_until
from tests.receiver.conftest import AUTH, NOTIFY_SECRET, Harness, make_settings, ttapi_callback
from tests.receiver.test_guards import EXTEND_ALL, NOTIFY, rules, succeed

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(harness: Harness) -> Samples:
    response = await harness.client.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


async def test_metrics_need_the_token(harness: Harness) -> None:
    assert (await harness.client.get("/metrics")).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await harness.client.get("/metrics", headers=wrong)).status_code == 401
    assert (await harness.client.get("/metrics", headers=AUTH)).status_code == 200


async def test_callbacks_submissions_and_gauges_move_with_the_work(harness: Harness) -> None:
    before = await scrape(harness)
    assert value(before, "reelhook_jobs_queued", provider="ttapi") == 0
    assert value(before, "reelhook_queue_oldest_age_seconds", queue="submissions") == 0

    # A paused service still sends a person's job: one submission, then it is in flight.
    response = await harness.client.post(
        "/api/jobs", headers=AUTH, json={"provider": "ttapi", "prompt": "p", "image_url": "https://img.example/a.png"}
    )
    assert response.status_code == 201
    job_id = response.json()["id"]

    async def sent_to_ttapi() -> bool:
        job = await harness.store.get_job(job_id)
        return job is not None and job.provider_job_id is not None

    await wait_until(sent_to_ttapi)
    sent = await scrape(harness)
    assert value(sent, "reelhook_submissions_total", provider="ttapi", outcome="submitted") == 1
    assert value(sent, "reelhook_jobs_in_flight", provider="ttapi") == 1
    assert value(sent, "reelhook_jobs_in_flight_limit", provider="ttapi") >= 1

    provider_job_id = (await harness.store.get_job(job_id)).provider_job_id  # type: ignore[union-attr]
    body = ttapi_callback(provider_job_id, videos=2)
    assert (await harness.client.post(harness.hook_path(job_id), content=body)).status_code == 200
    assert (await harness.client.post(harness.hook_path(job_id), content=body)).status_code == 200
    assert (await harness.client.post("/hooks/ttapi/not-a-token", content=body)).status_code == 403

    async def both_failed() -> bool:  # the videos are on a refused loopback port
        return value(await scrape(harness), "reelhook_downloads_total", result="failed") == 2

    await wait_until(both_failed)
    after = await scrape(harness)
    assert value(after, "reelhook_callbacks_total", provider="ttapi", result="applied", reason="") == 1
    assert value(after, "reelhook_callbacks_total", provider="ttapi", result="duplicate", reason="") == 1
    assert value(after, "reelhook_callbacks_total", provider="ttapi", result="refused", reason="token") == 1
    assert value(after, "reelhook_downloads_total", result="failed") == 2
    assert value(after, "reelhook_jobs_in_flight", provider="ttapi") == 0

    # Gauges are read from the store at scrape time: a job recorded behind the service's back shows up, its age too.
    await harness.client.post("/api/pause", headers=AUTH, json={"reason": "hold"})
    held, _ = await harness.store.create_job(NewJob("ttapi", "extend", {"index": 0}, parent_id=job_id, rule="r"))
    with closing(sqlite3.connect(harness.db_path)) as db, db:
        db.execute("UPDATE jobs SET created_at = created_at - 3600 WHERE id = ?", (held.id,))
    waiting = await scrape(harness)
    assert value(waiting, "reelhook_jobs_queued", provider="ttapi") == 1
    assert 3600 <= value(waiting, "reelhook_queue_oldest_age_seconds", queue="submissions") < 3700


async def test_lookups_are_counted_by_outcome(harness: Harness) -> None:
    late = await harness.submitted_job("tt-late")
    lost = await harness.submitted_job("tt-lost")
    with closing(sqlite3.connect(harness.db_path)) as db, db:
        db.execute("UPDATE jobs SET lookup_at = 0")  # both deadlines have come
        db.execute("UPDATE jobs SET sent_at = sent_at - 2 * 86400 WHERE id = ?", (lost,))  # past its give-up time
    assert await harness.app.state.service.reconciler.run_once() == 2
    samples = await scrape(harness)
    # The fake peer answers a fetch with a submit answer, which does not settle the job: looked up, still open.
    assert value(samples, "reelhook_lookups_total", provider="ttapi", outcome="open") == 1
    assert value(samples, "reelhook_lookups_total", provider="ttapi", outcome="lost") == 1
    assert value(samples, "reelhook_lookups_total", provider="ttapi", outcome="settled") == 0
    assert (await harness.store.get_job(late)).lost_at is None  # type: ignore[union-attr]


async def test_metrics_addr_serves_them_alone_and_not_on_the_main_port(tmp_path: Path) -> None:
    settings = replace(make_settings(tmp_path), metrics_addr=("127.0.0.1", 9464))
    async with await Store.open(tmp_path / "reelhook.sqlite3") as store:
        app = create_app(settings, store=store, rules=RuleSet.empty())
        async with app.router.lifespan_context(app):
            main = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
            side = httpx.AsyncClient(transport=httpx.ASGITransport(app=metrics_app(app)), base_url="http://metrics")
            async with main, side:
                assert (await main.get("/metrics", headers=AUTH)).status_code == 404
                response = await side.get("/metrics")  # no token on the separate, local address
                assert response.status_code == 200
                assert value(parse(response.text), "reelhook_jobs_in_flight", provider="ttapi") == 0


async def test_serve_starts_the_metrics_address_from_the_environment(tmp_path: Path) -> None:
    sock = bind_socket()
    with socket.socket() as probe:  # a free port for the metrics address
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REELHOOK_DATA_DIR": str(tmp_path / "data"),
        "REELHOOK_API_TOKEN": "serve-token",
        "REELHOOK_METRICS_ADDR": f"127.0.0.1:{port}",
    }
    with server(env, sock.fileno(), tmp_path / "server.log"):
        async with httpx.AsyncClient(timeout=10) as http:

            async def answers() -> bool:
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(answers)
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            assert 'reelhook_jobs_in_flight{provider="ttapi"}' in text
            main = await http.get(socket_url(sock) + "/metrics", headers={"Authorization": "Bearer serve-token"})
            assert main.status_code == 404
    sock.close()


async def test_downloads_count_bytes_and_time(tmp_path: Path) -> None:
    async with deployment(tmp_path) as deployed:
        job = await deployed.submit()

        async def downloaded() -> bool:
            videos = (await deployed.job(job["id"]))["videos"]
            return bool(videos) and all(video["status"] == "downloaded" for video in videos)

        await wait_until(downloaded)
        sizes = [video["bytes"] for video in (await deployed.job(job["id"]))["videos"]]
        response = await deployed.api.get("/metrics")
        assert response.status_code == 200
        samples = parse(response.text)
    assert value(samples, "reelhook_downloads_total", result="downloaded") == len(sizes) == 4
    assert value(samples, "reelhook_download_bytes_total") == sum(sizes)
    assert value(samples, "reelhook_download_duration_seconds_count") == 4
    assert value(samples, "reelhook_submissions_total", provider="ttapi", outcome="submitted") == 1
    assert value(samples, "reelhook_callbacks_total", provider="ttapi", result="applied", reason="") == 1


async def test_follow_ups_and_notifications_are_counted(tmp_path: Path) -> None:
    metrics = Metrics()
    async with await Store.open(tmp_path / "reelhook.sqlite3") as store:
        root, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "p", "image_url": "https://i/a.png"}))
        await succeed(store, root.id)
        ruleset = rules("max_jobs_per_root = 2", EXTEND_ALL, NOTIFY)  # room for one of the four extends
        await FollowUps(store, ruleset, metrics=metrics).run_once()
        answers = iter([httpx.Response(500), httpx.Response(200)])
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda request: next(answers))) as http:
            notifier = Notifier(store, http, NOTIFY_SECRET, retry_base=0.0, metrics=metrics)
            assert await notifier.run_once() == 1
            assert await notifier.run_once() == 1
    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "reelhook_followups_total", outcome="fired") == 1
    assert value(samples, "reelhook_followups_total", outcome="stopped_by_limit") == 3
    assert value(samples, "reelhook_notifications_total", result="failed") == 1
    assert value(samples, "reelhook_notifications_total", result="delivered") == 1


def test_the_grafana_dashboard_uses_the_metrics_reelhook_exposes() -> None:
    dashboard = json.loads((Path(__file__).parents[2] / "deploy" / "grafana-reelhook.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\breelhook_\w+", expr)}
    metrics = Metrics()
    metrics.callbacks.labels("ttapi", "applied", "").inc()  # a labelled counter shows no series until it has one
    metrics.submission("ttapi", "submitted")
    metrics.lookups.labels("ttapi", "open").inc()
    metrics.downloads.labels("downloaded").inc()
    metrics.followups.labels("fired").inc()
    metrics.notifications.labels("delivered").inc()
    metrics.gauges._providers = {"ttapi": (0, 1, 0, 0)}
    exposed = {name for name, _ in parse(generate_latest(metrics.registry).decode())}
    assert used and used <= exposed, used - exposed
    assert {"reelhook_jobs_in_flight", "reelhook_queue_oldest_age_seconds", "reelhook_callbacks_total"} <= used
