"""Probes and Prometheus metrics: over real sockets, mounted in an app, and the core's counters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from autogen_core import AgentId, MessageContext, RoutedAgent, TopicId, TypeSubscription, message_handler
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from autogen_http_runtime import (
    AgentNotFoundError,
    HttpAgentServer,
    HttpAgentService,
    RemoteAgentError,
)
from autogen_http_runtime._host.core import RoutingCore
from autogen_http_runtime._host.stats import LATENCY_BUCKETS, CallOutcome, LatencyHistogram
from autogen_http_runtime._protocol.wire import ErrorCode

from .conftest import WorkerFactory
from .test_routing import SEND, frames, greeted, rpc
from .utils import Recorder, Text, Upper, bounded, owners

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def http_client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, **kwargs)


async def scrape(url: str) -> Samples:
    async with http_client() as http:
        response = await bounded(http.get(f"{url}/metrics"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


class Blocker(RoutedAgent):
    """Answers once ``release`` is set; sets ``started`` when a call arrives."""

    def __init__(self, started: asyncio.Event, release: asyncio.Event) -> None:
        super().__init__("blocks")
        self._started, self._release = started, release

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self._started.set()
        await self._release.wait()
        return message


async def test_healthz_and_readyz_while_serving(server: HttpAgentServer, make_worker: WorkerFactory) -> None:
    await make_worker()
    async with http_client(base_url=server.url) as http:
        health = await bounded(http.get("/healthz"))
        ready = await bounded(http.get("/readyz"))
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "workers": 1})


async def test_readyz_is_503_with_a_reason_while_draining(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    serving, caller = await make_worker(), await make_worker()
    await Blocker.register(serving, "blocker", lambda: Blocker(started, release))
    call = asyncio.ensure_future(caller.send_message(Text("x"), AgentId("blocker", "k")))
    await bounded(started.wait())
    stopping = asyncio.ensure_future(server.stop(grace=10))
    try:
        await bounded(server.service.core.stopping.wait())
        async with http_client(base_url=server.url) as http:
            ready = await bounded(http.get("/readyz"))
            health = await bounded(http.get("/healthz"))
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert "draining" in ready.json()["reason"]
        assert health.status_code == 200  # still alive: only not ready
    finally:
        release.set()
        assert await bounded(call) == Text("x")  # the call in flight was let finish
        await bounded(stopping)


async def test_metrics_count_workers_calls_events_errors_and_bytes(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    serving, caller = await make_worker(name="serving"), await make_worker()
    await Upper.register(serving, "upper", Upper)
    await Recorder.register(serving, "recorder", lambda: Recorder(inbox))
    await serving.add_subscription(TypeSubscription(topic_type="news", agent_type="recorder"))

    for n in range(3):
        assert await bounded(caller.send_message(Text(f"m{n}"), AgentId("upper", "k"))) == Text(f"M{n}")
    with pytest.raises(RemoteAgentError):
        await bounded(caller.send_message(Text("boom"), AgentId("upper", "k")))
    with pytest.raises(AgentNotFoundError):
        await bounded(caller.send_message(Text("x"), AgentId("nobody", "k")))
    await bounded(caller.publish_message(Text("hi"), TopicId("news", "s")))
    await bounded(inbox.get())

    samples = await scrape(server.url)
    assert value(samples, "autogen_http_accepting") == 1
    assert value(samples, "autogen_http_workers") == 2
    assert value(samples, "autogen_http_agent_types") == 2
    # register() adds a direct-message subscription per agent type, then ours.
    assert value(samples, "autogen_http_subscriptions") == 3
    assert value(samples, "autogen_http_calls_in_flight") == 0
    assert value(samples, "autogen_http_calls_routed_total") == 4
    assert value(samples, "autogen_http_calls_total", outcome="ok") == 3
    assert value(samples, "autogen_http_calls_total", outcome="error") == 1
    assert value(samples, "autogen_http_calls_total", outcome="cancelled") == 0
    assert value(samples, "autogen_http_call_duration_seconds_count") == 4
    assert value(samples, "autogen_http_call_duration_seconds_bucket", le="+Inf") == 4
    assert 0 < value(samples, "autogen_http_call_duration_seconds_sum") < 4 * 10
    assert value(samples, "autogen_http_errors_total", code="-32003", name="remote_error") == 1
    assert value(samples, "autogen_http_errors_total", code="-32001", name="agent_not_found") == 1
    assert value(samples, "autogen_http_events_published_total") == 1
    assert value(samples, "autogen_http_event_copies_total", outcome="delivered") == 1
    assert value(samples, "autogen_http_event_copies_total", outcome="dropped") == 0
    assert value(samples, "autogen_http_frames_received_total") > 0
    assert value(samples, "autogen_http_sent_bytes_total") > 0
    assert value(samples, "autogen_http_queued_bytes") >= 0
    serving_id = owners(server.service.core)["upper"].worker_id
    assert (
        value(samples, "autogen_http_worker_queued_bytes", worker_id=serving_id, worker_name="serving") >= 0
    )
    assert value(samples, "process_resident_memory_bytes") > 0

    # Counters never go down: a worker's traffic stays counted after it disconnects.
    received = value(samples, "autogen_http_received_bytes_total")
    await bounded(caller.stop())
    after = await scrape(server.url)
    assert value(after, "autogen_http_workers") == 1
    assert value(after, "autogen_http_received_bytes_total") >= received


async def test_two_services_in_one_process_have_separate_metrics(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    await make_worker()
    async with HttpAgentServer(port=0) as other:
        assert value(await scrape(other.url), "autogen_http_workers") == 0
        assert value(await scrape(server.url), "autogen_http_workers") == 1


async def test_operations_endpoints_work_mounted_under_a_prefix() -> None:
    service = HttpAgentService()
    app = FastAPI()
    app.include_router(service.router, prefix="/agents")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        assert (await bounded(http.get("/agents/healthz"))).json() == {"status": "ok"}
        assert (await bounded(http.get("/agents/readyz"))).status_code == 200
        metrics = await bounded(http.get("/agents/metrics"))
        assert "autogen_http_workers 0.0" in metrics.text
        page = await bounded(http.get("/agents/dashboard"))
        assert page.status_code == 200 and "<title>autogen-http-runtime host</title>" in page.text
        await service.close(grace=0)
        ready = await bounded(http.get("/agents/readyz"))
        assert ready.status_code == 503 and "draining" in ready.json()["reason"]
        # A closing host ends the dashboard's stream at once, after one last snapshot.
        events = await bounded(http.get("/agents/dashboard/events"))
        data = [line for line in events.text.splitlines() if line.startswith("data: ")]
        assert len(data) == 1 and json.loads(data[0][6:])["accepting"] is False


# -- the core's counters, in memory -------------------------------------------------------


def test_call_outcomes_and_latency_are_counted_in_the_core() -> None:
    router = RoutingCore()
    caller, target = greeted(router), greeted(router, "b")
    for request_id in (1, 2, 3):
        rpc(router, caller, request_id, "send", **SEND)
    host_ids = [frame["id"] for frame in frames(target)]
    router.handle_text(target, json.dumps({"jsonrpc": "2.0", "id": host_ids[0], "result": {}}))
    router.handle_text(
        target,
        json.dumps(
            {"jsonrpc": "2.0", "id": host_ids[1], "error": {"code": -32003, "message": "ValueError: x"}}
        ),
    )
    router.handle_text(caller, json.dumps({"jsonrpc": "2.0", "method": "cancel", "params": {"id": 3}}))
    outcomes = router.stats.call_outcomes
    assert (outcomes[CallOutcome.OK], outcomes[CallOutcome.ERROR], outcomes[CallOutcome.CANCELLED]) == (
        1,
        1,
        1,
    )
    assert router.stats.call_latency.count == 2  # answered calls only
    assert router.stats.recent_errors[-1].message == "ValueError: x"
    assert router.stats.recent_errors[-1].worker_id == caller.worker_id

    rpc(router, caller, 4, "send", **SEND)
    router.close_session(target, "test")
    assert outcomes[CallOutcome.WORKER_DISCONNECTED] == 1
    assert router.stats.errors[ErrorCode.WORKER_DISCONNECTED] == 1

    other = greeted(router, "c")
    rpc(router, caller, 5, "send", recipient={"type": "c", "key": "k"}, payload=SEND["payload"])
    router.close_session(caller, "test")
    assert outcomes[CallOutcome.CALLER_DISCONNECTED] == 1
    assert router.pending_calls == 0 and other.calls_served == {}


async def test_calls_failed_at_shutdown_are_counted() -> None:
    router = RoutingCore()
    caller, _ = greeted(router), greeted(router, "b")
    rpc(router, caller, 1, "send", **SEND)
    await bounded(router.drain(grace=0))
    assert router.stats.call_outcomes[CallOutcome.SHUTDOWN] == 1
    assert router.stats.errors[ErrorCode.SHUTTING_DOWN] == 1
    assert router.stopping.is_set()


def test_recent_errors_are_bounded_and_truncated() -> None:
    router = RoutingCore()
    session = greeted(router)
    for n in range(200):
        rpc(router, session, n, "no_such_method", blob="x" * 1000)
    assert len(router.stats.recent_errors) == 50
    assert router.stats.recent_errors[-1].request_id == 199
    assert router.stats.errors[ErrorCode.METHOD_NOT_FOUND] == 200

    router.stats.count_error(ErrorCode.REMOTE_ERROR, "z" * 100_000)
    assert len(router.stats.recent_errors[-1].message) < 400


def test_latency_histogram_buckets_are_cumulative_and_inclusive() -> None:
    histogram = LatencyHistogram()
    for seconds in (0.0001, 0.0005, 0.003, 7.0, 1000.0):
        histogram.observe(seconds)
    pairs = dict(histogram.cumulative())
    assert pairs[0.0005] == 2  # a value on a bound falls in that bound's bucket
    assert pairs[0.005] == 3 and pairs[10.0] == 4 and pairs[float("inf")] == 5
    assert histogram.count == 5 and histogram.sum == pytest.approx(1007.0036)
    assert histogram.quantile(0.5) == 0.005 and histogram.quantile(1.0) == float("inf")
    assert LatencyHistogram().quantile(0.5) is None
    assert list(pairs)[:-1] == list(LATENCY_BUCKETS)
