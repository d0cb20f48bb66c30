"""The ways a provider lets us down, as switches a test turns on: by constructor or `POST /_simulator/faults`.

Each job takes a copy of the switches when it is taken, so turning a fault off later does not rescue a job already
doomed, and a job remembered across a restart keeps its fate.

- `taken_then_status` (e.g. 504): the job is created and will call back, but the submit is answered with this
  status and the provider's error body, as a gateway timing out after the provider took the job does.
- `no_callback`: the job ends (fetch answers the result) but its callback is never sent.
- `callback_delay`: the callback is sent this many seconds after the job ends, not at once.
- `fail`: the job fails with this message, in the provider's failure shape.
- `repeat`: each callback (progress and final) is sent this many times, although the first was acknowledged.

`POST /_simulator/faults` with a JSON object sets the switches it names (omitted ones keep their value; `{}` changes
nothing) and answers all of them; `DELETE /_simulator/faults` turns them all off.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from submitter.simulators import read_json

ROUTE = "/_simulator/faults"


@dataclass(frozen=True)
class Faults:
    taken_then_status: int | None = None
    no_callback: bool = False
    callback_delay: float = 0.0
    fail: str | None = None
    repeat: int = 1

    @classmethod
    def parse(cls, values: dict[str, Any], current: Faults | None = None) -> Faults:
        """`current` with `values` applied; ValueError naming the field and what it takes."""
        checks: dict[str, tuple[str, Any]] = {
            "taken_then_status": ("an HTTP status 400-599 or null", lambda v: v is None or _int_in(v, 400, 599)),
            "no_callback": ("true or false", lambda v: isinstance(v, bool)),
            "callback_delay": ("a number of seconds >= 0", lambda v: _number(v) and v >= 0),
            "fail": ("a failure message or null", lambda v: v is None or (isinstance(v, str) and bool(v))),
            "repeat": ("a whole number >= 1", lambda v: _int_in(v, 1, 100)),
        }
        for name, value in values.items():
            if name not in checks:
                raise ValueError(f"faults: unknown switch {name!r}; known: {', '.join(checks)}")
            expected, valid = checks[name]
            if not valid(value):
                raise ValueError(f"faults: {name} must be {expected}, got {value!r}")
        return dataclasses.replace(current or cls(), **values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FaultSwitch:
    """The simulator's current switches, and the admin route that changes them."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.current = faults or Faults()

    def route(self) -> Route:
        return Route(ROUTE, self._change, methods=["GET", "POST", "DELETE"])

    async def _change(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.current = Faults()
        elif request.method == "POST":
            try:
                self.current = Faults.parse(await read_json(request), self.current)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(self.current.as_dict())


def _int_in(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
