"""``autogen-http-runtime serve``: the host its settings describe, run until a signal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .._http.server import HttpAgentServer
from .._http.service import HttpAgentService
from . import files
from .settings import ServeSettings


def make_server(settings: ServeSettings) -> HttpAgentServer:
    """The host ``settings`` describe, its files read and checked.

    Raises:
        ValueError: A setting, or a file one names, is wrong (the message says which and how).
    """
    authenticator = settings.authenticator()
    files.check_tls_files(
        settings.ssl_certfile, settings.ssl_keyfile, settings.ssl_keyfile_password, settings.ssl_ca_certs
    )
    service = HttpAgentService(
        max_message_size=settings.max_message_size,
        max_queued_bytes=settings.max_queued_bytes,
        max_calls_in_flight=settings.max_calls_in_flight,
        slow_consumer_timeout=settings.slow_consumer_timeout,
        hello_timeout=settings.hello_timeout,
        authenticator=authenticator,
        access_policy=settings.policy(authenticator),
        rate_limit=settings.limit(),
        max_subscriptions=settings.max_subscriptions,
        max_connections=settings.max_connections,
        max_connections_per_identity=settings.max_connections_per_identity,
        public_routes=[name.strip() for name in settings.public_routes.split(",") if name.strip()],
        replicas=settings.replicas,
        redis_url=settings.redis_url,
        cluster_name=settings.cluster_name,
        cluster_secret=settings.cluster_secret,
        cluster_lease=settings.cluster_lease,
        cluster_link_url=settings.cluster_link_url,
        state_dir=settings.state_dir,
        max_state_size=settings.max_state_size,
        delivery=settings.delivery,
        visibility_timeout=settings.visibility_timeout,
        max_deliveries=settings.max_deliveries,
        a2a=settings.a2a,
    )
    return HttpAgentServer(
        settings.host,
        port=settings.port,
        max_message_size=settings.max_message_size,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        service=service,
        compression=settings.compression,
        # uvicorn's own lines repeat ours (connection open/closed): only its warnings, but at DEBUG.
        log_level="debug" if settings.log_level == "debug" else "warning",
        ssl=settings.uvicorn_ssl(),
    )


async def serve(settings: ServeSettings, on_ready: Callable[[HttpAgentServer], None]) -> None:
    """Serve until SIGTERM or SIGINT, then drain for ``settings.grace`` seconds and stop.

    Raises:
        OSError: The address cannot be bound.
    """
    server = make_server(settings)
    await server.start()
    stopping = asyncio.ensure_future(server.stop_when_signal(grace=settings.grace))
    # The server is started, so the task's first step installs the signal handlers: only
    # then is it safe to say we are ready (a SIGTERM before that would kill the process).
    await asyncio.sleep(0)
    if not stopping.done():
        on_ready(server)
    await stopping
