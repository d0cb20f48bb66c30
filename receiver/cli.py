"""The `reelhook` command: `serve` runs the service, `rules check` reads a rules file; the other commands
(receiver/client.py) talk to a running service over its API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

import anyio

from receiver import logs
from receiver.client import ApiError, add_client_commands
from receiver.completion import SHELLS, completion_script
from receiver.process import StartError, describe_bind_error, handle_signals, lock_data_dir
from receiver.rules import RuleError, RuleSet, check_rules_file
from receiver.serving import bind_socket, engine, make_server, run, running, socket_url
from receiver.settings import Secret, Settings, SettingsError
from receiver.startup import startup_lines, unknown_variable_warnings

if TYPE_CHECKING:
    from starlette.applications import Starlette

log = logging.getLogger("reelhook")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:  # before the arguments are read, --json is only a word among them
        return _fail(
            exc.parser.format_usage() + f"{exc.parser.prog}: error: {exc}", "usage", str(exc), "--json" in argv, 2
        )
    as_json = getattr(args, "json", False)
    try:
        return int(args.run(args, environ) or 0)
    except (SettingsError, RuleError, StartError) as exc:
        return _fail(f"reelhook: {exc}", ERRORS[type(exc)], str(exc), as_json, 2)
    except ApiError as exc:
        return _fail(f"reelhook: {exc}", exc.error, exc.detail, as_json, 1)


ERRORS: dict[type[Exception], str] = {
    SettingsError: "invalid_setting",
    RuleError: "invalid_rules",
    StartError: "cannot_start",
}


class UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    # argparse prints and exits on a wrong argument; main decides how to print it (text, or JSON under --json).
    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def _fail(text: str, error: str, detail: str, as_json: bool, code: int) -> int:
    """Print a failure on stderr (`{"error", "detail"}` under --json, as the API answers) and return the exit code."""
    print(json.dumps({"error": error, "detail": detail}) if as_json else text, file=sys.stderr)
    return code


def _version() -> str:
    try:
        return f"reelhook {metadata.version('reelhook')}"
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "reelhook (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reelhook", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the service (and the provider simulator when no key is set)")
    serve.add_argument("--json", action="store_true", help="print a refusal to start as JSON")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--fd", type=int, help="serve on an already-bound socket (file descriptor)")
    serve.set_defaults(run=_serve)

    add_client_commands(commands)

    rules = commands.add_parser("rules", help="rules file tools").add_subparsers(required=True, metavar="COMMAND")
    check = rules.add_parser("check", help="validate a rules file without starting the service")
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(run=_rules_check)

    completion = commands.add_parser("completion", help="print a shell completion script (bash or zsh)")
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(run=lambda args, environ: print(completion_script(parser, args.shell), end=""))
    return parser


# -- serve ----------------------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    with _settings_and_logging(environ) as (settings, redaction), lock_data_dir(settings.data_dir):
        # One server per data dir (the lock); a folder it cannot use is said here.
        try:
            settings = settings.with_local_secrets()
        except OSError as exc:
            raise StartError(
                f"REELHOOK_DATA_DIR {settings.data_dir} cannot be used ({exc}): point it at a folder you can write"
            ) from None
        redaction.add(_secrets(settings))
        rules = RuleSet.load(settings.rules_path) if settings.rules_path else RuleSet.empty()  # refuse before binding
        if args.fd is not None:
            sock = socket.socket(fileno=args.fd)
            sock.setblocking(False)
        else:
            try:
                sock = bind_socket(args.host, args.port)
            except OSError as exc:
                raise describe_bind_error(exc, args.host, args.port) from None
        public_url_from = "REELHOOK_PUBLIC_URL"
        if settings.discover_public_url or not environ.get("REELHOOK_PUBLIC_URL"):  # empty reads as unset too
            # With discovery this stays the local URL: people and simulators use it, paid jobs the tunnel's.
            settings = replace(settings, public_url=socket_url(sock))
            public_url_from = "the bound socket; set REELHOOK_PUBLIC_URL to the tunnel's URL for real providers"
        with sock:
            run(_serve_async, settings, rules, sock, public_url_from)  # on uvloop when it is installed
        log.info("stopped", extra={"event": "service.stopped"})
    return 0


@contextmanager
def _settings_and_logging(environ: Mapping[str, str]) -> Iterator[tuple[Settings, logs.Redaction]]:
    """The settings, with logging set up as they say for the block. A typo'd variable may be why from_env refuses,
    so the unknown ones are named either way: in the default format when the settings cannot be read."""
    warnings = unknown_variable_warnings(environ)
    try:
        settings = Settings.from_env(environ)
    except SettingsError:
        with logs.configured():
            for warning in warnings:
                log.warning("%s", warning, extra={"event": "settings.unknown_variable"})
        raise
    with logs.configured(settings.log_format, settings.log_level) as redaction:
        for warning in warnings:
            log.warning("%s", warning, extra={"event": "settings.unknown_variable"})
        yield settings, redaction


def _secrets(settings: Settings) -> list[Secret | str | None]:
    """Every secret the settings hold, for the log's redaction: the hook secrets, the API token, the notify secret,
    each provider's key and webhook secret, the database's password and the bucket's secret key."""
    found: list[Secret | str | None] = [*settings.secrets, settings.api_token, settings.notify_secret]
    for provider in settings.providers.values():
        found += [provider.api_key, provider.webhook_secret]
    if settings.database_url is not None:  # the URL, and its password on its own
        found += [settings.database_url, urlsplit(str(settings.database_url)).password]
    if settings.media_s3 is not None:
        found.append(settings.media_s3.secret_access_key)
    return found


