"""``GET /dashboard``: a live page about the host, fed by server-sent events.

The page (``static/dashboard.html``) is one self-contained file, HTML, CSS and JS, with
no build step. It opens ``dashboard/events``, which sends a JSON snapshot of the routing
core every ``interval`` seconds; the page computes rates from successive snapshots.
Snapshots are built only while a page is open, so the dashboard costs nothing otherwise.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, StreamingResponse

from .._exceptions import error_code_name
from .._host import views
from .._host.core import RoutingCore

DASHBOARD_PATH = "/dashboard"
EVENTS_PATH = "/dashboard/events"
#: A stream ends after this many seconds and the browser reconnects at once: no HTTP
#: connection outlives a server shutdown by more than this, even under a plain uvicorn.
STREAM_LIFETIME = 60.0
#: Longest lists sent to the page; a host with thousands of workers stays readable.
MAX_ROWS = 500


@cache
def page() -> str:
    return resources.files(__package__).joinpath("static").joinpath("dashboard.html").read_text("utf-8")


def snapshot(core: RoutingCore) -> dict[str, Any]:
    """What the page shows, as JSON-ready data."""
    stats = core.stats
    workers = views.workers(core)
    subscriptions = views.subscriptions(core)
    agent_types = views.agent_type_views(core)
    latency = stats.call_latency
    totals = views.traffic(core)
    return {
        "time": time.time(),
        "accepting": core.accepting,
        "workers": [
            {
                "id": worker.worker_id,
                "name": worker.name,
                "host": worker.host,
                "connected_at": worker.connected_at,
                "agent_types": worker.agent_types,
                "subscriptions": worker.subscriptions,
                "calls_made": worker.calls_made,
                "calls_served": worker.calls_served,
                "calls_in_flight": worker.calls_in_flight,
                "calls_serving": worker.calls_serving,
                "frames_in": worker.frames_in,
                "frames_out": worker.frames_out,
                "bytes_in": worker.bytes_in,
                "bytes_out": worker.bytes_out,
                "queued_bytes": worker.queued_bytes,
            }
            for worker in workers[:MAX_ROWS]
        ],
        "worker_count": len(workers),
        "agent_types": [
            {
                "type": view.agent_type,
                "worker_id": view.replicas[0].worker_id,
                "replicas": [
                    {"worker_id": r.worker_id, "calls": r.routed, "agent_ids": r.agent_ids}
                    for r in view.replicas
                ],
            }
            for view in agent_types[:MAX_ROWS]
        ],
        "agent_type_count": len(agent_types),
        "subscriptions": [
            {"id": s.id, "kind": s.kind, "topic": s.topic, "agent_type": s.agent_type}
            for s in subscriptions[:MAX_ROWS]
        ],
        "subscription_count": len(subscriptions),
        "totals": {
            "calls_routed": stats.calls_routed,
            "calls_answered": stats.calls_answered,
            "calls_in_flight": core.pending_calls,
            "events_published": stats.events_published,
            "event_copies_delivered": stats.event_copies_delivered,
            "event_copies_dropped": stats.event_copies_dropped,
            "errors": sum(stats.errors.values()),
            **totals._asdict(),
        },
        "call_outcomes": dict(stats.call_outcomes),
        "latency": {
            "count": latency.count,
            "mean": latency.sum / latency.count if latency.count else None,
            "p50": _finite(latency.quantile(0.5)),
            "p95": _finite(latency.quantile(0.95)),
        },
        "errors_by_code": [
            {"code": code, "name": error_code_name(code), "count": count}
            for code, count in sorted(stats.errors.items())
        ],
        "recent_errors": [
            {
                "time": record.at,
                "code": record.code,
                "name": error_code_name(record.code),
                "message": record.message,
                "worker_id": record.worker_id,
                "request_id": record.request_id,
            }
            for record in reversed(stats.recent_errors)
        ],
    }


def _finite(value: float | None) -> float | str | None:
    return "+Inf" if value == float("inf") else value


def dashboard_router(core: RoutingCore) -> APIRouter:
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page(), headers={"Cache-Control": "no-cache"})

    async def events(
        interval: float = Query(1.0, ge=0.1, le=60.0, description="Seconds between snapshots"),
    ) -> StreamingResponse:
        return StreamingResponse(
            _stream(core, interval),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    router = APIRouter()
    router.add_api_route(
        DASHBOARD_PATH, dashboard, methods=["GET"], name="dashboard", include_in_schema=False
    )
    router.add_api_route(
        EVENTS_PATH, events, methods=["GET"], name="dashboard_events", include_in_schema=False
    )
    return router


async def _stream(core: RoutingCore, interval: float) -> AsyncIterator[str]:
    """Server-sent events: a snapshot every ``interval`` seconds until the host stops.

    Starlette cancels this generator when the browser goes away; a stopping host ends it
    at once, so an open page never holds up a shutdown.
    """
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + STREAM_LIFETIME
    yield "retry: 1000\n\n"
    while True:
        yield f"data: {json.dumps(snapshot(core))}\n\n"
        if core.stopping.is_set() or loop.time() >= ends_at:
            return
        try:
            await asyncio.wait_for(core.stopping.wait(), interval)
        except asyncio.TimeoutError:
            pass
