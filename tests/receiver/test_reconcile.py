"""Missed-callback recovery: overdue jobs are looked up at their provider's fetch endpoint, at each deadline, and
the answer is applied like a callback. A real store on tmp_path; the providers are one fake peer answering the
seeds' shapes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from receiver.app import create_app
from receiver.reconcile import Reconciler, ReconcileReport
from receiver.rules import RuleSet
from receiver.settings import ProviderSettings, Secret, Settings, SettingsError
from storage import EventType, JobStatus, NewJob, Store
from submitter.providers import PROVIDERS
from submitter.worker import Endpoint
from tests.receiver.conftest import AUTH, make_settings
from tests.submitter import test_acedata_contract as ace
from tests.submitter import test_apimart_contract as mart
from tests.submitter import test_ttapi_contract as tt
from tests.submitter import test_ttapi_image_contract as tt_image
from tests.submitter import test_wavespeed_contract as ws

pytestmark = pytest.mark.anyio

GRACE = 600.0
START = 1_000_000.0
ACE_TASK = "b726a27a-f379-4d91-b569-cfe4b7b299ee"
TT_JOB = "943583cb-08f4-4077-ad1e-f1bfc6c1191a"


@dataclass(frozen=True)
class Seed:
    """One provider's fetch endpoint and the seed's answer for a finished job."""

    provider_job_id: str
    method: str
    path: str
    answer: bytes
    videos: tuple[str, ...]
    auth: tuple[str, str]


SEEDS = {
    "ttapi": Seed(TT_JOB, "GET", "/midjourney/video/fetch", tt.SEED_CALLBACK, tt.SEED_VIDEOS, ("TT-API-KEY", "k")),
    "acedata": Seed(
        ACE_TASK, "POST", "/midjourney/tasks",
        json.dumps(ace.task_record(response=json.loads(ace.SEED_CALLBACK), finished_at=1751818520.5)).encode(),
        ace.SEED_VIDEOS, ("authorization", "Bearer k"),
    ),
    "wavespeed": Seed(
        ws.TASK, "GET", f"/api/v3/predictions/{ws.TASK}/result",
        json.dumps({"code": 200, "message": "success", "data": ws.SIGNED_CALLBACK}).encode(),
        (ws.VIDEO,), ("authorization", "Bearer k"),
    ),
    "apimart": Seed(
        mart.TASK, "GET", f"/v1/tasks/{mart.TASK}", b'{"code":200,"data":' + mart.DOC_CALLBACK + b"}",
        ("https://upload.apimart.ai/f/video/0.mp4",), ("authorization", "Bearer k"),
    ),
}  # fmt: skip


@dataclass
class FakeProviders:
    """Every provider's fetch endpoint: records each request, answers from `answers[(method, path)]`."""

    answers: dict[tuple[str, str], tuple[int, bytes] | Exception] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    on_request: Callable[[httpx.Request], None] = lambda request: None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.on_request(request)
        answer = self.answers.get((request.method, request.url.path), (404, b'{"message":"not found"}'))
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer[0], content=answer[1], headers={"content-type": "application/json"})

    def answer(self, seed: Seed, body: bytes | None = None, status_code: int = 200) -> None:
        self.answers[(seed.method, seed.path)] = (status_code, seed.answer if body is None else body)


