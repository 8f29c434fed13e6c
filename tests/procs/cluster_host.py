"""A host of a cluster: joins it through Redis and serves on 127.0.0.1 until killed or signalled.

Usage: ``python -m tests.procs.cluster_host REDIS_URL SECRET [--lease S] [--replicas]
[--name CLUSTER] [--delivery MODE] [--visibility-timeout S] [--max-deliveries N] [--port P]
[--link-url URL]``
(an ephemeral port by default; the cluster soak restarts a host on its port). Prints
``READY <url> <host name in the cluster>`` once serving.
"""

from __future__ import annotations

import argparse
import asyncio

from autogen_http_runtime import HttpAgentServer

from . import run_until_signal, say


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("redis_url")
    parser.add_argument("secret")
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--replicas", action="store_true")
    parser.add_argument("--name", default="default")
    parser.add_argument("--delivery", default="at-most-once")
    parser.add_argument("--visibility-timeout", type=float, default=30.0)
    parser.add_argument("--max-deliveries", type=int, default=5)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--link-url", help="cluster_link_url ('auto': direct links at the bound address)")
    args = parser.parse_args()
    server = HttpAgentServer(
        "127.0.0.1",
        port=args.port,
        replicas=args.replicas,
        redis_url=args.redis_url,
        cluster_name=args.name,
        cluster_secret=args.secret,
        cluster_lease=args.lease,
        delivery=args.delivery,
        visibility_timeout=args.visibility_timeout,
        max_deliveries=args.max_deliveries,
        cluster_link_url=args.link_url,
    )
    await server.start()
    stopping = await run_until_signal(server.stop_when_signal(grace=1.0))
    assert server.service.cluster is not None
    say(f"READY {server.url} {server.service.cluster.host}")
    await stopping
    say("STOPPED")


if __name__ == "__main__":
    asyncio.run(main())
