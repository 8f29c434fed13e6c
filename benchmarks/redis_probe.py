"""How fast, and how robust, is redis-py as the link between two hosts? (A probe, not a test.)

Two OS processes on loopback relay a ~300-byte message through our own redis-server
(tests/redis_server.py, never the shared instance on 6379): A sends to B's inbox, B answers
into A's inbox. Every combination of

* transport: ``pubsub`` (PUBLISH / SUBSCRIBE) or ``stream`` (XADD / blocking XREAD);
* protocol: RESP2 or RESP3 (pub/sub messages then arrive as push frames);
* reply parser: hiredis (the C parser) or redis-py's pure-Python one;

is measured for

* latency: round trips one at a time (p50/p90/p99), and each one-way leg (the message
  carries CLOCK_MONOTONIC stamps, which both processes share on Linux);
* throughput: ``--inflight`` (128) messages outstanding, with a writer that sends each
  message as its own command from concurrent tasks (``naive``: one pooled connection per
  task), or that drains its queue into one pipeline (``pipeline``), or packs the queued
  messages into ONE command per flush (``packed``).

``failure`` runs in one process: what redis-py does when redis-server is SIGKILLed, restarted
empty, or frozen (SIGSTOP), with the default retry policy and with a fail-fast one.

Usage::

    python benchmarks/redis_probe.py [latency] [throughput] [failure] [--count N] [--inflight K]

Prints one line per measurement (and JSON with ``--json FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402
from redis.asyncio.retry import Retry  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.exceptions import RedisError  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

SIZE = 300
HEADER = struct.Struct("<IQQ")  # sequence number, A's send time, B's send time (ns, CLOCK_MONOTONIC)
LENGTH = struct.Struct("<I")
A_INBOX, B_INBOX = b"probe:a", b"probe:b"
STREAM_MAXLEN = 100_000


# -- the link: one inbox to read, a writer to send into the other ----------------------------------


def make_client(url: str, resp: int, parser: str, **kwargs: Any) -> aioredis.Redis:
    """A client with the asked protocol and parser (the parser is a connection-pool option).
    ``socket_timeout`` is off unless asked: redis-py 8 wraps every write of a client that has
    one in ``asyncio.wait_for`` (a task per command on 3.11), which ``ping_floor`` shows costs
    more than the rest of the command; the relays bound their waits themselves."""
    kwargs.setdefault("socket_timeout", None)
    # The asyncio pool refuses a 101st connection (MaxConnectionsError, no waiting): the naive
    # writer, one connection per message in flight, needs more.
    kwargs.setdefault("max_connections", 1024)
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser, _AsyncRESP3Parser

    python_parser = _AsyncRESP3Parser if resp == 3 else _AsyncRESP2Parser
    parser_class = _AsyncHiredisParser if parser == "hiredis" else python_parser
    pool = aioredis.ConnectionPool.from_url(url, protocol=resp, parser_class=parser_class, **kwargs)
    return aioredis.Redis(connection_pool=pool)


def pack(messages: Sequence[bytes]) -> bytes:
    return b"".join(LENGTH.pack(len(m)) + m for m in messages)


def unpack(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        (n,) = LENGTH.unpack_from(data, at)
        out.append(data[at + 4 : at + 4 + n])
        at += 4 + n
    return out


class Writer:
    """Sends messages to one inbox. ``naive`` awaits one command per message in the caller's
    task; ``pipeline`` and ``packed`` queue them for one writer task that flushes whatever has
    queued up as one pipeline of commands, or as a single command carrying them all."""

    def __init__(self, client: aioredis.Redis, transport: str, inbox: bytes, mode: str) -> None:
        self.client, self.transport, self.inbox, self.mode = client, transport, inbox, mode
        self.queue: list[bytes] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.flushes = 0
        self.commands = 0
        if mode != "naive":
            self.task = asyncio.create_task(self._run())

    def _command(self, pipe: Any, payload: bytes) -> Any:
        if self.transport == "pubsub":
            return pipe.publish(self.inbox, payload)
        return pipe.xadd(self.inbox, {b"m": payload}, maxlen=STREAM_MAXLEN, approximate=True)

    async def send(self, message: bytes) -> None:
        if self.mode == "naive":
            self.commands += 1
            self.flushes += 1
            await self._command(self.client, pack([message]))
        else:
            self.post(message)

    def post(self, message: bytes) -> None:
        """Queue ``message`` for the writer task (``pipeline`` and ``packed``)."""
        self.queue.append(message)
        self.wake.set()

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.queue = self.queue, []
            self.flushes += 1
            if self.mode == "packed" or len(batch) == 1:
                self.commands += 1
                await self._command(self.client, pack(batch))
            else:
                self.commands += len(batch)
                async with self.client.pipeline(transaction=False) as pipe:
                    for message in batch:
                        self._command(pipe, pack([message]))
                    await pipe.execute()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def read_inbox(
    url: str, transport: str, resp: int, parser: str, inbox: bytes, deliver: Callable[[bytes], None],
    ready: asyncio.Event,
) -> None:  # fmt: skip
    """Call ``deliver`` for every message arriving in ``inbox`` (packed batches unpacked)."""
    client = make_client(url, resp, parser)
    try:
        if transport == "pubsub":
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(inbox)
                ready.set()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None or message["type"] != "message":
                        continue
                    for m in unpack(message["data"]):
                        deliver(m)
        else:
            last = b"$"
            ready.set()
            while True:
                reply = await client.xread({inbox: last}, count=1024, block=1000)
                for _stream, entries in reply.items() if isinstance(reply, dict) else reply:
                    if resp == 3:  # redis-py 8 nests RESP3 entries one list deeper than RESP2's
                        entries = entries[0]
                    for entry_id, fields in entries:
                        last = entry_id
                        for m in unpack(fields[b"m"]):
                            deliver(m)
    finally:
        await client.aclose()


# -- process B: echo -------------------------------------------------------------------------------


async def echo(url: str, transport: str, resp: int, parser: str, mode: str) -> None:
    client = make_client(url, resp, parser)
    writer = Writer(client, transport, A_INBOX, mode)
    one_way: list[int] = []
    replies: set[asyncio.Task[None]] = set()

    def deliver(message: bytes) -> None:
        seq, sent, _ = HEADER.unpack_from(message)
        now = time.monotonic_ns()
        one_way.append(now - sent)
        reply = HEADER.pack(seq, sent, time.monotonic_ns()) + message[HEADER.size :]
        if mode == "naive":
            task = asyncio.create_task(writer.send(reply))
            replies.add(task)
            task.add_done_callback(replies.discard)
        else:
            writer.post(reply)

    ready = asyncio.Event()
    reader = asyncio.create_task(read_inbox(url, transport, resp, parser, B_INBOX, deliver, ready))
    await ready.wait()
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    # A writes "stats" (report the one-way times so far and reset) or "quit" on our stdin.
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if line == "stats":
            print(json.dumps({"one_way_ns": one_way, "flushes": writer.flushes, "commands": writer.commands}))
            sys.stdout.flush()
            one_way.clear()
            writer.flushes = writer.commands = 0
        elif line == "quit":
            break
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    await writer.close()
    await client.aclose()


# -- process A: the driver -------------------------------------------------------------------------


class Peer:
    """Process B, with a pipe to ask for its statistics."""

    def __init__(self, url: str, transport: str, resp: int, parser: str, mode: str) -> None:
        args = [sys.executable, __file__, "_echo", url, transport, str(resp), parser, mode]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"echo process did not start: {line!r}")

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def quantiles_us(samples_ns: Sequence[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000, 1)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99)}


async def drive(
    url: str, transport: str, resp: int, parser: str, mode: str, count: int, inflight: int
) -> dict[str, Any]:
    """Run one combination: B as a process, A here. ``inflight`` 1 measures latency."""
    peer = await asyncio.to_thread(Peer, url, transport, resp, parser, mode)
    client = make_client(url, resp, parser)
    writer = Writer(client, transport, B_INBOX, mode)
    waiting: dict[int, asyncio.Future[tuple[int, int]]] = {}
    back_ns: list[int] = []
    done = 0
    window = asyncio.Semaphore(inflight)
    finished = asyncio.Event()
    target = 0

    def deliver(message: bytes) -> None:
        nonlocal done
        seq, sent, echoed = HEADER.unpack_from(message)
        now = time.monotonic_ns()
        back_ns.append(now - echoed)
        future = waiting.pop(seq, None)
        if future is not None:
            future.set_result((sent, now))
        else:
            window.release()
            done += 1
            if done == target:
                finished.set()

    ready = asyncio.Event()
    reader = asyncio.create_task(read_inbox(url, transport, resp, parser, A_INBOX, deliver, ready))
    await ready.wait()
    pad = b"x" * (SIZE - HEADER.size)
    result: dict[str, Any] = {"transport": transport, "resp": resp, "parser": parser, "writer": mode}
    try:
        if inflight == 1:
            rtt: list[int] = []
            for seq in range(count + count // 10):
                future = asyncio.get_running_loop().create_future()
                waiting[seq] = future
                await writer.send(HEADER.pack(seq, time.monotonic_ns(), 0) + pad)
                sent, arrived = await asyncio.wait_for(future, 10)
                if seq >= count // 10:  # the first tenth warms up
                    rtt.append(arrived - sent)
            stats = await asyncio.to_thread(peer.stats)
            warm = len(stats["one_way_ns"]) - count
            result |= {
                "rtt_us": quantiles_us(rtt),
                "a_to_b_us": quantiles_us(stats["one_way_ns"][warm:]),
                "b_to_a_us": quantiles_us(back_ns[warm:]),
            }
        else:

            async def burst(n: int) -> float:
                nonlocal target, done
                done, target = 0, n
                finished.clear()
                started = time.perf_counter()
                tasks: set[asyncio.Task[None]] = set()
                for seq in range(n):
                    await window.acquire()
                    message = HEADER.pack(seq + 1_000_000_000, time.monotonic_ns(), 0) + pad
                    if mode == "naive":
                        task = asyncio.create_task(writer.send(message))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    else:
                        await writer.send(message)
                await asyncio.wait_for(finished.wait(), 60)
                return time.perf_counter() - started

            await burst(min(2000, count))  # warm up: connections, caches
            await asyncio.to_thread(peer.stats)
            a_flushes, a_commands = writer.flushes, writer.commands
            elapsed = await burst(count)
            stats = await asyncio.to_thread(peer.stats)
            result |= {
                "inflight": inflight,
                "messages_per_s": round(count / elapsed),
                "a_to_b_p50_us": quantiles_us(stats["one_way_ns"])["p50"],
                "a_msgs_per_flush": round(count / max(1, writer.flushes - a_flushes), 1),
                "b_msgs_per_flush": round(count / max(1, stats["flushes"]), 1),
                "commands_per_round_trip": round(
                    ((writer.commands - a_commands) + stats["commands"]) / count, 3
                ),
            }
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await writer.close()
        await client.aclose()
        await asyncio.to_thread(peer.close)
    return result


async def ping_floor(url: str, resp: int, parser: str, count: int, timeout: float | None) -> dict[str, Any]:
    """One client's PING round trip: the floor under every relayed message."""
    client = make_client(url, resp, parser, socket_timeout=timeout)
    try:
        for _ in range(200):
            await client.ping()
        samples = []
        for _ in range(count):
            t = time.monotonic_ns()
            await client.ping()
            samples.append(time.monotonic_ns() - t)
    finally:
        await client.aclose()
    return {
        "transport": "PING",
        "resp": resp,
        "parser": parser,
        "socket_timeout": timeout,
        "rtt_us": quantiles_us(samples),
    }


