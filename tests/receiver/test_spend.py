"""Spend in sight (issue 11): what a provider says a job cost is kept on the job, once however often its result
arrives, and summed per provider, unit and UTC day in `GET /api/status`, `/metrics` and the job's JSON. A provider
that reports no cost leaves the job's cost empty, not 0."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from receiver.app import create_app
from receiver.rules import RuleSet
from receiver.settings import ProviderSettings, Secret
from storage import Cost, NewJob, Store
from submitter.providers import PROVIDERS
from tests.receiver.conftest import AUTH, FakeTTAPI, Harness, make_settings, ttapi_callback
from tests.receiver.test_metrics import scrape, value
from tests.receiver.test_reconcile import SEEDS, reconciling
from tests.receiver.web.test_dashboard import sign_in
from tests.submitter import test_acedata_contract as ace
from tests.submitter import test_apimart_contract as mart

pytestmark = pytest.mark.anyio

DAY = 86400.0
# The documented bodies with their media moved to a port the download guard refuses without resolving a name or
# connecting: in-process tests send no traffic anywhere.
MART_CALLBACK = mart.DOC_CALLBACK.replace(b"https://upload.apimart.ai", b"http://127.0.0.1:9")
ACE_CALLBACK = ace.SEED_CALLBACK.replace(b"https://storage.fonedis.cc", b"http://127.0.0.1:9")
EXPECTED = {
    "ttapi": {"quota": 30.0},  # seed 000: "quota": "30"
    "apimart": {"usd": 0.006, "credits": 0.06},  # the webhook page's example: "cost": 0.006, "credits_cost": 0.06
    "acedata": None,
    "wavespeed": None,
}


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """The receiver in-process with TTAPI, APIMart and AceData configured; no worker sends anything here."""
    db_path = tmp_path / "reelhook.sqlite3"
    providers = {
        name: ProviderSettings(Secret(f"{name}-key"), f"http://{name}.test") for name in ("ttapi", "apimart", "acedata")
    }
    async with (
        await Store.open(db_path, busy_timeout_ms=50) as store,
        httpx.AsyncClient(transport=httpx.MockTransport(FakeTTAPI())) as http,
    ):
        settings = make_settings(tmp_path, providers=providers)
        app = create_app(settings, store=store, http=http, rules=RuleSet.empty())
        async with app.router.lifespan_context(app):
            await app.state.service.wait_idle()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield Harness(app, client, store, settings, FakeTTAPI(), db_path)


async def sent(store: Store, provider: str, provider_job_id: str) -> str:
    """A job its provider has taken, recorded straight into the store (no worker is woken)."""
    params = {"prompt": "a cat", "image_url": "https://img.example/a.png"}
    job, _ = await store.create_job(NewJob(provider, "generate", params))
    await store.claim_submission(job.id)
    await store.record_submitted(job.id, provider_job_id)
    return job.id


def cost_rows(db_path: Path) -> list[tuple[str, str, float]]:
    with closing(sqlite3.connect(db_path)) as db:
        return db.execute("SELECT job_id, unit, amount FROM job_costs ORDER BY job_id, unit").fetchall()


async def test_costs_are_kept_on_the_job_once_and_summed_in_status_and_metrics(harness: Harness) -> None:
    client, store = harness.client, harness.store
    # All sent before any callback: a callback wakes the submitter, which would claim a job still queued.
    tt_jobs = [await sent(store, "ttapi", f"tt-{n}") for n in range(2)]
    mart_job = await sent(store, "apimart", mart.TASK)
    ace_job = await sent(store, "acedata", json.loads(ACE_CALLBACK)["task_id"])
    for n, job_id in enumerate(tt_jobs):
        body = ttapi_callback(f"tt-{n}", videos=1)
        for _ in range(3):  # TTAPI notifies up to three times: the job's cost is set once, never added
            assert (await client.post(harness.hook_path(job_id), content=body)).status_code == 200
    # Redelivered with other bytes (a fresh `message`): not the same body, still the same job's one cost.
    again = ttapi_callback("tt-0", videos=1, message="ok")
    assert (await client.post(harness.hook_path(tt_jobs[0]), content=again)).status_code == 200

    path = harness.hook_path(mart_job, "apimart") + "/callback"
    assert (await client.post(path, content=MART_CALLBACK)).status_code == 200
    wrapped = b'{"code":200,"data":' + MART_CALLBACK + b"}"  # the same result as the task query wraps it
    assert (await client.post(path, content=wrapped)).status_code == 200

    assert (await client.post(harness.hook_path(ace_job, "acedata"), content=ACE_CALLBACK)).status_code == 200

    jobs = {job_id: (await client.get(f"/api/jobs/{job_id}", headers=AUTH)).json() for job_id in [*tt_jobs, mart_job]}
    assert [jobs[job_id]["cost"] for job_id in tt_jobs] == [{"quota": 30.0}, {"quota": 30.0}]
    assert jobs[mart_job]["cost"] == {"usd": 0.006, "credits": 0.06}
    ace_view = (await client.get(f"/api/jobs/{ace_job}", headers=AUTH)).json()
    assert ace_view["status"] == "succeeded" and ace_view["cost"] is None  # AceData says nothing: no cost, not 0
    assert (await store.get_job(mart_job)).costs == (Cost(0.06, "credits"), Cost(0.006, "usd"))  # type: ignore[union-attr]
    assert len(cost_rows(harness.db_path)) == 4  # two TTAPI jobs, APIMart in two units, nothing for AceData

    status = (await client.get("/api/status", headers=AUTH)).json()
    [today] = {item["day"] for item in status["spend"]}
    assert sorted((s["provider"], s["unit"], s["amount"], s["jobs"]) for s in status["spend"]) == [
        ("apimart", "credits", 0.06, 1), ("apimart", "usd", 0.006, 1), ("ttapi", "quota", 60.0, 2),
    ]  # fmt: skip
    assert today == status["spend"][0]["day"] and len(today) == 10
    spent = {p["provider"]: p["spent_today"] for p in status["providers"]}
    assert spent == {"ttapi": {"quota": 60.0}, "apimart": {"usd": 0.006, "credits": 0.06}, "acedata": {}}
    assert (await client.get("/api/overview", headers=AUTH)).json()["spend"] == status["spend"]

    samples = await scrape(harness)
    assert value(samples, "reelhook_spend_total", provider="ttapi", unit="quota") == 60.0
    assert value(samples, "reelhook_spend_total", provider="apimart", unit="usd") == 0.006
    assert value(samples, "reelhook_spend_total", provider="apimart", unit="credits") == 0.06
    assert not [key for key in samples if key[0] == "reelhook_spend_total" and ("provider", "acedata") in key[1]]


async def test_the_job_page_shows_its_cost(harness: Harness) -> None:
    job_id = await sent(harness.store, "ttapi", "tt-1")
    await harness.client.post(harness.hook_path(job_id), content=ttapi_callback("tt-1", videos=1))
    await sign_in(harness)
    page = await harness.client.get(f"/partials/jobs/{job_id}")
    assert page.status_code == 200, page.text
    assert '<dt>cost</dt><dd id="cost">30 quota</dd>' in page.text


async def test_the_overview_shows_what_each_provider_spent_today(harness: Harness) -> None:
    tt_job = await sent(harness.store, "ttapi", "tt-1")
    await harness.client.post(harness.hook_path(tt_job), content=ttapi_callback("tt-1", videos=1))
    await sign_in(harness)
    page = await harness.client.get("/partials/overview")
    assert page.status_code == 200, page.text
    row = page.text[page.text.index('<tr data-provider="ttapi">') :].split("</tr>")[0]
    assert "<td data-spent-today>30 quota</td>" in row
    row = page.text[page.text.index('<tr data-provider="acedata">') :].split("</tr>")[0]
    assert "<td data-spent-today>none reported</td>" in row


@pytest.mark.parametrize("provider", list(SEEDS))
async def test_a_lookup_keeps_the_cost_and_a_late_callback_does_not_add_to_it(tmp_path: Path, provider: str) -> None:
    seed = SEEDS[provider]
    async with reconciling(tmp_path) as setup:
        setup.providers.answer(seed)
        job_id = await setup.overdue(provider, seed.provider_job_id)
        await setup.reconciler.reconcile()
        job = await setup.store.get_job(job_id)
        assert job is not None and {cost.unit: cost.amount for cost in job.costs} == (EXPECTED[provider] or {})

        # The callback that was late arrives after all: the job has its result and its cost already.
        result = PROVIDERS[provider].parse_fetch_response(200, seed.answer)
        await setup.store.record_callback(job_id, provider, body=b"late", headers=[], result=result)
        spend = await setup.store.spend_by_day(since=0)
        assert {s.unit: (s.amount, s.jobs) for s in spend} == {
            unit: (amount, 1) for unit, amount in (EXPECTED[provider] or {}).items()
        }


async def test_spend_is_summed_per_utc_day_provider_and_unit(tmp_path: Path) -> None:
    async with reconciling(tmp_path) as setup:
        setup.now[0] = 20000 * DAY - 60  # a minute before a UTC midnight (2024-10-04 begins)
        seed = SEEDS["ttapi"]
        setup.providers.answer(seed)
        first = await setup.overdue("ttapi", seed.provider_job_id)  # the grace takes it past midnight
        await setup.reconciler.reconcile()
        setup.now[0] += DAY
        second = await setup.overdue("ttapi", "tt-2")
        answer = seed.answer.replace(seed.provider_job_id.encode(), b"tt-2").replace(b'"30"', b'"45"')
        setup.providers.answer(seed, answer)
        await setup.reconciler.reconcile()
        mart_seed = SEEDS["apimart"]
        setup.providers.answer(mart_seed)
        await setup.overdue("apimart", mart_seed.provider_job_id)
        await setup.reconciler.reconcile()
        assert [c.amount for j in (first, second) for c in (await setup.store.get_job(j)).costs] == [30.0, 45.0]  # type: ignore[union-attr]

        spend = await setup.store.spend_by_day(since=0)
        assert [(s.day, s.provider, s.unit, s.amount, s.jobs) for s in spend] == [
            ("2024-10-05", "apimart", "credits", 0.06, 1),
            ("2024-10-05", "apimart", "usd", 0.006, 1),
            ("2024-10-05", "ttapi", "quota", 45.0, 1),
            ("2024-10-04", "ttapi", "quota", 30.0, 1),
        ]
        assert [(s.day, s.amount) for s in await setup.store.spend_by_day(since=20001 * DAY)] == [
            ("2024-10-05", 0.06), ("2024-10-05", 0.006), ("2024-10-05", 45.0),
        ]  # fmt: skip
        totals = {(s.provider, s.unit): (s.amount, s.jobs) for s in await setup.store.spend_totals()}
        assert totals == {
            ("ttapi", "quota"): (75.0, 2),
            ("apimart", "usd"): (0.006, 1),
            ("apimart", "credits"): (0.06, 1),
        }
