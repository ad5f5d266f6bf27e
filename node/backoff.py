"""Exponential backoff with full jitter (AWS architecture blog): the n-th wait is uniform in
[0, min(cap, base * 2^n)], so a fleet of nodes that lost the controller at the same moment does
not come back in lockstep."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self, base: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random
    ) -> None:
        self.base = base
        self.cap = cap
        self.attempts = 0
        self._rand = rand

    def next(self) -> float:
        ceiling = min(self.cap, self.base * float(1 << min(self.attempts, 30)))
        self.attempts += 1
        return ceiling * self._rand()

    def reset(self) -> None:
        self.attempts = 0
