"""The floor under the RPC latency figure: the same three-process relay, with nothing on top.

A client process sends a line to a relay process, which passes it to an echo process and
its answer back: the path of one routed call (driver -> host -> echo worker -> host ->
driver), in raw asyncio TCP, without WebSockets, JSON or autogen-core. Its median round
trip is what four process wake-ups and four loopback writes cost on this machine; no
runtime routed through a host does a call faster. ``--loop uvloop`` runs every process on
uvloop.

    .venv/bin/python benchmarks/relay_floor.py [--loop uvloop] [--calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any

from autogen_http_runtime._cli.main import _runner

LINE = b'{"jsonrpc":"2.0","id":1,"method":"send","params":{"payload":{"data":"0123456789abcdef"}}}\n'


def run(main: Coroutine[Any, Any, None], loop: str) -> None:
    runner = _runner(loop)  # what `serve --loop` uses
    if runner is None:
        raise SystemExit("--loop uvloop needs uvloop: pip install 'autogen-http-runtime[fast]'")
    runner(main)


async def relay() -> None:
    """Pass each line from one peer to the other; the first line says who a peer is."""
    peers: dict[bytes, asyncio.StreamWriter] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        role = (await reader.readline()).strip()
        peers[role] = writer
        if role == b"echo":
            print("echo connected", flush=True)
        other = b"echo" if role == b"client" else b"client"
        while line := await reader.readline():
            peers[other].write(line)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


async def echo(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"echo\n")
    while line := await reader.readline():
        writer.write(line)


async def client(port: int, calls: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"client\n")
    times = []
    for n in range(calls + calls // 10):  # the first tenth warms up
        start = time.perf_counter()
        writer.write(LINE)
        if await reader.readline() != LINE:
            raise RuntimeError("the relay answered with a different line")
        if n >= calls // 10:
            times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=100)
    print(f"round trip through the relay: p50 {q[49] * 1e3:.3f} ms, p90 {q[89] * 1e3:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--role", choices=["relay", "echo"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "relay":
        return run(relay(), args.loop)
    if args.role == "echo":
        return run(echo(args.port), args.loop)
    me = [sys.executable, os.path.abspath(__file__), "--loop", args.loop]
    with subprocess.Popen([*me, "--role", "relay"], stdout=subprocess.PIPE, text=True) as relay_process:
        assert relay_process.stdout is not None
        port = int(relay_process.stdout.readline())
        with subprocess.Popen([*me, "--role", "echo", "--port", str(port)]) as echo_process:
            try:
                if relay_process.stdout.readline().strip() != "echo connected":
                    raise RuntimeError("the echo process did not connect to the relay")
                run(client(port, args.calls), args.loop)
            finally:
                echo_process.terminate()
                relay_process.terminate()


if __name__ == "__main__":
    main()