async def _serve_async(settings: Settings, rules: RuleSet, sock: socket.socket, public_url_from: str) -> None:
    from receiver.app import create_app  # the client commands need none of the server's imports
    from receiver.connections import ConnectionLimits
    from receiver.guards import paused
    from receiver.tunnel import public_url_source
    from storage import open_store
    from submitter.simulators.registry import SIMULATORS

    async with AsyncExitStack() as stack:
        trusted: set[str] = set()
        providers = dict(settings.providers)
        for name, config in settings.providers.items():
            if config.simulated and name in SIMULATORS:
                simulator = SIMULATORS[name](delay=settings.simulator_delay, state_dir=settings.data_dir / "simulators")
                url = await stack.enter_async_context(running(simulator.app))
                providers[name] = replace(config, api_key=None, base_url=url)
                trusted.add(url)
        settings = replace(settings, providers=providers)
        async with await open_store(settings.database) as store:
            pause = await paused(store)
        rule_file = (settings.rules_path, len(rules.rules)) if settings.rules_path else None
        discovered = None
        if settings.discover_public_url:  # asked once here for the line; the service asks again as jobs leave
            source = public_url_source(settings)
            try:
                found = await source.find()
            finally:
                await source.aclose()
            discovered, public_url_from = found.url, found.source
        lines = startup_lines(
            settings, public_url_from=public_url_from, rules=rule_file, paused=pause, discovered=discovered
        )
        for line in lines:
            log.info("%s", line, extra={"event": "service.settings"})
        app = create_app(settings, rules=rules, trusted_origins=trusted)
        if settings.metrics_addr is not None:
            await _serve_metrics(stack, app, settings.metrics_addr)
        log.info("reelhook listening on %s (public URL %s); data in %s", socket_url(sock), settings.public_url,
                 settings.data_dir, extra={"event": "service.listening"})  # fmt: skip
        # Signals are ours, not uvicorn's: it re-raises SIGINT after a clean stop (a traceback, exit 130).
        server = make_server(app, limits=ConnectionLimits.of(settings), log_level="info")
        log.info("event loop and HTTP parser: %s", engine(server), extra={"event": "service.engine"})
        logs.route_uvicorn(access=settings.log_level == "DEBUG")  # after the process's last uvicorn.Config
        async with anyio.create_task_group() as tg:
            tg.start_soon(handle_signals, server, settings.rules_path, lambda new: app.state.service.replace_rules(new))
            await server.serve([sock])
            tg.cancel_scope.cancel()


async def _serve_metrics(stack: AsyncExitStack, app: Starlette, address: tuple[str, int]) -> None:
    from receiver.metrics import metrics_app

    try:
        sock = bind_socket(*address)
    except OSError as exc:
        raise StartError(f"REELHOOK_METRICS_ADDR {address[0]}:{address[1]} cannot be bound: {exc.strerror}") from None
    url = await stack.enter_async_context(running(metrics_app(app), sock))
    log.info("metrics at %s/metrics (REELHOOK_METRICS_ADDR; no token there)", url, extra={"event": "service.metrics"})


def _rules_check(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    if args.json:
        ruleset = RuleSet.load(args.file)
        names = [rule.name for rule in ruleset.rules]
        print(json.dumps({"file": str(args.file), "rules": names, "max_depth": ruleset.limits.max_depth}, indent=2))
    else:
        print(check_rules_file(args.file))


if __name__ == "__main__":
    sys.exit(main())
