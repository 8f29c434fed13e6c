"""A host process for the attack tests (``tests/test_attacks_load.py``), from the public API
but for one switch (:func:`take_the_asgi_path`).

Usage: ``python -m tests.procs.attack_host [--path direct|asgi] [--rate-limit R]
[--ping-interval S] [--ping-timeout S] [--slow-consumer-timeout S] [--max-queued-bytes N]
[--max-message-size N] [--hello-timeout S] [--nofile N] [--loop asyncio|uvloop]``

The host is an ``HttpAgentServer``. With ``--path direct`` (the default) its worker WebSockets
take the direct path (``_transport/uvicorn_protocol.py``), with ``--path asgi`` the ASGI path a
mounted service takes: the two paths ``tests/conftest.py`` runs the suite on. ``--nofile``
lowers the process's RLIMIT_NOFILE before anything is opened; ``--loop uvloop`` runs the
host on uvloop, as ``serve`` does when it is installed.

Prints ``READY <url>`` once serving, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from typing import Any

from autogen_http_runtime import HttpAgentServer, HttpAgentService, RateLimit

from . import say


def service_from(args: argparse.Namespace) -> HttpAgentService:
    settings: dict[str, Any] = {
        "max_message_size": args.max_message_size,
        "max_queued_bytes": args.max_queued_bytes,
        "slow_consumer_timeout": args.slow_consumer_timeout,
        "hello_timeout": args.hello_timeout,
    }
    if args.rate_limit:
        settings["rate_limit"] = RateLimit(args.rate_limit, max(1, int(2 * args.rate_limit)))
    return HttpAgentService(**settings)


def take_the_asgi_path() -> None:
    """Make ``HttpAgentServer`` serve worker WebSockets through ASGI, as a mounted service does.

    PRIVATE: it replaces ``_server.direct_protocol``, as ``tests/conftest.py`` does for the
    ``asgi`` runs of the suite; the only private name the attack tests touch in the host.
    """
    from autogen_http_runtime._http import server as _server

    _server.direct_protocol = lambda: None  # type: ignore[assignment]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", choices=["direct", "asgi"], default="direct")
    parser.add_argument("--rate-limit", type=float, default=0.0)
    parser.add_argument("--ping-interval", type=float, default=20.0, help="0: no keepalive")
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    parser.add_argument("--slow-consumer-timeout", type=float, default=10.0)
    parser.add_argument("--max-queued-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--max-message-size", type=int, default=32 * 1024 * 1024)
    parser.add_argument("--hello-timeout", type=float, default=10.0)
    parser.add_argument("--nofile", type=int, default=0)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    if args.nofile:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    if args.path == "asgi":
        take_the_asgi_path()
    server = HttpAgentServer(
        "127.0.0.1",
        port=0,
        service=service_from(args),
        max_message_size=args.max_message_size,
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout,
    )
    await server.start()
    say(f"READY {server.url}")
    await asyncio.Event().wait()


if __name__ == "__main__":
    if "--loop" in sys.argv and sys.argv[sys.argv.index("--loop") + 1] == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
