"""``GET /metrics``: the routing core's counters in Prometheus text format.

A custom collector reads the core's plain counters when Prometheus scrapes, so routing a
message costs no metrics-library call at all. Each service has its own registry: two
services in one process (or many in a test run) never collide.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .._exceptions import error_code_name
from .._host import views
from .._host.core import RoutingCore
from .._host.deliveries import DeliveryCounts
from .._host.directory import ClusterStatus

METRICS_PATH = "/metrics"
PREFIX = "autogen_http_"


class RouterCollector:
    """Reads a :class:`RoutingCore`'s counters at scrape time."""

    def __init__(self, core: RoutingCore) -> None:
        self._core = core

    def collect(self) -> Iterator[Metric]:
        cluster = self._core.directory.cluster
        if cluster is None:
            yield from self._families()
            return
        # In a cluster every sample says which host it is from.
        for family in self._families():
            for sample in family.samples:
                sample.labels["host"] = cluster.host
            yield family
        yield from _cluster_families(cluster)
        deliveries = self._core.events.deliveries
        if deliveries is not None:
            yield from _delivery_families(cluster.host, deliveries.counts)

    def _families(self) -> Iterator[Metric]:
        core, stats = self._core, self._core.stats
        workers = views.workers(core)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, doc, value=value)

        yield gauge(
            "accepting",
            "1 while the host accepts workers and calls, 0 while it shuts down.",
            1 if core.accepting else 0,
        )
        here = core.directory.host or None
        workers = [worker for worker in workers if worker.host == here]  # a cluster's others: theirs
        yield gauge("workers", "Workers connected to this host now.", len(workers))
        agent_types = views.agent_type_views(core)
        yield gauge("agent_types", "Agent types registered now.", len(agent_types))
        serving = GaugeMetricFamily(
            PREFIX + "agent_type_workers",
            "Workers serving each agent type (its replicas).",
            labels=["agent_type"],
        )
        routed = CounterMetricFamily(
            PREFIX + "routed",
            "Calls and event copies routed to each worker serving an agent type.",
            labels=["agent_type", "worker_id"],
        )
        placed = GaugeMetricFamily(
            PREFIX + "placed_agent_ids",
            "With replicas: agent ids of each type placed on each of its workers so far.",
            labels=["agent_type", "worker_id"],
        )
        for view in agent_types:
            serving.add_metric([view.agent_type], len(view.replicas))
            for replica in view.replicas:
                routed.add_metric([view.agent_type, replica.worker_id], replica.routed)
                if replica.agent_ids is not None:
                    placed.add_metric([view.agent_type, replica.worker_id], replica.agent_ids)
        yield serving
        yield routed
        yield placed
        yield gauge("subscriptions", "Subscriptions stored now.", views.subscription_count(core))
        yield gauge("calls_in_flight", "Calls routed and not yet answered.", core.pending_calls)

        yield counter(
            "calls_routed", "Calls forwarded to the worker serving their recipient.", stats.calls_routed
        )
        outcomes = CounterMetricFamily(
            PREFIX + "calls", "Routed calls that ended, by outcome.", labels=["outcome"]
        )
        for outcome, count in stats.call_outcomes.items():
            outcomes.add_metric([outcome], count)
        yield outcomes

        histogram = stats.call_latency
        yield HistogramMetricFamily(
            PREFIX + "call_duration_seconds",
            "Seconds from the host forwarding a call to the serving worker's answer.",
            buckets=[(_le(bound), count) for bound, count in histogram.cumulative()],
            sum_value=histogram.sum,
        )

        yield counter("events_published", "Events received from publishers.", stats.events_published)
        copies = CounterMetricFamily(
            PREFIX + "event_copies",
            "Copies of events for subscribed agents, by outcome: delivered, or dropped (no worker "
            "serves the agent type, or the copy is too large for its worker).",
            labels=["outcome"],
        )
        copies.add_metric(["delivered"], stats.event_copies_delivered)
        copies.add_metric(["dropped"], stats.event_copies_dropped)
        yield copies

        errors = CounterMetricFamily(
            PREFIX + "errors",
            "JSON-RPC error responses the host sent or relayed, by code.",
            labels=["code", "name"],
        )
        for code, count in sorted(stats.errors.items()):
            # int(): str() of an IntEnum member is its name before Python 3.11, not its value.
            errors.add_metric([str(int(code)), error_code_name(code).lower()], count)
        yield errors

        state = core.state.stats
        yield counter("state_loads", "Durable agents' states loaded by workers (state.load).", state.loads)
        yield counter("state_saves", "Durable agents' states stored (state.save).", state.saves)
        refused = CounterMetricFamily(
            PREFIX + "state_refused",
            "State saves not stored, by reason: stale (the store holds a newer version), too_large "
            "(over max_state_size).",
            labels=["reason"],
        )
        refused.add_metric(["stale"], state.refused_stale)
        refused.add_metric(["too_large"], state.refused_too_large)
        yield refused
        yield counter(
            "state_failures", "State loads and saves the store failed (disk, Redis, full).", state.failures
        )

        totals = views.traffic(core)
        yield counter("frames_received", "WebSocket messages received from workers.", totals.frames_in)
        yield counter("frames_sent", "WebSocket messages sent to workers.", totals.frames_out)
        yield counter("received_bytes", "Bytes of WebSocket messages received from workers.", totals.bytes_in)
        yield counter("sent_bytes", "Bytes of WebSocket messages sent to workers.", totals.bytes_out)
        yield gauge("queued_bytes", "Bytes queued for all workers, not yet written.", totals.queued_bytes)
        yield counter(
            "senders_held",
            "Times the host stopped reading from a worker until a worker it sends to caught up.",
            stats.senders_held,
        )
        per_worker = GaugeMetricFamily(
            PREFIX + "worker_queued_bytes",
            "Bytes queued for one worker, not yet written (the back-pressure signal).",
            labels=["worker_id", "worker_name"],
        )
        for worker in workers:
            per_worker.add_metric([worker.worker_id, worker.name], worker.queued_bytes)
        yield per_worker


