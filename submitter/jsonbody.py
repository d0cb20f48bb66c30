"""Reading JSON that someone else wrote: every body reelhook reads goes through `parse_json`.

`json.loads` trusts its input more than a server on the internet can. Nested 100,000 deep it raises RecursionError;
a 5,000-digit integer raises the interpreter's int-digit ValueError; `1e400` quietly becomes infinity and `NaN` is
accepted; and `"\\ud83d"` is valid JSON for a string that no UTF-8 encoder (SQLite, httpx, a JSONResponse) can
write. Each of those used to surface later, somewhere else, as a 500. `parse_json` refuses them up front with a
JSONBodyError that names the problem and, where it can, the field:

- Nesting is counted before parsing, by a scan of the brackets outside strings: no recursion, so no limit to hit.
- Integers longer than 40 digits, floats that overflow and NaN/Infinity are parsed into a marker by json's number
  hooks (which are not told where they are), and the marker is then found, with its path, by an iterative walk.
- Lone surrogates (a `\\udXXX` escape without its pair) depend on who wrote the body. A user of `/api/*` is told:
  `surrogates="refuse"` answers which field to fix. A provider cannot be told anything (it would only re-deliver
  the same bytes): `surrogates="replace"` turns each into U+FFFD, while the caller keeps the raw bytes as received.

The walk only runs when it has something to find (a refused number, or a surrogate escape in the text), so a
well-formed body costs one regex pass more than `json.loads` alone.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any, Literal

MAX_DEPTH = 64
MAX_INT_DIGITS = 40

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JSONBodyError(ValueError):
    """A body that is not JSON reelhook will read; the message names the problem and, where known, the field."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class _Refused:
    """What a number hook returns for a number it will not give back; the walk reports it with its path."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def parse_json(
    body: bytes | str, *, what: str, surrogates: Literal["refuse", "replace"], max_depth: int = MAX_DEPTH
) -> Any:
    """The value `body` holds, or JSONBodyError. `what` names the body in messages ("the body", "ttapi callback")."""
    text = _decode(body, what, surrogates) if isinstance(body, bytes) else body
    _check_depth(text, what, max_depth)
    refused: list[_Refused] = []
    try:
        value = json.loads(
            text,
            parse_int=lambda digits: _parse_int(digits, refused),
            parse_float=lambda digits: _parse_float(digits, refused),
            parse_constant=lambda name: _refuse(f"{name} is not a number JSON allows", refused),
        )
    except json.JSONDecodeError as exc:
        raise JSONBodyError(f"{what} is not JSON: {exc}") from None
    except RecursionError:  # unreachable after _check_depth, but a 500 is worse than a second guard
        raise JSONBodyError(f"{what} nests deeper than {max_depth} levels") from None
    if refused or _SURROGATE_ESCAPE.search(text) or _SURROGATE.search(text):
        value = _walk(value, what, surrogates)
    return value


def _decode(body: bytes, what: str, surrogates: str) -> str:
    encoding = json.detect_encoding(body)  # UTF-8 (with or without a BOM), or UTF-16/32 as json.loads allows
    # Refusing, a surrogate encoded as bytes (UTF-8 \xed\xa0\xbd) is let through, as json.loads lets it through,
    # so that the walk can name its field; any other invalid byte is refused here.
    try:
        return body.decode(encoding, "replace" if surrogates == "replace" else "surrogatepass")
    except UnicodeDecodeError as exc:
        raise JSONBodyError(f"{what} is not {encoding.upper()} (byte 0x{body[exc.start]:02x} at {exc.start})") from None


def _check_depth(text: str, what: str, max_depth: int) -> None:
    # Strings first (a bracket inside one is text), then everything that is not a bracket. A malformed body can
    # miscount here; json.loads refuses it anyway.
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    # The deepest point is the largest running sum of +1 per opening and -1 per closing bracket (all in C).
    if len(brackets) > max_depth and max(accumulate(map(_STEP.__getitem__, brackets))) > max_depth:
        raise JSONBodyError(f"{what} nests deeper than {max_depth} levels")


def _parse_int(digits: str, refused: list[_Refused]) -> int | _Refused:
    count = len(digits) - digits.startswith("-")
    if count > MAX_INT_DIGITS:
        return _refuse(f"an integer of {count} digits (at most {MAX_INT_DIGITS})", refused)
    return int(digits)


def _parse_float(digits: str, refused: list[_Refused]) -> float | _Refused:
    number = float(digits)
    if not math.isfinite(number):
        shown = digits if len(digits) <= 20 else f"{digits[:17]}..."
        return _refuse(f"{shown} is not a finite number", refused)
    return number


def _refuse(problem: str, refused: list[_Refused]) -> _Refused:
    marker = _Refused(problem)
    refused.append(marker)
    return marker


def _walk(value: Any, what: str, surrogates: str) -> Any:
    """Report the first refused number or (when refusing) lone surrogate, else replace surrogates in place."""
    if isinstance(value, str | _Refused):
        return _check_leaf(value, "", what, surrogates)
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        container, path = stack.pop()
        if isinstance(container, dict):
            if any(_SURROGATE.search(key) for key in container):
                items = [
                    (_check_leaf(key, _join(path, key), what, surrogates), item) for key, item in container.items()
                ]
                container.clear()
                container.update(items)
            entries: list[tuple[Any, Any]] = list(container.items())
        else:
            entries = list(enumerate(container))
        for key, item in entries:
            where = _join(path, key)
            if isinstance(item, dict | list):
                stack.append((item, where))
            elif isinstance(item, str | _Refused):
                container[key] = _check_leaf(item, where, what, surrogates)
    return value


def _check_leaf(value: str | _Refused, path: str, what: str, surrogates: str) -> str:
    if isinstance(value, _Refused):
        raise _leaf_error(what, path, value.problem)
    found = _SURROGATE.search(value)
    if found is None:
        return value
    if surrogates == "refuse":
        problem = f"lone surrogate \\u{ord(found.group()):04x} at position {found.start()}"
        raise _leaf_error(what, path, f"{problem} cannot be encoded as UTF-8")
    return _SURROGATE.sub("\ufffd", value)


def _leaf_error(what: str, path: str, problem: str) -> JSONBodyError:
    return JSONBodyError(f"{what}: {path}: {problem}" if path else f"{what}: {problem}", path=path)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    shown = key if key.isidentifier() else json.dumps(key)  # json.dumps escapes a surrogate in a key's name
    return f"{path}.{shown}" if path else shown
