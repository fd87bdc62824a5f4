"""Prometheus metrics (prometheus-client), and the figures ``troupe stats`` shows.

Counters that actors bump from their own threads are prometheus-client
`Counter` / `Histogram` objects, which are safe to update from any thread
(the library serialises updates itself). Figures owned by the hub's loop
thread (open sessions, pending requests, frames) are not copied anywhere:
`LoopCollector` asks the loop for a snapshot when Prometheus scrapes, so they
keep exactly one owner. The HTTP endpoint is off unless ``--metrics-address``
is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PENDING_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
"""Upper bounds of the per-session pending-requests histogram."""
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

MCP_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
    }
)
"""Request methods that get a ``method`` label of their own; any other method counts as ``other``.
Method names come from clients, so an open label set would let one client grow the metrics without bound."""


def method_label(method: str) -> str:
    return method if method in MCP_METHODS else "other"


class Metrics:
    """Every metric troupe exports, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_opened = Counter("troupe_sessions_opened", "Sessions opened.", registry=r)
        self.sessions_closed = Counter("troupe_sessions_closed", "Sessions ended, by reason.", ["reason"], registry=r)
        self.requests = Counter(
            "troupe_requests", "Client requests forwarded to servers, by method.", ["method"], registry=r
        )
        self.requests_refused = Counter(
            "troupe_requests_refused", "Requests refused by a limit (session, global, rate).", ["reason"], registry=r
        )
        self.request_latency = Histogram(
            "troupe_request_duration_seconds",
            "Time from a client request to its response, as the daemon sees it, by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.timeouts = Counter(
            "troupe_request_timeouts", "Requests that timed out, by method.", ["method"], registry=r
        )
        self.janitor_passes = Counter("troupe_janitor_passes", "Janitor passes.", registry=r)
        self.janitor_expired = Counter(
            "troupe_janitor_expired",
            "Items expired by the janitor's wake-ups (request, session).",
            ["kind"],
            registry=r,
        )
        self.evictions = Counter("troupe_evictions", "Sessions evicted to keep max_sessions.", registry=r)
        self.restarts = Counter("troupe_actor_restarts", "Supervised actor restarts, by child.", ["child"], registry=r)
        self.escalations = Counter("troupe_supervisor_escalations", "Supervisor escalations.", registry=r)
        self.bad_frames = Counter("troupe_bad_frames", "Frames refused, by error code.", ["code"], registry=r)
        self.detached_dropped = Counter(
            "troupe_detached_frames_dropped",
            "Frames for a detached session's client beyond reattach_buffer (the session is closed).",
            registry=r,
        )
        self.forbidden = Counter(
            "troupe_forbidden",
            "Frames and operations refused for their sender's rights, by what.",
            ["what"],
            registry=r,
        )
        self.upstream_faults = Counter(
            "troupe_upstream_faults",
            "Failed exchanges with remote (url) servers, by server and what failed (data.upstream of -32014).",
            ["server", "kind"],
            registry=r,
        )
        self._by_method: dict[tuple[Counter | Histogram, str], Any] = {}

    def _method_child(self, family: Counter | Histogram, method: str) -> Any:
        """The labelled child for ``method``, kept: prometheus-client's ``labels()`` costs
        several microseconds, and these are updated for every request. Keyed by the label,
        never by the raw method name, which a client chooses: the table holds at most one
        entry per known method and family."""
        key = (family, method_label(method))
        child = self._by_method.get(key)
        if child is None:
            child = self._by_method[key] = family.labels(key[1])
        return child

    def count_request(self, method: str) -> None:
        self._method_child(self.requests, method).inc()

    def observe_latency(self, method: str, seconds: float) -> None:
        self._method_child(self.request_latency, method).observe(seconds)

    def count_timeout(self, method: str) -> None:
        self._method_child(self.timeouts, method).inc()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 if never set), e.g. ``value("troupe_evictions_total")``."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def by_label(self, family: str, label: str) -> dict[str, float]:
        """``{label value: count}`` of a labelled counter, e.g. closed sessions by reason."""
        result: dict[str, float] = {}
        for metric in self.registry.collect():
            if metric.name != family:
                continue
            for sample in metric.samples:
                if sample.name == f"{family}_total":
                    result[sample.labels[label]] = sample.value
        return result

    def serve(self, address: str) -> None:
        """Expose ``/metrics`` over HTTP at ``host:port`` (a thread of prometheus-client's own)."""
        host, _, port = address.rpartition(":")
        start_http_server(int(port), host or "127.0.0.1", registry=self.registry)


