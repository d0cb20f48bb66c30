"""Callback delivery: POST a job's message, try again while the provider would, and record every attempt.

A message is built afresh for each attempt (a signing provider stamps each attempt with the time it is sent), but
it stays the same message: the same body, and for WaveSpeed the same `webhook-id`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio
import httpx


@dataclass(frozen=True)
class Delivery:
    job_id: str
    url: str
    status_code: int | None  # None: the connection failed
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    url: str
    body: bytes
    headers: Mapping[str, str]


class Courier:
    """Sends callbacks over `http` (set once the simulator's lifespan has a client) and keeps `deliveries`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.http: httpx.AsyncClient | None = None
        self.deliveries: list[Delivery] = []
        self.sending = 0  # messages being sent right now, their retries included

    async def send(
        self,
        job_id: str,
        message: Callable[[], Message],
        *,
        attempts: int,
        again: Callable[[int | None], bool],
        pause: float,
    ) -> int | None:
        """Up to `attempts` POSTs, `pause` seconds apart, while `again(status)`; the last status."""
        self.sending += 1
        try:
            status_code: int | None = None
            for attempt in range(attempts):
                if attempt:
                    await anyio.sleep(pause)
                status_code = await self.post(job_id, message())
                if not again(status_code):
                    break
            return status_code
        finally:
            self.sending -= 1

    async def repeat(
        self, job_id: str, message: Callable[[], Message], times: int, *, concurrently: bool = False
    ) -> list[int | None]:
        """POST the message `times` times now, one attempt each (at once, if `concurrently`); the statuses in order."""

        async def post() -> int | None:
            return await self.send(job_id, message, attempts=1, again=bool, pause=0)

        if not concurrently:
            return [await post() for _ in range(times)]
        codes: list[int | None] = [None] * times

        async def post_into(i: int) -> None:
            codes[i] = await post()

        async with anyio.create_task_group() as tg:
            for i in range(times):
                tg.start_soon(post_into, i)
        return codes

    async def post(self, job_id: str, message: Message) -> int | None:
        if self.http is None:
            raise RuntimeError(f"the {self.name} simulator has no HTTP client: pass http= or run it with its lifespan")
        try:
            response = await self.http.post(message.url, content=message.body, headers=dict(message.headers))
            status_code: int | None = response.status_code
        except httpx.HTTPError:
            status_code = None
        self.deliveries.append(Delivery(job_id, message.url, status_code, message.body, message.headers))
        return status_code
