"""The life of a `reelhook serve` process: one data dir per server, signals, and the mistakes a person makes when
starting one, each said in one line that names the fix.

- SIGINT (Ctrl-C) and SIGTERM: one line, uvicorn's graceful shutdown, exit 0. A second Ctrl-C stops at once.
- SIGHUP: re-read the rules file. A broken file is refused with its message and the old rules stay.
- A data dir is served by one process at a time: `reelhook.lock` in it is held (flock) while serving, so a second
  `make run` says which process has it instead of sharing the SQLite file and the media folder.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import IO

import anyio
import uvicorn

from receiver.rules import RuleError, RuleSet

log = logging.getLogger("reelhook")


class StartError(Exception):
    """The service cannot start; the message names the thing and the fix."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold `data_dir/reelhook.lock` for the life of the process (the returned file); StartError if another holds it
    or the folder cannot be used."""
    if data_dir.exists() and not data_dir.is_dir():
        raise StartError(f"REELHOOK_DATA_DIR {data_dir} is a file, not a folder: point it at a folder you can write")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = open(data_dir / "reelhook.lock", "a+")  # noqa: SIM115 - held until the process ends
    except OSError as exc:
        raise StartError(
            f"REELHOOK_DATA_DIR {data_dir} cannot be used ({exc.strerror or exc}): point it at a folder you can write"
        ) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise StartError(
            f"another reelhook (pid {holder}) is serving {data_dir}: stop it first, or give this one its own"
            " REELHOOK_DATA_DIR"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def describe_bind_error(exc: OSError, host: str, port: int) -> StartError:
    if exc.errno == errno.EADDRINUSE:
        return StartError(f"port {port} on {host} is in use (another reelhook?): stop it, or serve on --port N")
    if exc.errno == errno.EACCES:
        return StartError(f"not allowed to listen on port {port} on {host}: use a port above 1023 (--port N)")
    return StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


async def handle_signals(
    server: uvicorn.Server, rules_path: Path | None, replace_rules: Callable[[RuleSet], None]
) -> None:
    """Until cancelled: stop `server` on SIGINT/SIGTERM, re-read the rules on SIGHUP."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                try:
                    reload_rules(rules_path, replace_rules)
                except AttributeError:  # still starting: the service is not there yet
                    log.warning(
                        "SIGHUP while starting: send it again once reelhook is listening",
                        extra={"event": "rules.reload_early"},
                    )
            elif server.should_exit:
                log.warning("stopping now", extra={"event": "service.stopping_now"})
                server.force_exit = True
            else:
                log.info(
                    "stopping (%s): finishing what is in progress",
                    signal.Signals(signum).name,
                    extra={"event": "service.stopping"},
                )
                server.should_exit = True


def reload_rules(rules_path: Path | None, replace_rules: Callable[[RuleSet], None]) -> None:
    if rules_path is None:
        log.info(
            "SIGHUP: no rules file is configured (REELHOOK_RULES); nothing to re-read",
            extra={"event": "rules.reload_skipped"},
        )
        return
    try:
        rules = RuleSet.load(rules_path)
    except (RuleError, OSError) as exc:
        log.error("SIGHUP: kept the rules in use; %s", exc, extra={"event": "rules.reload_failed"})
        return
    replace_rules(rules)
    log.info("SIGHUP: rules re-read from %s: %d rules", rules_path, len(rules.rules), extra={"event": "rules.reloaded"})


def instance_name(data_dir: Path) -> str:
    """This instance's name in the claims it makes (storage/claims.py): kept in `data_dir/instance`, made once. One
    live server per data dir (the lock above), so no two live instances share a name, and a restarted one knows which
    claims on a shared database were its own: those it takes back at once, instead of waiting out their leases."""
    path = data_dir / "instance"
    try:
        name = path.read_text().strip()
    except FileNotFoundError:
        name = ""
    if not (name.isascii() and name.isalnum()):
        name = secrets.token_hex(6)
        path.write_text(name + "\n")
    return name