class LoopCollector(Collector):
    """Figures owned by the hub's loop thread, fetched from it at scrape time."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self._snapshot()
        yield GaugeMetricFamily("troupe_sessions_open", "Sessions open now.", value=snap["sessions_open"])
        yield GaugeMetricFamily(
            "troupe_pending_requests", "Client requests pending, daemon-wide.", value=snap["pending"]
        )
        yield _pending_histogram(snap["pending_per_session"])
        frames = CounterMetricFamily("troupe_frames", "Frames by socket and direction.", labels=["socket", "direction"])
        for direction in ("in", "out"):
            for socket, count in snap["frames"][direction].items():
                frames.add_metric([socket, direction], count)
        yield frames
        dropped = CounterMetricFamily(
            "troupe_frames_dropped", "Frames the hub could not send, by reason.", labels=["reason"]
        )
        for reason, count in snap["frames"]["dropped"].items():
            dropped.add_metric([reason], count)
        yield dropped
        held = CounterMetricFamily(
            "troupe_frames_held",
            "Frames that waited in the daemon because the peer's queue was full, by socket.",
            labels=["socket"],
        )
        for socket, count in snap["frames"]["held"].items():
            held.add_metric([socket], count)
        yield held
        http = CounterMetricFamily(
            "troupe_http",
            "What the HTTP fronts saw: requests by method (http:POST), refusals by reason (refused:bad_origin), "
            "replay_dropped, replay_gap, resumed, cancelled, polled, unrouted.",
            labels=["what"],
        )
        for what, count in snap.get("http", {}).items():
            http.add_metric([what], count)
        yield http
        store = snap.get("store", {})
        yield GaugeMetricFamily(
            "troupe_store_queued",
            "Sessions whose record waits to be written to the store.",
            value=store.get("queued", 0),
        )
        for name, what in STORE_COUNTERS.items():
            yield CounterMetricFamily(f"troupe_store_{name}", what, value=store.get(name, 0))
        yield GaugeMetricFamily(
            "troupe_store_restoring",
            "Stored sessions of the previous daemon waiting for their adapter to report back.",
            value=store.get("restoring", 0),
        )
        passivation = snap.get("passivation", {})
        yield GaugeMetricFamily(
            "troupe_sessions_passivated",
            "Sessions passivated: no actor, no server process, their record kept.",
            value=passivation.get("passivated", 0),
        )
        for name, what in PASSIVATION_COUNTERS.items():
            yield CounterMetricFamily(f"troupe_{name}", what, value=passivation.get(name, 0))


STORE_COUNTERS = {
    "written": "Session record changes written to the store.",
    "dropped": "Session record changes not stored because store_queue sessions already waited.",
    "errors": "Batches the store refused (each is retried).",
    "lost_on_restart": "Stored sessions found gone when the daemon started (their server process did not survive).",
    "restored": "Sessions of the previous daemon restored with their server process.",
}
PASSIVATION_COUNTERS = {
    "passivations": "Sessions passivated after passivate_after without traffic.",
    "reactivations": "Passivated sessions brought back by a message (a new server process, the handshake replayed).",
}


def _pending_histogram(counts: list[int]) -> GaugeHistogramMetricFamily:
    buckets, total = [], 0
    for bound in PENDING_BUCKETS:
        total = sum(1 for c in counts if c <= bound)
        buckets.append((str(bound), total))
    buckets.append(("+Inf", len(counts)))
    family = GaugeHistogramMetricFamily(
        "troupe_session_pending_requests", "Open sessions by their number of pending client requests."
    )
    family.add_metric([], buckets, gsum_value=sum(counts))
    return family