async def raw_ping_floor(port: int, count: int) -> dict[str, Any]:
    """PING over a bare asyncio stream: what the event loop and the kernel cost without redis-py."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    samples = []
    try:
        for i in range(count + 200):
            t = time.monotonic_ns()
            writer.write(b"PING\r\n")
            await reader.readuntil(b"\r\n")
            if i >= 200:
                samples.append(time.monotonic_ns() - t)
    finally:
        writer.close()
        await writer.wait_closed()
    return {"transport": "PING over a bare asyncio stream", "rtt_us": quantiles_us(samples)}


# -- failure behaviour ----------------------------------------------------------------------------


async def timed(awaitable: Awaitable[Any], limit: float = 30.0) -> tuple[str, float]:
    """What ``awaitable`` ends with (a value or an exception's type and text), and after how long."""
    started = time.monotonic()
    try:
        value = await asyncio.wait_for(awaitable, limit)
        outcome = f"returned {value!r}"
    except (RedisError, OSError, asyncio.TimeoutError) as error:
        outcome = f"{type(error).__module__}.{type(error).__qualname__}: {str(error)[:90]}"
    return outcome, round(time.monotonic() - started, 3)


FAST = {"retry": Retry(NoBackoff(), 0), "socket_timeout": 1.0, "socket_connect_timeout": 1.0}


async def failure(report: Callable[[dict[str, Any]], None]) -> None:
    def row(case: str, outcome: tuple[str, float], **extra: Any) -> None:
        report({"case": case, "outcome": outcome[0], "seconds": outcome[1], **extra})

    with RedisServer() as server:
        url = server.url
        # 1. A command while the server is dead (connection refused on loopback). redis-py 8's
        #    Redis(host=..., port=...) retries 10 times with jittered backoff; Redis.from_url
        #    builds its pool without the constructor's Retry, so it does not retry at all.
        clients: list[tuple[str, Callable[[], aioredis.Redis]]] = [
            ("Redis(host, port) defaults", lambda: aioredis.Redis(host=server.host, port=server.port)),
            ("Redis.from_url defaults", lambda: aioredis.Redis.from_url(url)),
            ("fail-fast", lambda: aioredis.Redis.from_url(url, **FAST)),
        ]
        for name, make in clients:
            client = make()
            await client.ping()
            server.kill()
            row(f"GET after SIGKILL, {name}", await timed(client.get("k")))
            row(f"  ... GET again, nothing listening, {name}", await timed(client.get("k")))
            server.restart()
            row(f"  ... GET after restart, same client, {name}", await timed(client.get("k")))
            await client.aclose()

        # 2. A pub/sub reader blocked in get_message when the server dies, and the server comes
        #    back within the retry budget: does the reader notice, and is it resubscribed?
        for name, kwargs, down_for in (
            ("default retry, down 0.1 s", {}, 0.1),
            ("default retry, down 5 s", {}, 5.0),
            ("fail-fast", FAST, 0.1),
        ):
            sub = aioredis.Redis.from_url(url, **kwargs)
            pub = aioredis.Redis.from_url(url, **FAST)
            pubsub = sub.pubsub()
            await pubsub.subscribe("inbox")
            await pubsub.get_message(timeout=1)  # the subscribe confirmation
            reading = asyncio.create_task(timed(pubsub.get_message(timeout=None), 20))
            await asyncio.sleep(0.05)
            killed = time.monotonic()
            server.kill()
            await asyncio.sleep(down_for)
            server.restart()
            restarted = time.monotonic() - killed
            if not reading.done():
                await asyncio.sleep(0.3)  # let a transparent reconnect happen, if it does
            receivers = await pub.publish("inbox", "after restart")
            outcome = await reading
            row(
                f"pubsub get_message(block) across SIGKILL+restart, {name}",
                outcome,
                restarted_after_s=round(restarted, 3),
                publish_receivers_after_restart=receivers,
            )
            if "Error" in outcome[0]:
                # The caller saw the error; one more get_message: does it reconnect and resubscribe?
                again = await timed(pubsub.get_message(timeout=1), 5)
                receivers = await pub.publish("inbox", "after re-read")
                row(
                    f"  ... next get_message after that error, {name}",
                    again,
                    publish_receivers_now=receivers,
                    then=(await timed(pubsub.get_message(timeout=1), 5))[0],
                )
            await pubsub.aclose()
            await sub.aclose()
            await pub.aclose()

        # 3. A frozen server (SIGSTOP): nothing resets the connection.
        frozen: list[tuple[str, Callable[[], aioredis.Redis]]] = [
            ("socket_timeout=1, no retry", lambda: aioredis.Redis.from_url(url, **FAST)),
            (
                "socket_timeout=1, Redis(host, port) default retry",
                lambda: aioredis.Redis(host=server.host, port=server.port, socket_timeout=1.0),
            ),
        ]
        for name, make in frozen:
            client = make()
            await client.ping()
            server.pause()
            try:
                row(f"GET on a frozen server, {name}", await timed(client.get("k"), 30))
            finally:
                server.resume()
            await client.aclose()
        client = aioredis.Redis.from_url(url, socket_timeout=None, retry=Retry(NoBackoff(), 0))
        await client.ping()
        server.pause()
        try:
            row(
                "GET on a frozen server, socket_timeout=None (bounded here at 3 s)",
                await timed(client.get("k"), 3),
            )
        finally:
            server.resume()
        await client.aclose()
        for interval in (0, 1):
            sub = aioredis.Redis.from_url(url, health_check_interval=interval, **FAST)
            pubsub = sub.pubsub()
            await pubsub.subscribe("inbox")
            await pubsub.get_message(timeout=1)
            server.pause()
            try:

                async def poll(p: Any = pubsub) -> str:
                    for _ in range(8):  # 8 polls of 0.5 s
                        if (m := await p.get_message(timeout=0.5)) is not None:
                            return f"message {m!r}"
                    return "no error and no message in 4 s"

                case = f"pubsub get_message(timeout=0.5) polling a frozen server, health_check={interval}"
                row(case, await timed(poll(), 10))
            finally:
                server.resume()
            await pubsub.aclose()
            await sub.aclose()

        # 4. Bounding one command with asyncio: the connection is dropped, the next command works.
        client = aioredis.Redis.from_url(url, **FAST)
        other = aioredis.Redis.from_url(url, **FAST)
        await client.ping()
        stall = asyncio.create_task(other.execute_command("DEBUG", "SLEEP", "0.5"))
        await asyncio.sleep(0.05)
        row(
            "GET under asyncio.wait_for(0.1) while the server sleeps 0.5 s", await timed(client.get("k"), 0.1)
        )
        await stall
        row("  ... the next GET on the same client", await timed(client.get("k")))
        await client.aclose()
        await other.aclose()

        # 5. What a restart looks like to a reconnecting client: run_id changes, keys are gone.
        client = aioredis.Redis.from_url(url, **FAST)
        before = (await client.info("server"))["run_id"]
        await client.set("sentinel", "1", px=60_000)
        server.kill()
        server.restart()
        # A pooled connection opened before the crash fails its next command once, even when
        # the server is back by then: the pool does not test the connections it hands out.
        row("first command on a pooled connection after kill+restart, fail-fast", await timed(client.ping()))
        after = (await client.info("server"))["run_id"]
        report(
            {
                "case": "restart empty",
                "run_id_changed": before != after,
                "sentinel": await client.get("sentinel"),
            }
        )
        await client.aclose()

        # 6. Connection refused when nothing listens: how fast, fail-fast settings.
        server.kill()
        client = aioredis.Redis.from_url(url, **FAST)
        row("PING with nothing listening, fail-fast", await timed(client.ping()))
        await client.aclose()
        client = aioredis.Redis(host=server.host, port=server.port)
        row("PING with nothing listening, Redis(host, port) defaults", await timed(client.ping()))
        await client.aclose()
        server.restart()


# -- main -----------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    import hiredis
    import redis

    report({"redis_py": redis.__version__, "hiredis": hiredis.__version__, "cpus": os.cpu_count()})
    parsers = ("hiredis", "python")
    if "latency" in args.what or "throughput" in args.what:
        with RedisServer() as server:
            report(
                {
                    "redis_server": (await make_client(server.url, 2, "hiredis").info("server"))[
                        "redis_version"
                    ]
                }
            )
            if "latency" in args.what:
                report(await raw_ping_floor(server.port, args.count))
                for resp in (2, 3):
                    for parser in parsers:
                        for timeout in (5.0, None):  # 5 s is redis-py 8's default
                            report(await ping_floor(server.url, resp, parser, args.count, timeout))
                for transport in ("pubsub", "stream"):
                    for resp in (2, 3):
                        for parser in parsers:
                            report(
                                await drive(server.url, transport, resp, parser, "pipeline", args.count, 1)
                            )
            if "throughput" in args.what:
                for transport in ("pubsub", "stream"):
                    for mode in ("naive", "pipeline", "packed"):
                        for parser in parsers:
                            report(
                                await drive(
                                    server.url, transport, 2, parser, mode, args.messages, args.inflight
                                )
                            )
    if "failure" in args.what:
        await failure(report)
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(rows, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_echo":
        _, _, url, transport, resp, parser, mode = sys.argv
        asyncio.run(echo(url, transport, int(resp), parser, mode))
        sys.exit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", nargs="*", default=["latency", "throughput", "failure"])
    parser.add_argument("--count", type=int, default=3000, help="round trips per latency run")
    parser.add_argument("--messages", type=int, default=30000, help="messages per throughput run")
    parser.add_argument("--inflight", type=int, default=128)
    parser.add_argument("--json", help="also write every row to this file")
    asyncio.run(main(parser.parse_args()))
