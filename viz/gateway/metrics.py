"""Prometheus metrics of one gateway, served at ``/metrics``.

What is measured and where:

- ``hpcviz_gateway_sessions{state}``: sessions in the registry by state
  (queued, starting, ready, and the stopped/failed history), read from SQLite
  when scraped.
- ``hpcviz_gateway_open_websockets``: browser websockets proxied right now.
- ``hpcviz_gateway_proxied_bytes_total{protocol, direction}``: body bytes of
  proxied HTTP requests/responses and payload of websocket messages
  (``to_backend``: from browsers, ``to_client``: from viz servers). The proxy
  adds integers to :class:`Traffic` on its hot path (no lock, no allocation);
  they are read when scraped. Text websocket messages count characters
  (bytes for ASCII).
- ``hpcviz_gateway_launches_total{outcome}``: launches that ended: ready,
  failed, timeout (not ready within launch_timeout_s), stopped (before ready).
- ``hpcviz_gateway_launch_seconds``: histogram of launch -> ready report.

Each gateway has its own ``CollectorRegistry``, so several in one process
(tests, notebooks) never clash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

OUTCOMES = ("ready", "failed", "timeout", "stopped")
LAUNCH_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ByteCount:
    """One running byte total; the proxy does ``count.n += len(data)``."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class Traffic:
    """Bytes proxied, by protocol and direction (plain integers, read when scraped).

    Example:
        >>> traffic = Traffic()
        >>> traffic.ws_to_client.n += 5
        >>> traffic.totals()[("websocket", "to_client")]
        5
    """

    __slots__ = ("http_to_backend", "http_to_client", "ws_to_backend", "ws_to_client")

    def __init__(self) -> None:
        self.http_to_backend = ByteCount()
        self.http_to_client = ByteCount()
        self.ws_to_backend = ByteCount()
        self.ws_to_client = ByteCount()

    def totals(self) -> dict[tuple[str, str], int]:
        """``{(protocol, direction): bytes}``."""
        return {
            ("http", "to_backend"): self.http_to_backend.n,
            ("http", "to_client"): self.http_to_client.n,
            ("websocket", "to_backend"): self.ws_to_backend.n,
            ("websocket", "to_client"): self.ws_to_client.n,
        }


class _ScrapeTime(Collector):
    """Values read only when Prometheus asks: session counts, open sockets, bytes."""

    def __init__(
        self,
        traffic: Traffic,
        session_counts: Callable[[], dict[str, int]],
        open_websockets: Callable[[], int],
    ) -> None:
        self.traffic = traffic
        self.session_counts = session_counts
        self.open_websockets = open_websockets

    def describe(self) -> Iterator[Metric]:
        """The metric names, without reading anything (so registering costs no query)."""
        yield GaugeMetricFamily("hpcviz_gateway_sessions", "", labels=["state"])
        yield GaugeMetricFamily("hpcviz_gateway_open_websockets", "")
        yield CounterMetricFamily("hpcviz_gateway_proxied_bytes", "", labels=["protocol", "direction"])

    def collect(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily(
            "hpcviz_gateway_sessions",
            "Viz server sessions in the registry by state (stopped and failed include history).",
            labels=["state"],
        )
        for state, count in self.session_counts().items():
            sessions.add_metric([state], count)
        yield sessions
        yield GaugeMetricFamily(
            "hpcviz_gateway_open_websockets",
            "Browser websockets proxied to viz servers right now.",
            value=self.open_websockets(),
        )
        proxied = CounterMetricFamily(
            "hpcviz_gateway_proxied_bytes",
            "Bytes proxied: HTTP bodies and websocket message payloads "
            "(to_backend: from browsers; to_client: from viz servers).",
            labels=["protocol", "direction"],
        )
        for (protocol, direction), n in self.traffic.totals().items():
            proxied.add_metric([protocol, direction], n)
        yield proxied


class GatewayMetrics:
    """The metrics of one gateway.

    Args:
        session_counts: returns ``{state: count}`` (called when scraped).
        open_websockets: returns the number of proxied websockets (called when scraped).

    Example:
        >>> metrics = GatewayMetrics(lambda: {"ready": 1}, lambda: 0)
        >>> metrics.launch_ended("ready", seconds=1.5)
        >>> b"hpcviz_gateway_launches_total{outcome=\\"ready\\"} 1.0" in metrics.render()
        True
    """

    def __init__(
        self, session_counts: Callable[[], dict[str, int]], open_websockets: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.traffic = Traffic()
        self.registry.register(_ScrapeTime(self.traffic, session_counts, open_websockets))
        self.launches = Counter(
            "hpcviz_gateway_launches",
            "Viz server launches that ended, by outcome (ready, failed, timeout, stopped before ready).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:  # every series exists from the start, at 0
            self.launches.labels(outcome)
        self.launch_seconds = Histogram(
            "hpcviz_gateway_launch_seconds",
            "Seconds from launch (the click or warm start) to the viz server's ready report.",
            buckets=LAUNCH_BUCKETS,
            registry=self.registry,
        )

    def launch_ended(self, outcome: str, seconds: float | None = None) -> None:
        """Count a launch that ended; a ``ready`` one also records its latency."""
        self.launches.labels(outcome).inc()
        if outcome == "ready" and seconds is not None:
            self.launch_seconds.observe(max(0.0, seconds))

    def render(self) -> bytes:
        """The text exposition format (``Content-Type``: :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
