from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from receiver.app import create_app
from receiver.rules import RuleSet
from receiver.settings import ProviderSettings, Secret, Settings
from storage import NewJob, Store

SECRET = "test-secret-0123456789abcdef"
NOTIFY_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes
API_TOKEN = "test-api-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@dataclass
class FakeTTAPI:
    """A provider peer for in-process tests: records what it is sent, answers like the seed's submit example."""

    requests: list[httpx.Request] = field(default_factory=list)
    next_id: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.next_id += 1
        return httpx.Response(200, json={"status": "SUCCESS", "message": "", "data": {"jobId": f"tt-{self.next_id}"}})


@dataclass
class Harness:
    app: Starlette
    client: httpx.AsyncClient
    store: Store
    settings: Settings
    provider: FakeTTAPI
    db_path: Path

    async def submitted_job(self, provider_job_id: str = "tt-1", **params: Any) -> str:
        """A job the provider has accepted, recorded without waking any worker."""
        job, _ = await self.store.create_job(
            NewJob("ttapi", "generate", {"prompt": "a cat", "image_url": "https://img.example/a.png", **params})
        )
        await self.store.claim_submission(job.id)
        await self.store.record_submitted(job.id, provider_job_id)
        return job.id

    def hook_path(self, job_id: str, provider: str = "ttapi") -> str:
        signer = self.app.state.service.signer
        return f"/hooks/{provider}/{signer.sign_hook_token(job_id, provider)}"

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every committed row of every table, read through a second connection."""
        with closing(sqlite3.connect(self.db_path)) as db:
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in tables}


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "public_url": "http://testserver",
        "secrets": (Secret(SECRET),),
        "api_token": Secret(API_TOKEN),
        "notify_secret": Secret(NOTIFY_SECRET),
        "providers": {"ttapi": ProviderSettings(Secret("tt-key"), "http://ttapi.test")},
    }
    return Settings(**(values | overrides))


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    db_path = tmp_path / "reelhook.sqlite3"
    provider = FakeTTAPI()
    async with (
        await Store.open(db_path, busy_timeout_ms=50) as store,
        httpx.AsyncClient(transport=httpx.MockTransport(provider)) as http,
    ):
        settings = make_settings(tmp_path)
        app = create_app(settings, store=store, http=http, rules=RuleSet.empty())
        async with app.router.lifespan_context(app):
            await app.state.service.wait_idle()  # start from rest: the start-up drain must not race the test
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield Harness(app, client, store, settings, provider, db_path)


def ttapi_callback(job_id: str, status: str = "SUCCESS", videos: int = 4, **extra: Any) -> bytes:
    """The seed's "Async callback & fetch json" shape. The videos sit on a loopback port that the download guard
    refuses without resolving or connecting, so in-process tests never send traffic anywhere."""
    urls = [f"http://127.0.0.1:9/video/{job_id}/{i}.mp4" for i in range(videos)]
    data = {"action": "generate", "jobId": job_id, "progress": "100", "prompt": "a cat", "quota": "30",
            "videos": urls if status == "SUCCESS" else [], "hookUrl": "https://example.test/hook"}  # fmt: skip
    return json.dumps({"status": status, "message": "success", "jobId": job_id, "data": data, **extra}).encode()
