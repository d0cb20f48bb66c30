"""Reading one setting from the environment: the value, or a SettingsError that names the variable and says what it
must be. `receiver/settings.py` reads each REELHOOK_* variable through these."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit


class SettingsError(Exception):
    """A setting is missing or wrong; the message names it."""


class Secret:
    def __init__(self, value: str) -> None:
        self._value = value

    def __str__(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


def url(environ: Mapping[str, str], name: str, default: str) -> str:
    value = (environ.get(name) or default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name} must be an http(s) URL, got {value!r}")
    return value


def whole(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SettingsError(f"{name} must be a whole number above 0, got {raw!r}")
    return int(raw)


def flag(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be 1 or 0, got {value!r}")


def number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {raw!r}")
    return value


def address(environ: Mapping[str, str], name: str) -> tuple[str, int] | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    host, _, port = raw.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{name} must be host:port, such as 127.0.0.1:9464, got {raw!r}")
    return host, int(port)


def choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    """One of `choices`, in any case (returned as spelt there)."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise SettingsError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, got {raw!r}")


def addresses(environ: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    addresses = []
    for part in filter(None, (part.strip() for part in raw.split(","))):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name} must be host:port[,host:port...], such as 127.0.0.1:20241, got {part!r}")
        addresses.append(part)
    return tuple(addresses)


def positive(environ: Mapping[str, str], name: str, default: float) -> float:
    value = number(environ, name, default)
    if value <= 0:
        raise SettingsError(f"{name} must be a number of seconds above 0, got {environ.get(name)!r}")
    return value
