"""The fast event loop and HTTP parser: used when installed (they are runtime dependencies), h11 on request."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from receiver.connections import ConnectionLimits, HeadGuard
from receiver.serving import engine, make_server, run


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_run_is_on_uvloop() -> None:
    assert run(_loop_module).startswith("uvloop")


@pytest.mark.anyio
async def test_servers_parse_with_httptools_guarded_like_h11() -> None:
    limits = ConnectionLimits(header_timeout=3.0, max_connections=7)
    server = make_server(Starlette(), limits=limits)
    protocol = server.config.http
    assert isinstance(protocol, type) and issubclass(protocol, HttpToolsProtocol) and issubclass(protocol, HeadGuard)
    assert protocol.limits == limits
    assert engine(server).endswith("+ httptools")

    h11 = make_server(Starlette(), limits=limits, http="h11").config.http
    assert isinstance(h11, type) and issubclass(h11, H11Protocol) and issubclass(h11, HeadGuard)
    assert engine(make_server(Starlette(), http="h11")).endswith("+ h11")
