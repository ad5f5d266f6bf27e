"""Token buckets keyed by source: how often a peer may make us do expensive work.

A keyed Map-Request costs the ETR an ECDSA verify, an X25519 and an ECDSA sign on the event loop
that also drives the data path; without a bound, a flood of them (replayed or forged) starves the
data path. `now` is passed in (the xTR's clock); the table is bounded (least recent dropped).
"""

from __future__ import annotations

from collections import OrderedDict


class TokenBuckets:
    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        self.rate = rate  # tokens per second
        self.burst = burst  # bucket size: what a quiet source may spend at once
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, key: str, now: float) -> bool:
        """Spend one token of `key`'s bucket; False when it is empty."""
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed
