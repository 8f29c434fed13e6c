"""Run the demo's host: an HttpAgentServer on 127.0.0.1:9000 until SIGINT/SIGTERM.

    python samples/run_server.py [--port 9000] [--host 127.0.0.1]

The port can also come from the AUTOGEN_HTTP_PORT environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from autogen_http_runtime import HttpAgentServer


async def main(host: str, port: int) -> None:
    # log_level="warning" quiets uvicorn's per-connection lines; ours say the same once.
    server = HttpAgentServer(host, port=port, log_level="warning")
    try:
        await server.start()
    except OSError as exc:  # e.g. the port is taken: one line says it all
        raise SystemExit(f"run_server: {exc}") from None
    print(f"host ready on {server.url}", flush=True)
    await server.stop_when_signal()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("AUTOGEN_HTTP_PORT", "9000")),
        help="port to listen on (default: $AUTOGEN_HTTP_PORT or 9000)",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="level of the host's log lines (default: %(default)s)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main(args.host, args.port))