def _cluster_families(cluster: ClusterStatus) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        PREFIX + "cluster_info",
        "The cluster this host is one of, and its name there.",
        labels=["cluster", "host"],
    )
    info.add_metric([cluster.name, cluster.host], 1)
    yield info

    def labelled(family: GaugeMetricFamily | CounterMetricFamily, value: float) -> Metric:
        family.add_metric([cluster.host], value)
        return family

    yield labelled(
        GaugeMetricFamily(
            PREFIX + "cluster_available",
            "1 while this host reaches the cluster's engine (Redis), 0 while calls to other hosts fail.",
            labels=["host"],
        ),
        1 if cluster.unavailable is None else 0,
    )
    yield labelled(
        GaugeMetricFamily(
            PREFIX + "cluster_hosts", "Hosts of the cluster alive, this one included.", labels=["host"]
        ),
        len(cluster.hosts),
    )
    yield labelled(
        GaugeMetricFamily(
            PREFIX + "cluster_links",
            "Other hosts this one has a direct link open to (cluster_link_url); Redis carries the rest.",
            labels=["host"],
        ),
        len(cluster.links),
    )
    yield labelled(
        CounterMetricFamily(
            PREFIX + "cluster_refused_batches",
            "Batches from other hosts refused (inbox or links): bad signature, another cluster, too old, "
            "replayed.",
            labels=["host"],
        ),
        cluster.refused,
    )
    yield labelled(
        CounterMetricFamily(
            PREFIX + "cluster_reasserted",
            "Times this host put its entries back in the engine after the engine lost them.",
            labels=["host"],
        ),
        cluster.reasserted,
    )
    frames = CounterMetricFamily(
        PREFIX + "cluster_frames",
        "Messages sent to and received from each other host.",
        labels=["host", "peer", "direction"],
    )
    for peer, count in sorted(cluster.frames_out.items()):
        frames.add_metric([cluster.host, peer, "out"], count)
    for peer, count in sorted(cluster.frames_in.items()):
        frames.add_metric([cluster.host, peer, "in"], count)
    yield frames


def _delivery_families(host: str, counts: DeliveryCounts) -> Iterator[Metric]:
    """At-least-once delivery (docs/delivery.md): what this host stored, sent, took back."""
    for name, doc, value in (
        ("deliveries_stored", "Event copies this host put in the deliveries stream.", counts.stored),
        ("deliveries", "Stored event copies this host sent to workers (again included).", counts.delivered),
        ("deliveries_acked", "Acknowledgements of event copies this host passed on.", counts.acked),
        ("redeliveries", "Event copies this host took over past the visibility timeout.", counts.redelivered),
        ("dead_letters", "Event copies this host moved to the dead letters.", counts.dead_lettered),
    ):
        family = CounterMetricFamily(PREFIX + name, doc, labels=["host"])
        family.add_metric([host], value)
        yield family
    for name, doc, value in (
        (
            "deliveries_pending",
            "Event copies delivered and not yet acknowledged in the whole cluster (as this host last saw).",
            counts.pending,
        ),
        (
            "deliveries_held",
            "Event copies this host read and holds for workers that are behind (sent once each catches up).",
            counts.held,
        ),
    ):
        gauge = GaugeMetricFamily(PREFIX + name, doc, labels=["host"])
        gauge.add_metric([host], value)
        yield gauge


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else str(bound)


def metrics_router(core: RoutingCore) -> APIRouter:
    """A router with ``GET /metrics`` for ``core``, plus the process's own metrics."""
    registry = CollectorRegistry()
    registry.register(RouterCollector(core))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)

    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    router = APIRouter()
    router.add_api_route(
        METRICS_PATH,
        metrics,
        methods=["GET"],
        name="metrics",
        summary="The host's metrics in Prometheus text format",
        tags=["operations"],
    )
    return router
