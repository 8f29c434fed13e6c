"""The floor under a cross-host hop: PUBLISH/SUBSCRIBE over bare asyncio protocols and hiredis.

Same relay as ``benchmarks/redis_probe.py`` (A publishes a ~300-byte message to B's channel,
B answers on A's), but each side talks RESP2 itself: one connection that only SUBSCRIBEs,
one that only PUBLISHes, replies parsed by ``hiredis.Reader``, and commands written without
waiting for their replies (the PUBLISH reply, the number of receivers, is still read and
checked: 0 means the peer host is gone). Frames queued in the same loop iteration leave as
one PUBLISH (length-prefixed batch). This is what a thin inbox link could cost; it is not a
client library, only the two commands the hot path needs.

Usage::

    python benchmarks/redis_prototype/raw_relay.py [--count N] [--messages M] [--inflight K]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hiredis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.redis_server import RedisServer  # noqa: E402

SIZE = 300
HEADER = struct.Struct("<IQQ")
LENGTH = struct.Struct("<I")
A_INBOX, B_INBOX = b"raw:a", b"raw:b"


def command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class Connection(asyncio.Protocol):
    """One RESP2 connection: replies go to ``on_reply``, pub/sub messages to ``on_message``."""

    def __init__(self, on_message: Callable[[bytes], None] | None = None) -> None:
        self.reader = hiredis.Reader()
        self.on_message = on_message
        self.replies: deque[Callable[[Any], None]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if self.on_message is not None and isinstance(reply, list) and reply[0] == b"message":
                self.on_message(reply[2])
            elif self.replies:
                self.replies.popleft()(reply)

    def send(self, data: bytes, on_reply: Callable[[Any], None]) -> None:
        assert self.transport is not None
        self.replies.append(on_reply)
        self.transport.write(data)


async def connect(port: int, on_message: Callable[[bytes], None] | None = None) -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: Connection(on_message), "127.0.0.1", port)
    return protocol


class Outbox:
    """Coalesces what is sent to one channel in one loop iteration into one PUBLISH."""

    def __init__(self, conn: Connection, channel: bytes) -> None:
        self.conn, self.channel = conn, channel
        self.queue: list[bytes] = []
        self.publishes = 0
        self.unreceived = 0

    def send(self, message: bytes) -> None:
        if not self.queue:
            asyncio.get_running_loop().call_soon(self.flush)
        self.queue.append(LENGTH.pack(len(message)) + message)

    def flush(self) -> None:
        batch, self.queue = b"".join(self.queue), []
        self.publishes += 1
        self.conn.send(command(b"PUBLISH", self.channel, batch), self._receivers)

    def _receivers(self, count: Any) -> None:
        if count == 0:
            self.unreceived += 1  # the peer's inbox has no subscriber: that host is gone


def unpack(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        (n,) = LENGTH.unpack_from(data, at)
        out.append(data[at + 4 : at + 4 + n])
        at += 4 + n
    return out


async def subscribe(port: int, channel: bytes, deliver: Callable[[bytes], None]) -> Connection:
    def on_message(batch: bytes) -> None:
        for message in unpack(batch):
            deliver(message)

    conn = await connect(port, on_message)
    confirmed = asyncio.get_running_loop().create_future()
    conn.send(command(b"SUBSCRIBE", channel), confirmed.set_result)
    await asyncio.wait_for(confirmed, 5)
    return conn


async def echo(port: int) -> None:
    out = Outbox(await connect(port), A_INBOX)
    one_way: list[int] = []

    def deliver(message: bytes) -> None:
        seq, sent, _ = HEADER.unpack_from(message)
        one_way.append(time.monotonic_ns() - sent)
        out.send(HEADER.pack(seq, sent, time.monotonic_ns()) + message[HEADER.size :])

    await subscribe(port, B_INBOX, deliver)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if line == "stats":
            print(json.dumps({"one_way_ns": one_way, "publishes": out.publishes}), flush=True)
            one_way.clear()
            out.publishes = 0
        else:
            break


def quantiles_us(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        f"p{q}": round(ordered[min(len(ordered) - 1, len(ordered) * q // 100)] / 1000, 1)
        for q in (50, 90, 99)
    }


def start_peer(port: int) -> subprocess.Popen[str]:
    peer = subprocess.Popen(
        [sys.executable, __file__, "_echo", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert peer.stdout is not None
    assert peer.stdout.readline().strip() == "READY"
    return peer


async def drive(port: int, count: int, messages: int, inflight: int) -> list[dict[str, Any]]:
    peer = await asyncio.to_thread(start_peer, port)
    assert peer.stdin is not None and peer.stdout is not None

    def stats() -> dict[str, Any]:
        assert peer.stdin is not None and peer.stdout is not None
        peer.stdin.write("stats\n")
        peer.stdin.flush()
        return json.loads(peer.stdout.readline())  # type: ignore[no-any-return]

    out = Outbox(await connect(port), B_INBOX)
    waiting: dict[int, asyncio.Future[int]] = {}
    state = {"done": 0, "target": 0}
    window = asyncio.Semaphore(inflight)
    finished = asyncio.Event()

    def deliver(message: bytes) -> None:
        seq, _, _ = HEADER.unpack_from(message)
        future = waiting.pop(seq, None)
        if future is not None:
            future.set_result(time.monotonic_ns())
            return
        window.release()
        state["done"] += 1
        if state["done"] == state["target"]:
            finished.set()

    sub = await subscribe(port, A_INBOX, deliver)
    pad = b"x" * (SIZE - HEADER.size)
    rows = []
    try:
        rtt = []
        for seq in range(count + count // 10):
            future = asyncio.get_running_loop().create_future()
            waiting[seq] = future
            sent = time.monotonic_ns()
            out.send(HEADER.pack(seq, sent, 0) + pad)
            arrived = await asyncio.wait_for(future, 10)
            if seq >= count // 10:
                rtt.append(arrived - sent)
        one_way = (await asyncio.to_thread(stats))["one_way_ns"][count // 10 :]
        rows.append({"raw relay": "latency", "rtt_us": quantiles_us(rtt), "a_to_b_us": quantiles_us(one_way)})

        for _ in range(2):  # the first round warms up
            state["done"], state["target"] = 0, messages
            finished.clear()
            before = out.publishes
            started = time.perf_counter()
            for seq in range(messages):
                await window.acquire()
                out.send(HEADER.pack(1_000_000_000 + seq, time.monotonic_ns(), 0) + pad)
            await asyncio.wait_for(finished.wait(), 60)
            elapsed = time.perf_counter() - started
            b = await asyncio.to_thread(stats)
        rows.append(
            {
                "raw relay": "throughput",
                "inflight": inflight,
                "messages_per_s": round(messages / elapsed),
                "publishes_per_round_trip": round((out.publishes - before + b["publishes"]) / messages, 3),
                "a_to_b_p50_us": quantiles_us(b["one_way_ns"])["p50"],
                "peer_gone_replies": out.unreceived,
            }
        )
    finally:
        assert sub.transport is not None and out.conn.transport is not None
        sub.transport.close()
        out.conn.transport.close()
        with contextlib.suppress(BrokenPipeError):
            peer.stdin.write("quit\n")
            peer.stdin.close()
        peer.wait(10)
        peer.stdout.close()
    return rows


async def main(args: argparse.Namespace) -> None:
    with RedisServer() as server:
        for row in await drive(server.port, args.count, args.messages, args.inflight):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_echo"]:
        asyncio.run(echo(int(sys.argv[2])))
        sys.exit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--messages", type=int, default=30000)
    parser.add_argument("--inflight", type=int, default=128)
    asyncio.run(main(parser.parse_args()))
