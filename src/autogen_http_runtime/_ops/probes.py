"""The operator's endpoints of a host: probes, metrics and the dashboard, on one router.

``HttpAgentService`` includes :func:`operations_router` in its own router, so the
endpoints sit next to the worker WebSocket wherever the service is mounted. None of them
needs authentication, and each reads the routing core without changing it:

- ``GET /healthz``: 200 while the process serves HTTP at all (liveness).
- ``GET /readyz``: 200 while the host accepts workers; 503 with the reason otherwise
  (readiness: take the host out of a load balancer while it drains, or, in a cluster,
  while it cannot reach the cluster's engine).
- ``GET /metrics``: Prometheus text format (:mod:`._metrics`).
- ``GET /dashboard`` and ``GET /dashboard/events``: the live page (:mod:`._dashboard`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .._host import views
from .._host.core import RoutingCore
from .dashboard import dashboard_router
from .metrics import metrics_router

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"


def probes_router(core: RoutingCore) -> APIRouter:
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def readyz() -> JSONResponse:
        if not core.accepting:
            body: dict[str, Any] = {
                "status": "unavailable",
                "reason": "draining: the host is shutting down and takes no new workers or calls",
            }
            return JSONResponse(body, status_code=503, headers={"Cache-Control": "no-store"})
        cluster = core.directory.cluster
        if cluster is not None and cluster.unavailable is not None:
            body = {
                "status": "unavailable",
                "reason": f"cluster {cluster.name!r} out of reach: {cluster.unavailable}; calls between "
                "this host's workers go on, calls to other hosts fail",
            }
            return JSONResponse(body, status_code=503, headers={"Cache-Control": "no-store"})
        body = {"status": "ready", "workers": views.worker_count(core)}
        if cluster is not None:
            body["cluster"] = {"name": cluster.name, "host": cluster.host, "hosts": len(cluster.hosts)}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    router = APIRouter(tags=["operations"])
    router.add_api_route(
        HEALTH_PATH,
        healthz,
        methods=["GET"],
        name="healthz",
        summary="Liveness: the host process serves HTTP",
    )
    router.add_api_route(
        READY_PATH,
        readyz,
        methods=["GET"],
        name="readyz",
        summary="Readiness: 200 while the host accepts workers, 503 with a reason while it drains",
    )
    return router


def operations_router(core: RoutingCore) -> APIRouter:
    """Probes, metrics and the dashboard for the host whose routing core is ``core``."""
    router = APIRouter()
    router.include_router(probes_router(core))
    router.include_router(metrics_router(core))
    router.include_router(dashboard_router(core))
    return router
