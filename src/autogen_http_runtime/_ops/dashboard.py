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

from autogen_core import TypePrefixSubscription, TypeSubscription
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, StreamingResponse

from .._host.core import MessageRouter
from .._host.stats import error_code_name, traffic

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


def snapshot(core: MessageRouter) -> dict[str, Any]:
    """What the page shows, as JSON-ready data."""
    stats = core.stats
    workers = sorted(core.workers(), key=lambda s: s.connected_at)
    subscriptions = []
    for subscription in list(core.subscriptions.values())[:MAX_ROWS]:
        if isinstance(subscription, TypeSubscription):
            kind, topic = "type", subscription.topic_type
        elif isinstance(subscription, TypePrefixSubscription):
            kind, topic = "prefix", subscription.topic_type_prefix
        else:  # pragma: no cover - the host stores only these two kinds
            kind, topic = type(subscription).__name__, ""
        subscriptions.append(
            {"id": subscription.id, "kind": kind, "topic": topic, "agent_type": _agent_type(subscription)}
        )
    latency = stats.call_latency
    totals = traffic(core)
    return {
        "time": time.time(),
        "accepting": core.accepting,
        "workers": [
            {
                "id": session.worker_id,
                "name": session.name,
                "connected_at": session.connected_at,
                "agent_types": sorted(session.agent_types),
                "subscriptions": len(session.subscription_ids),
                "calls_made": len(session.calls_made),
                "calls_served": len(session.calls_served),
                "frames_in": session.frames_in,
                "frames_out": session.frames_out,
                "bytes_in": session.bytes_in,
                "bytes_out": session.bytes_out,
                "queued_bytes": session.queued_bytes,
            }
            for session in workers[:MAX_ROWS]
        ],
        "worker_count": len(workers),
        "agent_types": [
            {"type": agent_type, "worker_id": worker_id}
            for agent_type, worker_id in list(core.describe_agent_types().items())[:MAX_ROWS]
        ],
        "agent_type_count": len(core.agent_types),
        "subscriptions": subscriptions,
        "subscription_count": len(core.subscriptions),
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


def _agent_type(subscription: object) -> str:
    agent_type = getattr(subscription, "agent_type", "")
    return agent_type if isinstance(agent_type, str) else ""


def _finite(value: float | None) -> float | str | None:
    return "+Inf" if value == float("inf") else value


def dashboard_router(core: MessageRouter) -> APIRouter:
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


async def _stream(core: MessageRouter, interval: float) -> AsyncIterator[str]:
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
