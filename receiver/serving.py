"""Running ASGI apps on uvicorn inside our own event loop: the service itself, the simulator beside it, and the
servers the end-to-end tests start.

Sockets are bound before uvicorn starts, so the address is known up front and a client can connect as soon as the
socket listens (connections wait in the backlog); `running()` returns only once uvicorn says `started`.

Every server made here gets the connection limits of receiver/connections.py (head deadline, keep-alive, cap on
open connections): `reelhook serve` passes the ones its settings name, everything else gets the defaults.

The fast event loop and parser, when installed (`make run` installs both): uvloop for the process's loop (`run()`),
httptools for HTTP. uvicorn's own `loop="auto"` only applies to `uvicorn.run()`, which makes its own loop; here the
loop is ours (anyio's), so `run()` asks anyio for uvloop's. On reelhook's callback route the two cut the CPU of a
request to ×0.77–0.87 (shared notes, measured with wrk); `make bench` reports which loop and parser it ran on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import TypeVar, TypeVarTuple, Unpack

import anyio
import uvicorn
from starlette.types import ASGIApp

from receiver.connections import ConnectionLimits, Parser, parser_of

T = TypeVar("T")
Args = TypeVarTuple("Args")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed; None for asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Callable[[Unpack[Args]], Awaitable[T]], *args: *Args) -> T:
    """`anyio.run` on uvloop when it is installed, on asyncio's loop otherwise."""
    factory = loop_factory()
    return anyio.run(main, *args, backend_options={"loop_factory": factory} if factory else None)


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


def engine(server: uvicorn.Server) -> str:
    """What `server` runs on, e.g. "uvloop + httptools" (called inside the loop that will serve it)."""
    loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]
    return f"{loop} + {parser_of(server.config.http)}"


def make_server(
    app: ASGIApp,
    *,
    limits: ConnectionLimits | None = None,
    http: Parser = "auto",
    log_level: str = "warning",
    access_log: bool = False,
    handle_signals: bool = False,
) -> uvicorn.Server:
    """uvicorn with our defaults; only the process's main server handles SIGINT/SIGTERM. `http` is the parser:
    "auto" is httptools when it is installed, else h11."""
    limits = limits or ConnectionLimits()
    config = uvicorn.Config(
        app,
        http=limits.protocol(http),  # with a head deadline and a cap on connections
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