@dataclass
class Setup:
    store: Store
    providers: FakeProviders
    reconciler: Reconciler
    now: list[float]
    woken: list[None]
    db_path: Path

    async def overdue(self, provider: str, provider_job_id: str | None, action: str = "generate") -> str:
        """A job the provider took (or, with no id, whose submit answer was lost), then its grace passes."""
        params = {"prompt": "p", "image_url": "https://img.example/a.png"} if action == "generate" else {}
        job, _ = await self.store.create_job(NewJob(provider, action, params))
        await self.store.claim_submission(job.id, look_up_after=GRACE)
        if provider_job_id is not None:
            await self.store.record_submitted(job.id, provider_job_id)
        self.now[0] += GRACE + 1
        return job.id

    async def status(self, job_id: str) -> JobStatus:
        job = await self.store.get_job(job_id)
        assert job is not None
        return job.status

    def callbacks(self, job_id: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.db_path)) as db:
            rows = db.execute("SELECT body, headers, status, effect FROM callbacks WHERE job_id = ?", (job_id,))
            return [(body, json.loads(headers), status, effect) for body, headers, status, effect in rows]

    def reconciled_at(self, job_id: str) -> float | None:
        with closing(sqlite3.connect(self.db_path)) as db:
            value = db.execute("SELECT reconciled_at FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            return float(value) if value is not None else None


@asynccontextmanager
async def reconciling(tmp_path: Path) -> AsyncIterator[Setup]:
    now = [START]
    db_path = tmp_path / "reelhook.sqlite3"
    providers = FakeProviders()
    endpoints = {
        name: Endpoint(PROVIDERS[name], f"https://{name}.test", "k", callback_grace=GRACE) for name in PROVIDERS
    }
    woken: list[None] = []
    async with (
        await Store.open(db_path, clock=lambda: now[0]) as store,
        httpx.AsyncClient(transport=httpx.MockTransport(providers)) as http,
    ):
        reconciler = Reconciler(store, http, endpoints, on_recorded=lambda: woken.append(None))
        yield Setup(store, providers, reconciler, now, woken, db_path)


@pytest.mark.parametrize("provider", list(SEEDS))
async def test_an_overdue_job_is_looked_up_once_and_settled_like_a_callback(tmp_path: Path, provider: str) -> None:
    seed = SEEDS[provider]
    async with reconciling(tmp_path) as setup:
        setup.providers.answer(seed)
        job_id = await setup.overdue(provider, seed.provider_job_id)

        assert await setup.reconciler.reconcile() == ReconcileReport(looked_up=1, settled=1)

        [request] = setup.providers.requests
        assert (request.method, request.url.host, request.url.path) == (seed.method, f"{provider}.test", seed.path)
        assert request.headers[seed.auth[0]] == seed.auth[1]
        assert seed.provider_job_id in str(request.url) + request.content.decode()
        job = await setup.store.get_job(job_id)
        assert job is not None and job.status is JobStatus.SUCCEEDED
        assert tuple(video.url for video in job.videos) == seed.videos
        assert [(e.type, e.job_id) for e in await setup.store.pending_events()][-1] == (EventType.JOB_SUCCEEDED, job_id)
        [(body, headers, status, effect)] = setup.callbacks(job_id)  # stored in the inbox, verbatim
        assert body == seed.answer and (status, effect) == ("succeeded", "applied")
        assert headers[0] == ["x-reelhook-source", "fetch"]
        assert setup.woken == [None]

        # Looked up once: a second pass, even much later, asks nothing.
        setup.now[0] += 10 * GRACE
        assert await setup.reconciler.reconcile() == ReconcileReport(looked_up=0, settled=0)
        assert len(setup.providers.requests) == 1 and len(setup.callbacks(job_id)) == 1


async def test_the_job_is_marked_before_the_request_leaves(tmp_path: Path) -> None:
    seed = SEEDS["ttapi"]
    async with reconciling(tmp_path) as setup:
        setup.providers.answer(seed)
        job_id = await setup.overdue("ttapi", seed.provider_job_id)
        seen: list[float | None] = []
        setup.providers.on_request = lambda request: seen.append(setup.reconciled_at(job_id))  # a crash here…
        await setup.reconciler.reconcile()
        assert seen == [START + GRACE + 1]  # …would still find the job asked about, committed


async def test_a_ttapi_image_job_is_fetched_from_the_image_api(tmp_path: Path) -> None:
    image_id = json.loads(tt_image.SEED_IMAGE_CALLBACK)["jobId"]
    async with reconciling(tmp_path) as setup:
        setup.providers.answers[("GET", "/midjourney/v1/fetch")] = (200, tt_image.SEED_IMAGE_CALLBACK)
        job_id = await setup.overdue("ttapi", image_id, action="imagine")
        assert await setup.reconciler.reconcile() == ReconcileReport(1, 1)
        assert [r.url.params["jobId"] for r in setup.providers.requests] == [image_id]
        job = await setup.store.get_job(job_id)
        assert job is not None and tuple(video.url for video in job.videos) == tt_image.SEED_TILES


@pytest.mark.parametrize(
    ("provider", "answer", "error"),
    [
        ("ttapi", tt.SEED_CALLBACK.replace(b'"SUCCESS"', b'"FAILED"').replace(b'"success"', b'"prompt violation"'),
         "prompt violation"),
        ("acedata", json.dumps(ace.task_record(response=ace.FAILED_CALLBACK, finished_at=1.0)).encode(),
         "forbidden: the prompt was refused by moderation"),
        ("apimart", b'{"code":200,"data":' + mart.DOC_FAILED_EN.replace(b"task_xxx", mart.TASK.encode()) + b"}",
         "prompt rejected by moderation"),
    ],
)  # fmt: skip
async def test_a_failed_answer_fails_the_job(tmp_path: Path, provider: str, answer: bytes, error: str) -> None:
    seed = SEEDS[provider]
    async with reconciling(tmp_path) as setup:
        setup.providers.answer(seed, answer)
        job_id = await setup.overdue(provider, seed.provider_job_id)
        assert await setup.reconciler.reconcile() == ReconcileReport(1, 1)
        job = await setup.store.get_job(job_id)
        assert job is not None and job.status is JobStatus.FAILED and job.error == error and job.videos == ()
        assert [(e.type, e.job_id) for e in await setup.store.pending_events()][-1] == (EventType.JOB_FAILED, job_id)
        assert [(status, effect) for _, _, status, effect in setup.callbacks(job_id)] == [("failed", "applied")]


async def test_a_running_answer_is_asked_again_later_backing_off(tmp_path: Path) -> None:
    seed = SEEDS["wavespeed"]
    running = dict(ws.SIGNED_CALLBACK, status="processing", outputs=[])
    async with reconciling(tmp_path) as setup:
        setup.providers.answer(seed, json.dumps({"code": 200, "message": "success", "data": running}).encode())
        job_id = await setup.overdue("wavespeed", seed.provider_job_id)
        assert await setup.reconciler.run_once() == 1  # its deadline came
        assert await setup.status(job_id) is JobStatus.SUBMITTED and setup.callbacks(job_id) == []
        assert setup.woken == []

        # Not asked again before its next deadline, twice the grace later; then again, at twice that.
        deadlines = []
        for _ in range(3):
            due = await setup.reconciler.next_due()
            assert due is not None
            deadlines.append(due - setup.now[0])
            setup.now[0] = due - 1
            assert await setup.reconciler.run_once() == 0
            setup.now[0] = due
            assert await setup.reconciler.run_once() == 1
        assert deadlines == [2 * GRACE, 4 * GRACE, 3600.0]  # doubling, at most hourly
        assert len(setup.providers.requests) == 4 and await setup.status(job_id) is JobStatus.SUBMITTED

        setup.providers.answer(seed)  # it finished since: the next deadline's lookup settles it
        setup.now[0] = await setup.reconciler.next_due() or 0.0
        assert await setup.reconciler.run_once() == 1
        assert await setup.status(job_id) is JobStatus.SUCCEEDED
        assert await setup.reconciler.next_due() is None  # nothing in flight: nothing is due, nothing wakes


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("connection refused"), (500, b"<html>oops</html>"), (404, b'{"message":"task not found"}'),
     (200, b"not json")],
    ids=["unreachable", "5xx", "404", "junk"],
)  # fmt: skip
async def test_a_failed_fetch_leaves_the_job(tmp_path: Path, failure: tuple[int, bytes] | Exception) -> None:
    seed = SEEDS["apimart"]
    async with reconciling(tmp_path) as setup:
        setup.providers.answers[(seed.method, seed.path)] = failure
        job_id = await setup.overdue("apimart", seed.provider_job_id)
        other_id = await setup.overdue("ttapi", TT_JOB)  # one failure does not stop the others
        setup.providers.answer(SEEDS["ttapi"])
        assert await setup.reconciler.reconcile() == ReconcileReport(2, 1)
        assert await setup.status(job_id) is JobStatus.SUBMITTED and setup.callbacks(job_id) == []
        assert await setup.status(other_id) is JobStatus.SUCCEEDED
        assert await setup.reconciler.run_once() == 0  # asked again at its next deadline, not before
        assert len(setup.providers.requests) == 2


