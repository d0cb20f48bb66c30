"""What `reelhook serve` says about its settings as it starts: a warning for each REELHOOK_* variable nothing reads,
and one line each for what it runs with."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from receiver.settings import Settings

# -- what start-up says about the settings -------------------------------------------------------------------------
# A typo'd variable (`_APIKEY` for `_API_KEY`) is not an error from_env can see: it reads the names it knows, and the
# misspelt one silently leaves a default in place (the simulator instead of the real provider). So start-up names
# every REELHOOK_* variable that nothing reads. The known names are not a second list to keep in step: they are
# the names from_env asks for, recorded by running it once over an empty environment, plus the client's own.

CLIENT_VARIABLES = frozenset({"REELHOOK_SERVER_URL"})  # receiver/client.py: where the CLI finds the server


class _Recording(Mapping[str, str]):
    """An empty environment that remembers every name asked of it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@functools.cache
def known_variables() -> frozenset[str]:
    """Every REELHOOK_* variable reelhook reads: Settings.from_env's, and the client's."""
    environ = _Recording()
    Settings.from_env(environ)
    return frozenset(environ.asked) | CLIENT_VARIABLES


def unknown_variable_warnings(environ: Mapping[str, str]) -> list[str]:
    """A warning for each REELHOOK_* variable that nothing reads, naming the closest known one."""
    known = sorted(known_variables())
    warnings = []
    for name in sorted(environ):
        if not name.startswith("REELHOOK_") or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)  # every name shares REELHOOK_
        hint = f"did you mean {close[0]}?" if close else "see the README for the settings"
        warnings.append(f"{name} is not a reelhook setting and is ignored; {hint}")
    return warnings


def startup_lines(
    settings: Settings,
    *,
    public_url_from: str,
    rules: tuple[Path, int] | None,
    paused: str | None,
    discovered: str | None = None,
) -> list[str]:
    """What `reelhook serve` runs with, one line each: the public URL and where it came from, each provider, the
    rules file, the kill switch. `settings.providers` are the ones in use (a simulator's base URL filled in). With
    REELHOOK_PUBLIC_URL=auto, `discovered` is what the tunnel agent answered at start-up (None: nothing found, and
    `public_url_from` says where it looked)."""
    if not settings.discover_public_url:
        lines = [f"public URL {settings.public_url} (from {public_url_from})"]
    elif discovered is not None:
        auto = "REELHOOK_PUBLIC_URL=auto: asked again as paid jobs leave"
        lines = [f"public URL {discovered} (from {public_url_from}; {auto})"]
    else:
        nothing = f"REELHOOK_PUBLIC_URL=auto: no ngrok/cloudflared tunnel found at {public_url_from}"
        lines = [
            f"public URL: none yet ({nothing}): paid jobs wait for one; simulators call back on {settings.public_url}"
        ]
    for name, provider in settings.providers.items():
        variable = f"REELHOOK_{name.upper()}_API_KEY"
        if provider.simulated:
            lines.append(f"{name}: no {variable}: the built-in {name} simulator answers at {provider.base_url}")
        else:
            lines.append(f"{name}: key from {variable}, sending to {provider.base_url}")
    if settings.database_url is None:
        lines.append(f"database: SQLite file {settings.database_path} (set REELHOOK_DATABASE_URL to share one)")
    else:
        where = urlsplit(str(settings.database_url))  # host and database name only: the URL may hold a password
        lines.append(f"database: PostgreSQL {where.hostname or 'local socket'}{where.path}, shared by every instance")
    if rules is None:
        lines.append("rules: none (REELHOOK_RULES is not set): no follow-ups")
    else:
        path, count = rules
        lines.append(f"rules: {path}, {count} rule{'' if count == 1 else 's'}")
    if settings.media_s3 is None:
        lines.append(f"media: {settings.media_dir} (REELHOOK_MEDIA_URL is not set)")
    else:
        endpoint = settings.media_s3.endpoint or "AWS"
        lines.append(f"media: {settings.media_s3.url} at {endpoint} (from REELHOOK_MEDIA_URL)")
    if paused is None:
        lines.append("not paused: rules' follow-ups go out")
    else:
        lines.append(f"paused ({paused}): rules' follow-ups wait for `reelhook resume`")
    return lines
