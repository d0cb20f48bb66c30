"""Secrets never appear in the log or the API: hook secrets, the API token, provider keys, webhook secrets, and each
job's hook token (and so its hook URL) -- in any form they could take there: as they are, percent-encoded (WaveSpeed
is sent the hook URL as `?webhook=`, which httpx percent-encodes), or escaped inside JSON."""

from __future__ import annotations

import json
import re
import socket
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import pytest

from receiver.serving import running
from receiver.settings import Settings
from submitter.simulators.registry import SIMULATORS
from tests.e2e.conftest import API_TOKEN, SECRET, TT_KEY
from tests.faults.conftest import crash_rig

pytestmark = pytest.mark.anyio


DATABASE_PASSWORD = "pg-pass/0123+abc"  # a slash and a plus: it has a percent-encoded form in a URL


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or ''}:{quote(password, safe='')}@{parts.hostname or ''}"
    return urlunsplit(parts._replace(netloc=netloc + (f":{parts.port}" if parts.port else "")))


def encodings(secret: str) -> set[str]:
    """Every form `secret` can take in a log line or an answer."""
    percent = {quote(secret), quote(secret, safe=""), quote_plus(secret)}  # a path, a query value, a form field
    percent |= {re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), form) for form in percent}  # %2f is valid too
    escaped = json.dumps(secret)[1:-1]
    return {secret, escaped, escaped.replace("/", "\\/")} | percent


def leaks(secrets: dict[str, str], text: str) -> list[tuple[str, str]]:
    """(which secret, in what form) for each one found in `text`."""
    return [(name, form) for name, secret in secrets.items() for form in sorted(encodings(secret)) if form in text]


async def test_no_secret_reaches_the_log_or_the_api(
    tmp_path: Path, sock: socket.socket, database_url: str | None
) -> None:
    sims = {name: cls(api_key=TT_KEY, delay=0.05) for name, cls in SIMULATORS.items()}
    if database_url is not None:
        # A shared database's address may hold its password. The test server trusts local connections, so any
        # password is accepted and one that must not be shown can be given.
        database_url = with_password(database_url, DATABASE_PASSWORD)
    async with AsyncExitStack() as stack:
        urls = {name: await stack.enter_async_context(running(sim.app)) for name, sim in sims.items()}
        rig = await stack.enter_async_context(
            crash_rig(tmp_path, sock, sims, urls, rules="", database_url=database_url)  # type: ignore[arg-type]
        )
        async with rig.serving():
            answers = []
            for provider in SIMULATORS:
                body = {"provider": provider, "prompt": "p", "image_url": "https://img.example/a.png"}
                answers.append((await rig.api.post("/api/jobs", json=body)).text)
            await rig.settle(len(SIMULATORS))
            answers.append((await rig.api.get("/api/jobs")).text)
            answers.append((await rig.api.get("/api/jobs", headers={"Authorization": "Bearer wrong"})).text)
    hook_urls = {name: [job.hook_url for job in sim.jobs() if job.hook_url] for name, sim in sims.items()}
    assert all(len(urls) == 1 for urls in hook_urls.values()), hook_urls  # one job each, each told its hook URL
    [wavespeed_submit] = [s for s in sims["wavespeed"].submissions if s.job_id]
    assert wavespeed_submit.query["webhook"] == hook_urls["wavespeed"][0]  # sent percent-encoded in the query
    secrets = {
        "REELHOOK_SECRET": SECRET,
        "REELHOOK_API_TOKEN": API_TOKEN,
        "provider API key": TT_KEY,
        "notify secret": rig.notify_secret,
        "wavespeed webhook secret": sims["wavespeed"].webhook_secret,  # type: ignore[attr-defined]
    }
    if database_url is not None:
        secrets["database password"] = DATABASE_PASSWORD
        assert "database: PostgreSQL" in rig.log.read_text()  # the service was given, and used, the address
    for name, [url] in hook_urls.items():
        secrets[f"{name} hook URL"] = url
        secrets[f"{name} hook token"] = urlsplit(url).path.split("/")[3]  # /hooks/{provider}/{token}[/callback]
    log = rig.log.read_text()
    assert "fetched the wavespeed webhook secret" in log and "succeeded (applied)" in log  # the log is not empty
    assert leaks(secrets, log) == []
    assert [(i, leak) for i, answer in enumerate(answers) for leak in leaks(secrets, answer)] == []
    assert "/hooks/" not in log  # a hook URL carries its job's token


def test_settings_print_secrets_masked() -> None:
    settings = Settings.from_env(
        {"REELHOOK_SECRET": SECRET, "REELHOOK_API_TOKEN": API_TOKEN, "REELHOOK_TTAPI_API_KEY": TT_KEY,
         "REELHOOK_TTAPI_BASE_URL": "http://127.0.0.1:9", "REELHOOK_WAVESPEED_WEBHOOK_SECRET": "whsec_abc"}
    )  # fmt: skip
    shown = repr(settings)
    assert "**********" in shown
    for secret in (SECRET, API_TOKEN, TT_KEY, "whsec_abc"):
        assert secret not in shown


@pytest.mark.parametrize(
    "line",
    [
        "sent http://h/hooks/p/t0k+n?x=1",  # as is
        "sent http://h/?webhook=http%3A%2F%2Fh%2Fhooks%2Fp%2Ft0k%2Bn",  # a query value (quote, safe="")
        "sent http://h/?webhook=http%3a%2f%2fh%2fhooks%2fp%2ft0k%2bn",  # the same, lower-case hex
        "sent http%3A//h/hooks/p/t0k%2Bn",  # a path (quote keeps the slashes)
        'body {"hook": "http:\\/\\/h\\/hooks\\/p\\/t0k+n"}',  # JSON with escaped slashes
    ],
)
def test_a_leak_is_found_in_each_encoding(line: str) -> None:
    assert leaks({"hook URL": "http://h/hooks/p/t0k+n"}, line) != []
    assert leaks({"hook URL": "http://h/hooks/p/other"}, line) == []
