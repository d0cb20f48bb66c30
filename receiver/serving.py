"""Running ASGI apps on uvicorn inside our own event loop: the service itself, the simulator beside it, and the
servers the end-to-end tests start.

Sockets are bound before uvicorn starts, so the address is known up front and a client can connect as soon as the
socket listens (connections wait in the backlog); `running()` returns only once uvicorn says `started`.

Every server made here gets the connection limits of receiver/connections.py (head deadline, keep-alive, cap on
open connections): `reelhook serve` passes the ones its settings name, everything else gets the defaults.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Generator

import anyio
import uvicorn
from starlette.types import ASGIApp

from receiver.connections import ConnectionLimits


class Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner (several run in one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def make_server(
    app: ASGIApp,
    *,
    limits: ConnectionLimits | None = None,
    log_level: str = "warning",
    access_log: bool = False,
    handle_signals: bool = False,
) -> uvicorn.Server:
    """uvicorn with our defaults; only the process's main server handles SIGINT/SIGTERM."""
    limits = limits or ConnectionLimits()
    config = uvicorn.Config(
        app,
        http=limits.protocol(),  # h11 (what "auto" picks without httptools) with a head deadline and a cap
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]  # uvicorn declares an int
        lifespan="on",
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config) if handle_signals else Server(config)


@contextlib.asynccontextmanager
async def running(app: ASGIApp, sock: socket.socket | None = None, **options: object) -> AsyncIterator[str]:
    """Serve `app` in the background for the duration of the block; yields its base URL. Closes `sock` after."""
    sock = sock or bind_socket()
    server = make_server(app, **options)  # type: ignore[arg-type]
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve([sock])
        finally:
            stopped.set()

    with contextlib.closing(sock):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            while not server.started:  # uvicorn offers a flag, not an event
                if stopped.is_set():
                    raise RuntimeError("server failed to start (see the log above)")
                await anyio.sleep(0.005)
            try:
                yield socket_url(sock)
            finally:
                server.should_exit = True
