"""When to try again."""

from __future__ import annotations

import random


def next_attempt_at(attempts: int, now: float, *, base: float = 2.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter: attempt 1 waits up to `base` seconds, doubling up to `cap`."""
    ceiling = min(cap, base * 2.0 ** max(0, attempts - 1))
    return float(now + ceiling / 2 + random.uniform(0, ceiling / 2))
