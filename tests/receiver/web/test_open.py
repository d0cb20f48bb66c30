"""`reelhook open` against real uvicorn: the link it prints signs a browser in, once."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from receiver.cli import main
from receiver.web.auth import COOKIE
from tests.e2e.conftest import API_TOKEN, deployment

pytestmark = pytest.mark.anyio


async def test_open_prints_a_one_time_sign_in_link(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with deployment(tmp_path) as deployed:
        env = {"REELHOOK_SERVER_URL": deployed.url, "REELHOOK_API_TOKEN": API_TOKEN}
        assert await anyio.to_thread.run_sync(main, ["open"], env) == 0
        url = capsys.readouterr().out.strip()
        assert url.startswith(deployed.url + "/login/")
        async with httpx.AsyncClient() as browser:
            signed_in = await browser.get(url)
            assert signed_in.status_code == 303 and COOKIE in browser.cookies
            overview = await browser.get(deployed.url + "/")
            assert overview.status_code == 200 and 'id="overview"' in overview.text
            browser.cookies.clear()
            assert (await browser.get(url)).status_code == 401
        assert await anyio.to_thread.run_sync(main, ["open"], env | {"REELHOOK_API_TOKEN": "wrong"}) == 1
