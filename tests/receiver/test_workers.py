"""The loop around a worker's run_once(): waiting for it to be idle returns even when it is woken mid-drain."""

from __future__ import annotations

import anyio
import pytest

from receiver.workers import Worker

pytestmark = pytest.mark.anyio


async def test_wait_idle_returns_when_the_worker_is_woken_while_it_drains() -> None:
    drains: list[int] = []
    started = anyio.Event()
    proceed = anyio.Event()

    async def run_once() -> int:
        drains.append(1)
        if len(drains) == 1:
            started.set()
            await proceed.wait()  # someone waits for idle, and someone else wakes us, while we drain
        return 0

    worker = Worker("test", run_once)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await started.wait()
        idle = anyio.Event()

        async def wait() -> None:
            await worker.wait_idle()
            idle.set()

        tg.start_soon(wait)
        await anyio.sleep(0)
        worker.wake()
        proceed.set()
        with anyio.fail_after(2):
            await idle.wait()
        assert len(drains) == 2  # the wake-up was not lost: it drained again before it called itself idle
        tg.cancel_scope.cancel()
