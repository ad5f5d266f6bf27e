"""Bounded polling: wait for a condition with a deadline, never a bare sleep hoping it holds.

Shared by the demo lab, the tests and the benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class WaitTimeout(TimeoutError, AssertionError):
    """The condition did not hold in time. A TimeoutError for tools and an AssertionError for
    tests, so either kind of caller reads it as its own failure."""


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2
) -> Any:
    """Poll `condition` until it returns something truthy and return that; WaitTimeout after
    `timeout` seconds, naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
