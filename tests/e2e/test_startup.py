"""Issue 11.5: what `reelhook serve` says as it starts. A misspelt variable is named with the one meant, and one line
each says where the public URL came from, what answers for each provider, which rules run, and whether it is paused."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from receiver import guards
from receiver.serving import socket_url
from storage import Store
from tests.e2e.conftest import server
from tests.e2e.test_process import RULES, listening

pytestmark = pytest.mark.anyio


async def test_serve_warns_of_typos_and_says_what_it_runs_with(tmp_path: Path, sock: socket.socket) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES + RULES.replace("extend-first", "extend-again"))
    data = tmp_path / "data"
    data.mkdir()
    async with await Store.open(data / "reelhook.sqlite3") as store:
        await guards.pause(store, "over budget")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REELHOOK_DATA_DIR": str(data),
        "REELHOOK_RULES": str(rules),
        "REELHOOK_TTAPI_APIKEY": "tt-key",  # meant REELHOOK_TTAPI_API_KEY: ttapi stays simulated
        "REELHOOK_PUBLICURL": "https://reelhook.example",  # meant REELHOOK_PUBLIC_URL
    }
    log = tmp_path / "server.log"
    with server(env, sock.fileno(), log):
        await listening(sock)  # the start-up lines come before the socket is served
    text = log.read_text()
    for line in [
        "WARNING reelhook: REELHOOK_PUBLICURL is not a reelhook setting and is ignored; did you mean"
        " REELHOOK_PUBLIC_URL?",
        "WARNING reelhook: REELHOOK_TTAPI_APIKEY is not a reelhook setting and is ignored; did you mean"
        " REELHOOK_TTAPI_API_KEY?",
        f"INFO reelhook: public URL {socket_url(sock)} (from the bound socket; set REELHOOK_PUBLIC_URL",
        "INFO reelhook: ttapi: no REELHOOK_TTAPI_API_KEY: the built-in ttapi simulator answers at http://127.0.0.1:",
        "INFO reelhook: apimart: no REELHOOK_APIMART_API_KEY: the built-in apimart simulator answers at",
        f"INFO reelhook: rules: {rules}, 2 rules",
        "INFO reelhook: paused (over budget): rules' follow-ups wait for `reelhook resume`",
    ]:
        assert line in text, (line, text)


async def test_serve_with_a_public_url_and_no_rules_says_so(tmp_path: Path, sock: socket.socket) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "REELHOOK_DATA_DIR": str(tmp_path / "data"),
        "REELHOOK_PUBLIC_URL": "http://127.0.0.1:9999",
    }
    log = tmp_path / "server.log"
    with server(env, sock.fileno(), log):
        await listening(sock)  # the start-up lines come before the socket is served
    text = log.read_text()
    assert "INFO reelhook: public URL http://127.0.0.1:9999 (from REELHOOK_PUBLIC_URL)" in text
    assert "INFO reelhook: rules: none (REELHOOK_RULES is not set): no follow-ups" in text
    assert "INFO reelhook: not paused: rules' follow-ups go out" in text
    assert "is not a reelhook setting" not in text
