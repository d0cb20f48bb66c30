"""Secrets never appear in the log or the API: hook secrets, the API token, provider keys, webhook secrets."""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from receiver.serving import running
from receiver.settings import Settings
from submitter.simulators.registry import SIMULATORS
from tests.e2e.conftest import API_TOKEN, SECRET, TT_KEY
from tests.faults.conftest import crash_rig

pytestmark = pytest.mark.anyio


async def test_no_secret_reaches_the_log_or_the_api(tmp_path: Path, sock: socket.socket) -> None:
    sims = {name: cls(api_key=TT_KEY, delay=0.05) for name, cls in SIMULATORS.items()}
    async with AsyncExitStack() as stack:
        urls = {name: await stack.enter_async_context(running(sim.app)) for name, sim in sims.items()}
        rig = await stack.enter_async_context(crash_rig(tmp_path, sock, sims, urls, rules=""))  # type: ignore[arg-type]
        async with rig.serving():
            answers = []
            for provider in SIMULATORS:
                body = {"provider": provider, "prompt": "p", "image_url": "https://img.example/a.png"}
                answers.append((await rig.api.post("/api/jobs", json=body)).text)
            await rig.settle(len(SIMULATORS))
            answers.append((await rig.api.get("/api/jobs")).text)
            answers.append((await rig.api.get("/api/jobs", headers={"Authorization": "Bearer wrong"})).text)
    notify_secret = (rig.data / "notify-secret").read_text().strip()
    wavespeed_secret = sims["wavespeed"].webhook_secret  # type: ignore[attr-defined]
    log = rig.log.read_text()
    assert "fetched the wavespeed webhook secret" in log and "succeeded (applied)" in log  # the log is not empty
    for secret in (SECRET, API_TOKEN, TT_KEY, notify_secret, wavespeed_secret):
        assert secret not in log
        assert all(secret not in answer for answer in answers)
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
