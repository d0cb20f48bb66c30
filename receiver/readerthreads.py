"""Threads for the download readers (`fetchreader`), kept a little while after each download for the next one.

`threading.Thread.start()` waits until the new thread has run its first Python line, and that needs the GIL, which
four busy downloads hand round: the event loop stood still ~0.5 ms per download (cProfile of 400 small files).
A thread that finished a reader instead waits `IDLE` seconds for the next one, which then starts at once. Nothing
is bounded here, as nothing was: a download that finds no idle thread starts its own, as before, and a thread that
waited `IDLE` seconds for nothing ends. Each thread runs one reader at a time, named `fetch {host}` while it does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

IDLE = 2.0  # seconds a finished thread waits for the next reader before it ends

_lock = threading.Lock()
_idle: list[_Slot] = []  # threads waiting for a reader, the last to finish last
_running = 0  # readers being run now


class _Slot:
    def __init__(self) -> None:
        self.ready = threading.Event()
        self.job: tuple[Callable[[], None], str] | None = None


def run_reader(run: Callable[[], None], name: str) -> None:
    """Run `run` in a thread named `name`: an idle one if there is one, else a new one. Never waits for it."""
    global _running
    with _lock:
        _running += 1
        slot = _idle.pop() if _idle else None
    if slot is None:
        threading.Thread(target=_serve, args=(run, name), name=name, daemon=True).start()
        return
    slot.job = (run, name)
    slot.ready.set()


def running() -> int:
    """How many readers are being run now (for tests: a cancelled download's reader has let go of its thread)."""
    return _running


def _serve(run: Callable[[], None], name: str) -> None:
    global _running
    slot = _Slot()
    while True:
        threading.current_thread().name = name
        try:
            run()
        except BaseException:  # a reader hands its errors to the event loop; this would be a bug: the thread ends
            with _lock:
                _running -= 1
            raise
        threading.current_thread().name = "fetch (idle)"
        slot.ready.clear()
        with _lock:
            _running -= 1
            _idle.append(slot)
        if not slot.ready.wait(IDLE):
            with _lock:
                if slot in _idle:  # nobody took this thread: it ends
                    _idle.remove(slot)
                    return
            slot.ready.wait()  # taken just now: its reader is on the way
        assert slot.job is not None
        (run, name), slot.job = slot.job, None
