"""Which engine runs comes from one setting, REELHOOK_DATABASE_URL; nothing else changes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from receiver.app import create_app
from receiver.rules import RuleSet
from receiver.settings import Secret, Settings, SettingsError
from storage import Store, StoreError, open_store
from storage.postgres import PostgresStore
from tests.receiver.conftest import AUTH, FakeTTAPI, make_settings

pytestmark = pytest.mark.anyio

PG_URL = "postgresql://reelhook:hunter2@db.example:5432/reelhook"
GIVEN = {
    "REELHOOK_SECRET": "a-shared-secret-0123456789",
    "REELHOOK_API_TOKEN": "a-shared-token",
    "REELHOOK_NOTIFY_SECRET": "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
}


def test_the_default_is_the_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({"REELHOOK_DATA_DIR": str(tmp_path)})
    assert settings.database == str(tmp_path / "reelhook.sqlite3") and not settings.shared_database


def test_a_postgresql_url_is_taken_and_never_printed(tmp_path: Path) -> None:
    settings = Settings.from_env({"REELHOOK_DATA_DIR": str(tmp_path), "REELHOOK_DATABASE_URL": PG_URL})
    assert settings.database == PG_URL and settings.shared_database
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize("url", ["mysql://reelhook:hunter2@db/reelhook", "sqlite:///tmp/x.db", "db.example:5432"])
def test_any_other_database_url_is_refused_by_name(url: str) -> None:
    with pytest.raises(SettingsError, match="REELHOOK_DATABASE_URL must be a postgresql:// URL") as refused:
        Settings.from_env({"REELHOOK_DATABASE_URL": url})
    assert "hunter2" not in str(refused.value)


def test_a_shared_database_refuses_generated_secrets(tmp_path: Path) -> None:
    environ = {"REELHOOK_DATA_DIR": str(tmp_path), "REELHOOK_DATABASE_URL": PG_URL}
    given_token = environ | {"REELHOOK_API_TOKEN": GIVEN["REELHOOK_API_TOKEN"]}
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(given_token).with_local_secrets()
    assert str(refused.value).endswith("set REELHOOK_SECRET, REELHOOK_NOTIFY_SECRET")
    assert "several instances share" in str(refused.value)
    assert list(tmp_path.iterdir()) == []  # nothing generated
    settings = Settings.from_env(environ | GIVEN).with_local_secrets()
    assert str(settings.api_token) == GIVEN["REELHOOK_API_TOKEN"] and list(tmp_path.iterdir()) == []


async def test_open_store_picks_the_engine_from_the_address(database_url: str, engine: str) -> None:
    async with await open_store(database_url) as store:
        assert isinstance(store, PostgresStore if engine == "postgres" else Store)


async def test_a_database_that_cannot_be_reached_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="PostgreSQL"):
        await PostgresStore.open(f"postgresql://nobody@/reelhook?host={tmp_path}", timeout=1)


async def test_the_app_keeps_its_jobs_in_the_database_the_setting_names(
    database_url: str, engine: str, tmp_path: Path
) -> None:
    url = Secret(database_url) if engine == "postgres" else None
    settings = make_settings(tmp_path, database_url=url)  # SQLite: the default file, which is database_url
    async with httpx.AsyncClient(transport=httpx.MockTransport(FakeTTAPI())) as http:
        app = create_app(settings, http=http, rules=RuleSet.empty())  # no store given: the app opens its own
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                body = {"provider": "ttapi", "prompt": "a cat", "image_url": "https://img.example/a.png"}
                created = await client.post("/api/jobs", headers=AUTH, json=body)
                assert created.status_code == 201
    async with await open_store(database_url) as store:
        job = await store.get_job(created.json()["id"])
    assert job is not None and job.params["prompt"] == "a cat"
