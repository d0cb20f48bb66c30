"""The bare comparison app for the ingest benchmark: reelhook's callback route with nothing behind it.

`POST /hooks/{provider}/{token}` reads the body and answers 200, storing nothing, checking nothing. It is served the
way `reelhook serve` serves reelhook (`receiver.serving.make_server` on an inherited socket, same uvicorn settings,
log level, event loop and HTTP parser), so the difference between the two is what reelhook does per callback: the
token check, the parse, and the durable SQLite transaction, plus whatever the background work it starts costs
meanwhile.

`python -m bench.bare --fd N` serves on an already-bound socket; `bare_server()` starts that in its own process.
"""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.common import module_server
from receiver.serving import make_server, run


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def receive_callback(request: Request) -> Response:
    await request.body()
    return JSONResponse({"ok": True})


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/hooks/{provider}/{token}", receive_callback, methods=["POST"]),
        ]
    )


async def serve(sock: socket.socket) -> None:
    await make_server(create_app(), log_level="info", handle_signals=True).serve([sock])


def bare_server(sock: socket.socket, log: Path) -> Any:
    """The bare app in its own process on `sock`."""
    return module_server(["bench.bare"], sock, log)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="serve on this already-bound socket")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=args.fd)
    sock.setblocking(False)
    try:
        run(serve, sock)  # the loop and parser `reelhook serve` runs on
    finally:
        sock.close()


if __name__ == "__main__":
    main()
