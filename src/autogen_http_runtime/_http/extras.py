"""The service's optional parts, imported only when asked for: a cluster needs Redis (the
``[cluster]`` extra), A2A the A2A SDK (``[a2a]``)."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from .._host.core import RoutingCore
from .._host.security import AccessPolicy, Authenticator

if TYPE_CHECKING:
    from .._cluster.node import ClusterNode
    from .a2a_routes import A2AEndpoints

#: Needed by ``a2a=True``: the A2A SDK's server classes, and jsonschema to check A2A input.
A2A_EXTRA_HINT = 'HttpAgentService(a2a=True) needs the A2A extra: pip install "autogen-http-runtime[a2a]"'
#: Needed by ``redis_url=``: the Redis client.
CLUSTER_EXTRA_HINT = (
    'HttpAgentService(redis_url=...) needs the cluster extra: pip install "autogen-http-runtime[cluster]"'
)


def cluster_node(
    redis_url: str,
    name: str,
    secret: str | None,
    lease: float,
    delivery: tuple[str, float, int],
    *,
    replicas: bool,
    max_message_size: int,
    access: AccessPolicy | None,
    logger: logging.Logger,
) -> ClusterNode:
    """This host's node in its cluster, imported only when asked for: Redis is an optional extra.

    Raises:
        ImportError: The ``[cluster]`` extra is not installed.
        ValueError: A setting that cannot work (no secret, a bad URL or name).
    """
    try:
        node = importlib.import_module("autogen_http_runtime._cluster.node")
    except ImportError as exc:
        raise ImportError(f"{CLUSTER_EXTRA_HINT} ({exc})") from exc
    config = node.ClusterConfig(redis_url, secret or "", name, lease, *delivery)
    cluster: ClusterNode = node.ClusterNode(
        config, replicas=replicas, max_message_size=max_message_size, access=access, logger=logger
    )
    return cluster


def a2a_endpoints(
    core: RoutingCore,
    authenticator: Authenticator | None,
    slow_consumer_timeout: float,
    logger: logging.Logger,
) -> A2AEndpoints:
    """The A2A endpoints, imported only when asked for: the A2A SDK is an optional extra.

    Raises:
        ImportError: The ``[a2a]`` extra is not installed.
    """
    try:
        routes = importlib.import_module("autogen_http_runtime._http.a2a_routes")
    except ImportError as exc:
        raise ImportError(f"{A2A_EXTRA_HINT} ({exc})") from exc
    endpoints: A2AEndpoints = routes.A2AEndpoints(
        core, secured=authenticator is not None, slow_consumer_timeout=slow_consumer_timeout, logger=logger
    )
    return endpoints
