"""Prometheus metrics of the running daemon, served as text on the admin listener's GET /metrics.

Everything is read at scrape time: the core's mapping table and connections, the admin API's own
counters, and `MetricsSources`, optional callables through which the daemon passes what the other
front-ends count (igd.admin imports none of them, architecture 3.4). A source left None leaves its
metric families out of the scrape, so "absent" is never confused with "zero".

    igd_info{version}                                  1
    igd_start_time_seconds, igd_uptime_seconds         wall clock
    igd_connections{role}                              public | private | none
    igd_mappings{origin,protocol}                      every combination, zeros included
    igd_mappings_enabled{origin,protocol}
    igd_system_update_id
    igd_requests_total{protocol,action,result}         sources.requests + the admin API's own
    igd_ssdp_packets_received_total                    sources.ssdp (SsdpCounters.as_dict keys)
    igd_ssdp_packets_sent_total{kind}                  reply | notify
    igd_ssdp_packets_dropped_total{reason}             destination | source | parse | limit
    igd_ssdp_packets_ignored_total{reason}             own | notify | unanswered
    igd_ssdp_errors_total{kind}                        send | receive | internal
    igd_gena_subscriptions                             sources.subscriptions
    igd_lease_expiries_total{origin}                   MappingRemoved(EXPIRED) seen by the API
    igd_mappings_removed_total{reason,origin}          every MappingRemoved seen by the API
    igd_backend_transaction_seconds                    sources.backend_latency (histogram)
    igd_admin_change_seconds{operation}                admin changes, measured around the core call
    igd_admin_event_streams, igd_admin_events_dropped_total
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from igd.natcore import IPProtocol, Origin, SharingConnectionType, SharingManager

__all__ = [
    "LATENCY_BUCKETS_S",
    "METRICS_CONTENT_TYPE",
    "AdminCounters",
    "LatencyRecorder",
    "LatencySnapshot",
    "MetricsSources",
    "RequestCounts",
    "build_registry",
    "counters_document",
    "merge_request_counts",
    "render_metrics",
]

METRICS_CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""The Prometheus text exposition format 0.0.4, which `generate_latest` writes."""

LATENCY_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Upper bounds of the latency histograms, in seconds (a libnftables element: ~0.2 ms)."""

RequestCounts = Mapping[tuple[str, str, str], int]
"""(protocol, action, result) -> requests: ("upnp", "AddPortMapping", "ok") -> 12."""


@dataclass(frozen=True, slots=True)
class LatencySnapshot:
    """A histogram at one instant: per-bucket counts (last one is +Inf), their sum in seconds."""

    bounds_s: tuple[float, ...]
    counts: tuple[int, ...]
    sum_s: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: ("le", cumulative count), ending with ("+Inf", count)."""
        result: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds_s, float("inf")), self.counts, strict=True):
            running += count
            result.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return result


class LatencyRecorder:
    """A fixed-bucket latency histogram fed with durations measured by the caller."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds_s: Iterable[float] = LATENCY_BUCKETS_S) -> None:
        self._bounds = tuple(sorted(bounds_s))
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration (negative ones, from a clock step, count as 0)."""
        seconds = max(0.0, seconds)
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def snapshot(self) -> LatencySnapshot:
        return LatencySnapshot(self._bounds, tuple(self._counts), self._sum)


@dataclass(frozen=True, slots=True)
class MetricsSources:
    """What the daemon passes for the counters it holds; every field is optional.

    requests: (protocol, action, result) -> count, e.g. SOAP's UpnpStats.actions as
        ("upnp", action, result), NAT-PMP/PCP handler stats as ("natpmp", opcode, result).
    ssdp: SsdpCounters.as_dict() summed over the responders.
    subscriptions: the number of live GENA subscriptions.
    backend_latency: a LatencyRecorder.snapshot fed by a timing wrapper around Backend.apply.
    """

    requests: Callable[[], RequestCounts] | None = None
    ssdp: Callable[[], Mapping[str, int]] | None = None
    subscriptions: Callable[[], int] | None = None
    backend_latency: Callable[[], LatencySnapshot] | None = None


def merge_request_counts(*sources: Callable[[], RequestCounts]) -> Callable[[], RequestCounts]:
    """One `requests` source adding up several (SOAP, NAT-PMP, PCP)."""

    def merged() -> RequestCounts:
        total: Counter[tuple[str, str, str]] = Counter()
        for source in sources:
            total.update(source())
        return total

    return merged