async def test_an_answer_about_another_provider_job_is_refused(tmp_path: Path) -> None:
    seed = SEEDS["ttapi"]
    async with reconciling(tmp_path) as setup:
        setup.providers.answer(seed)  # names 943583cb…, not the job's own id
        job_id = await setup.overdue("ttapi", "tt-someone-else")
        assert await setup.reconciler.reconcile() == ReconcileReport(1, 0)
        assert await setup.status(job_id) is JobStatus.SUBMITTED and setup.callbacks(job_id) == []


async def test_a_job_within_its_grace_is_not_asked(tmp_path: Path) -> None:
    seed = SEEDS["acedata"]
    async with reconciling(tmp_path) as setup:
        setup.providers.answer(seed)
        job_id = await setup.overdue("acedata", seed.provider_job_id)
        setup.now[0] -= 2  # one second short of its grace
        assert await setup.reconciler.reconcile() == ReconcileReport(0, 0)
        assert setup.providers.requests == [] and setup.reconciled_at(job_id) is None
        setup.now[0] += 2
        assert await setup.reconciler.reconcile() == ReconcileReport(1, 1)


async def test_a_job_without_a_provider_id_is_not_asked(tmp_path: Path) -> None:
    async with reconciling(tmp_path) as setup:
        setup.providers.answer(SEEDS["ttapi"])
        job_id = await setup.overdue("ttapi", None)  # the submit answer was lost: no id to fetch by
        setup.now[0] += 100 * GRACE
        assert await setup.reconciler.reconcile() == ReconcileReport(0, 0)
        assert setup.providers.requests == [] and await setup.status(job_id) is JobStatus.SUBMITTED


