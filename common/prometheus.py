"""Serving Prometheus metrics from an asyncio process: one HTTP listener, collected on the loop.

prometheus_client's HTTP server answers scrapes on its own thread, but the state a collector reads
(an xTR's peers, the controller's stores) belongs to the event loop and is changed by it: each
scrape therefore hands `collect` to the loop and waits (bounded) for the families it built, so a
scrape never sees a half-changed table. A scrape the loop cannot serve in time gets an empty body
and is counted (`*_scrape_timeouts_total`), never a hung listener.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from common.errors import LispmeshError

log = logging.getLogger("lispmesh.metrics")

DEFAULT_PORT = 9464  # the port OpenTelemetry's Prometheus exporter uses
SCRAPE_TIMEOUT = 2.0


class MetricsError(LispmeshError):
    """A metrics listen address that cannot be used (one line naming it)."""


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT, HOST or :PORT (host 127.0.0.1: loopback unless asked otherwise)."""
    host, port_text = "127.0.0.1", str(DEFAULT_PORT)
    if text.startswith("["):
        inner, _, rest = text[1:].partition("]")
        host, port_text = inner, rest.removeprefix(":") or port_text
    elif text.count(":") == 1:
        left, port_text = text.split(":")
        host = left or host
    elif text:
        host = text
    try:
        ipaddress.ip_address(host)
        port = int(port_text)
        if not 0 <= port < 65536:  # 0: any free port (tests; the log says which)
            raise ValueError
    except ValueError:
        raise MetricsError(
            f"metrics listen address {text!r}: use HOST:PORT, e.g. 127.0.0.1:9464"
        ) from None
    return host, port


Families = Iterable[Metric]


class LoopCollector:
    """Runs `build` (which returns metric families) on `loop` for each scrape."""

    def __init__(self, prefix: str, loop: asyncio.AbstractEventLoop, build: Callable[[], Families]):
        self.prefix = prefix
        self.loop = loop
        self.build = build
        self.timeouts = 0

    def collect(self) -> Iterator[Metric]:
        async def on_loop() -> list[Metric]:
            return list(self.build())

        future = asyncio.run_coroutine_threadsafe(on_loop(), self.loop)
        try:
            families = future.result(SCRAPE_TIMEOUT)
        except (concurrent.futures.TimeoutError, RuntimeError):
            future.cancel()
            self.timeouts += 1
            families = []
        yield from families
        yield counter(f"{self.prefix}_scrape_timeouts", "scrapes the loop did not serve in time",
                      self.timeouts)  # fmt: skip

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families vary with the state


@dataclass
class Exporter:
    """A running /metrics listener; `close` stops it."""

    address: tuple[str, int]
    _server: Any
    _thread: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(listen: str, collector: LoopCollector) -> Exporter:
    host, port = parse_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsError(f"metrics listen address {listen}: {exc.strerror}") from None
    bound = server.server_address[:2]
    log.info("metrics on http://%s:%d/metrics", host, bound[1])
    return Exporter((host, int(bound[1])), server, thread)


# ---------------------------------------------------------------------------------------------
# building families


def gauge(name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> Any:
    family = GaugeMetricFamily(name, doc, labels=list(labels) or None)
    if value is not None:
        family.add_metric([], value)
    return family


def counter(name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> Any:
    family = CounterMetricFamily(name, doc, labels=list(labels) or None)
    if value is not None:
        family.add_metric([], value)
    return family