@dataclass(slots=True)
class AdminCounters:
    """What the admin API counts itself; bounded (finite routes, codes, reasons and origins)."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(action, result) of the API's own requests; result "ok" or the error code."""
    removed: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(reason, origin) of every MappingRemoved event."""
    events_dropped: int = 0
    """Events the removal watcher lost because it fell behind (its counts are low by this)."""
    event_streams: int = 0
    changes: dict[str, LatencyRecorder] = field(default_factory=dict)
    """Operation -> latency of the core call, validation to commit (admin changes only)."""

    def observe_change(self, operation: str, seconds: float) -> None:
        recorder = self.changes.get(operation)
        if recorder is None:
            recorder = self.changes[operation] = LatencyRecorder()
        recorder.observe(seconds)

    def lease_expiries(self) -> Counter[str]:
        """Origin -> mappings removed because their lease ran out."""
        result: Counter[str] = Counter()
        for (reason, origin), count in self.removed.items():
            if reason == "expired":
                result[origin] += count
        return result


def _mapping_counts(
    core: SharingManager,
) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """(origin, protocol) -> mappings, and -> enabled mappings; every combination present."""
    total: Counter[tuple[str, str]] = Counter()
    enabled: Counter[tuple[str, str]] = Counter()
    for origin in Origin:
        for protocol in IPProtocol:
            total[(origin.value, protocol.name)] = 0
            enabled[(origin.value, protocol.name)] = 0
    for mapping in core.mappings():
        key = (mapping.origin.value, mapping.protocol.name)
        total[key] += 1
        if mapping.enabled:
            enabled[key] += 1
    return total, enabled


_SSDP_SENT: Final = {"replies": "reply", "notifies": "notify"}
_SSDP_IGNORED: Final = {
    "ignored_own": "own",
    "ignored_notify": "notify",
    "unanswered": "unanswered",
}


def _ssdp_families(counters: Mapping[str, int]) -> Iterator[Metric]:
    """SsdpCounters.as_dict() keys into families; unknown keys go to igd_ssdp_other_total."""
    received = CounterMetricFamily(
        "igd_ssdp_packets_received", "SSDP datagrams received on the LAN interfaces."
    )
    sent = CounterMetricFamily(
        "igd_ssdp_packets_sent", "SSDP datagrams sent, by kind.", labels=["kind"]
    )
    dropped = CounterMetricFamily(
        "igd_ssdp_packets_dropped", "SSDP datagrams dropped, by reason.", labels=["reason"]
    )
    ignored = CounterMetricFamily(
        "igd_ssdp_packets_ignored", "SSDP datagrams ignored, by reason.", labels=["reason"]
    )
    errors = CounterMetricFamily(
        "igd_ssdp_errors", "SSDP socket or internal errors.", labels=["kind"]
    )
    other = CounterMetricFamily("igd_ssdp_other", "Other SSDP counters.", labels=["counter"])
    for name, value in sorted(counters.items()):
        if name == "received":
            received.add_metric([], value)
        elif name.endswith("_sent"):
            kind = name.removesuffix("_sent")
            sent.add_metric([_SSDP_SENT.get(kind, kind)], value)
        elif name.startswith("dropped_"):
            dropped.add_metric([name.removeprefix("dropped_")], value)
        elif name in _SSDP_IGNORED:
            ignored.add_metric([_SSDP_IGNORED[name]], value)
        elif name.endswith("_errors"):
            errors.add_metric([name.removesuffix("_errors")], value)
        else:
            other.add_metric([name], value)
    for family in (received, sent, dropped, ignored, errors, other):
        if family.samples:
            yield family


def _histogram(name: str, documentation: str, snapshot: LatencySnapshot) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=snapshot.cumulative(), sum_value=snapshot.sum_s
    )


class _AdminCollector:
    """The custom collector: reads the core, the API's counters and the sources at scrape time."""

    def __init__(
        self,
        core: SharingManager,
        sources: MetricsSources,
        counters: AdminCounters,
        *,
        started_at: float,
        version: str,
        clock: Callable[[], float],
    ) -> None:
        self.core = core
        self.sources = sources
        self.counters = counters
        self.started_at = started_at
        self.version = version
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        yield from self._daemon()
        yield from self._model()
        yield from self._requests()
        sources = self.sources
        if sources.ssdp is not None:
            yield from _ssdp_families(sources.ssdp())
        if sources.subscriptions is not None:
            yield GaugeMetricFamily(
                "igd_gena_subscriptions", "Live GENA subscriptions.", sources.subscriptions()
            )
        yield from self._removals()
        if sources.backend_latency is not None:
            yield _histogram(
                "igd_backend_transaction_seconds",
                "Time the backend took to apply one plan (one batch of changes).",
                sources.backend_latency(),
            )
        yield from self._admin()

    def _daemon(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("igd_info", "The running igd.", labels=["version"])
        info.add_metric([self.version], 1)
        yield info
        yield GaugeMetricFamily(
            "igd_start_time_seconds", "Start time, seconds since the epoch.", self.started_at
        )
        yield GaugeMetricFamily(
            "igd_uptime_seconds",
            "Seconds since the start.",
            max(0.0, self.clock() - self.started_at),
        )

    def _model(self) -> Iterator[Metric]:
        core = self.core
        roles: Counter[str] = Counter({"public": 0, "private": 0, "none": 0})
        for props in core.connections():
            role = core.role_of(props.guid)
            roles["none" if role is None else _ROLE_NAMES[role]] += 1
        connections = GaugeMetricFamily(
            "igd_connections", "Present connections, by sharing role.", labels=["role"]
        )
        for role_name, count in sorted(roles.items()):
            connections.add_metric([role_name], count)
        yield connections
        total, enabled = _mapping_counts(core)
        mappings = GaugeMetricFamily(
            "igd_mappings", "Port mappings, by origin and protocol.", labels=["origin", "protocol"]
        )
        enabled_family = GaugeMetricFamily(
            "igd_mappings_enabled",
            "Enabled port mappings, by origin and protocol.",
            labels=["origin", "protocol"],
        )
        for key in sorted(total):
            mappings.add_metric(list(key), total[key])
            enabled_family.add_metric(list(key), enabled[key])
        yield mappings
        yield enabled_family
        yield GaugeMetricFamily(
            "igd_system_update_id",
            "SystemUpdateID: committed mapping changes.",
            core.system_update_id,
        )

    def _requests(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "igd_requests",
            "Requests handled, by protocol, action and result.",
            labels=["protocol", "action", "result"],
        )
        merged: Counter[tuple[str, str, str]] = Counter()
        if self.sources.requests is not None:
            merged.update(self.sources.requests())
        for (action, result), count in self.counters.requests.items():
            merged[("admin", action, result)] += count
        for key, count in sorted(merged.items()):
            family.add_metric(list(key), count)
        yield family

    def _removals(self) -> Iterator[Metric]:
        expiries = CounterMetricFamily(
            "igd_lease_expiries", "Mappings removed because their lease ran out.", labels=["origin"]
        )
        lease_expiries = self.counters.lease_expiries()
        for origin in Origin:
            expiries.add_metric([origin.value], lease_expiries[origin.value])
        yield expiries
        removed = CounterMetricFamily(
            "igd_mappings_removed",
            "Mappings removed, by reason and origin.",
            labels=["reason", "origin"],
        )
        for key, count in sorted(self.counters.removed.items()):
            removed.add_metric(list(key), count)
        yield removed

    def _admin(self) -> Iterator[Metric]:
        counters = self.counters
        yield GaugeMetricFamily(
            "igd_admin_event_streams", "Open admin event streams.", counters.event_streams
        )
        yield CounterMetricFamily(
            "igd_admin_events_dropped",
            "Events the metrics watcher missed because it fell behind.",
            counters.events_dropped,
        )
        changes = HistogramMetricFamily(
            "igd_admin_change_seconds",
            "Admin changes: validation, store commit and backend apply, by operation.",
            labels=["operation"],
        )
        for operation, recorder in sorted(counters.changes.items()):
            snapshot = recorder.snapshot()
            changes.add_metric([operation], snapshot.cumulative(), snapshot.sum_s)
        yield changes


_ROLE_NAMES: Final = {
    SharingConnectionType.PUBLIC: "public",
    SharingConnectionType.PRIVATE: "private",
}


def build_registry(
    core: SharingManager,
    sources: MetricsSources,
    counters: AdminCounters,
    *,
    started_at: float,
    version: str,
    clock: Callable[[], float],
    process: bool = True,
) -> CollectorRegistry:
    """A private registry (never the global one) with our collector, and process metrics."""
    registry = CollectorRegistry()
    registry.register(
        _AdminCollector(
            core, sources, counters, started_at=started_at, version=version, clock=clock
        )
    )
    if process:
        ProcessCollector(registry=registry)
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The registry in the text exposition format (METRICS_CONTENT_TYPE)."""
    return generate_latest(registry)


def counters_document(sources: MetricsSources, counters: AdminCounters) -> dict[str, Any]:
    """The counters as JSON for GET /v1/counters; a source left None is null."""
    merged: Counter[tuple[str, str, str]] = Counter()
    if sources.requests is not None:
        merged.update(sources.requests())
    for (action, result), count in counters.requests.items():
        merged[("admin", action, result)] += count
    backend = sources.backend_latency() if sources.backend_latency is not None else None
    removed: dict[str, int] = {}
    for (reason, _origin), count in sorted(counters.removed.items()):
        removed[reason] = removed.get(reason, 0) + count
    return {
        "requests": [
            {"protocol": p, "action": a, "result": r, "count": n}
            for (p, a, r), n in sorted(merged.items())
        ],
        "ssdp": dict(sorted(sources.ssdp().items())) if sources.ssdp is not None else None,
        "subscriptions": sources.subscriptions() if sources.subscriptions is not None else None,
        "lease_expiries": sum(counters.lease_expiries().values()),
        "mappings_removed": removed,
        "backend_transactions": (
            None if backend is None else {"count": backend.count, "sum_s": backend.sum_s}
        ),
        "event_streams": counters.event_streams,
    }