async def test_passes_at_once_ask_each_job_once(tmp_path: Path) -> None:
    async with reconciling(tmp_path) as setup:
        setup.providers.answer(SEEDS["ttapi"])
        setup.providers.answer(SEEDS["apimart"])
        await setup.overdue("ttapi", TT_JOB)
        await setup.overdue("apimart", mart.TASK)
        reports: list[ReconcileReport] = []

        async def run() -> None:
            reports.append(await setup.reconciler.reconcile())

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            tg.start_soon(run)
        assert sorted(reports, key=lambda r: r.looked_up) == [ReconcileReport(0, 0), ReconcileReport(2, 2)]
        assert len(setup.providers.requests) == 2


@asynccontextmanager
async def service(setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    """The app on `setup`'s store and fake providers, its lifespan running (so the start-up pass runs)."""
    providers = {
        name: ProviderSettings(Secret("k"), f"https://{name}.test", callback_grace=GRACE)
        for name in ("ttapi", "apimart")
    }
    settings = make_settings(setup.db_path.parent, providers=providers)
    async with httpx.AsyncClient(transport=httpx.MockTransport(setup.providers)) as http:
        app = create_app(settings, store=setup.store, http=http, rules=RuleSet.empty())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield client


async def test_the_service_looks_up_overdue_jobs_at_start_up(tmp_path: Path) -> None:
    async with reconciling(tmp_path) as setup:
        setup.providers.answer(SEEDS["ttapi"])
        job_id = await setup.overdue("ttapi", TT_JOB)
        async with service(setup) as client:
            with anyio.fail_after(5):
                while await setup.status(job_id) is not JobStatus.SUCCEEDED:
                    await anyio.sleep(0.01)
            assert [r.url.path for r in setup.providers.requests] == ["/midjourney/video/fetch"]
            assert (await client.post("/api/reconcile", headers=AUTH)).json() == {
                "looked_up": 0,
                "settled": 0,
                "lost": 0,
            }
            assert len(setup.providers.requests) == 1


async def test_a_failing_start_up_pass_does_not_stop_the_service(tmp_path: Path) -> None:
    async with reconciling(tmp_path) as setup:
        job_id = await setup.overdue("ttapi", TT_JOB)
        setup.providers.answers[("GET", "/midjourney/video/fetch")] = httpx.ConnectError("provider down")
        async with service(setup) as client:
            with anyio.fail_after(5):
                while setup.reconciled_at(job_id) is None:
                    await anyio.sleep(0.01)
            assert (await client.get("/healthz")).status_code == 200
            assert await setup.status(job_id) is JobStatus.SUBMITTED


async def test_post_api_reconcile_needs_the_token_and_reports_counts(tmp_path: Path) -> None:
    async with reconciling(tmp_path) as setup:
        setup.providers.answer(SEEDS["apimart"])
        setup.providers.answer(SEEDS["ttapi"])
        # Both recorded before the service starts (a job queued later would race its submitter): the first is
        # overdue at start-up, the second only once the clock moves on.
        first_id = await setup.overdue("apimart", mart.TASK)
        job_id = await setup.overdue("ttapi", TT_JOB)
        setup.now[0] -= GRACE  # the second is 1 s old
        async with service(setup) as client:
            with anyio.fail_after(5):  # the start-up pass ran, and saw only the first
                while await setup.status(first_id) is not JobStatus.SUCCEEDED:
                    await anyio.sleep(0.01)
                # and every worker it woke has looked and gone back to sleep: moved before that, the clock would make
                # the second job due for the lookups worker, which would then answer it before the request below
                await client._transport.app.state.service.wait_idle()  # type: ignore[attr-defined]
            setup.now[0] += GRACE
            refused = await client.post("/api/reconcile", headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401 and len(setup.providers.requests) == 1
            answer = await client.post("/api/reconcile", headers=AUTH)
            assert answer.status_code == 200 and answer.json() == {"looked_up": 1, "settled": 1, "lost": 0}
            assert await setup.status(job_id) is JobStatus.SUCCEEDED
            assert [r.url.host for r in setup.providers.requests] == ["apimart.test", "ttapi.test"]


def test_each_providers_grace_is_a_setting() -> None:
    settings = Settings.from_env({"REELHOOK_WAVESPEED_CALLBACK_GRACE": "120", "REELHOOK_APIMART_CALLBACK_GRACE": "0"})
    graces = {name: config.callback_grace for name, config in settings.providers.items()}
    assert graces == {"ttapi": 900.0, "acedata": 900.0, "wavespeed": 120.0, "apimart": 0.0}
    with pytest.raises(SettingsError, match="REELHOOK_TTAPI_CALLBACK_GRACE must be a number of seconds, got '15m'"):
        Settings.from_env({"REELHOOK_TTAPI_CALLBACK_GRACE": "15m"})
    with pytest.raises(SettingsError, match="REELHOOK_ACEDATA_CALLBACK_GRACE must not be negative"):
        Settings.from_env({"REELHOOK_ACEDATA_CALLBACK_GRACE": "-1"})
