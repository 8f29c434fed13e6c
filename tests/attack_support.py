"""What the attack tests (``tests/test_attacks*.py``, issue 16) share: a host in its own OS
process, a hand-driven WebSocket peer that reads only when told to, a TCP relay that can cut
a worker's connection, and readings of a process's memory and file descriptors.

Everything here uses the public API, the documented wire protocol and the OS; the one
exception is :func:`instance_of`, which reads a worker's private instance id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from autogen_http_runtime import HttpWorkerAgentRuntime

from .utils import SERIALIZERS, TIMEOUT, bounded

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = "autogen-http/1"
MiB = 1024 * 1024


def ws_url(url: str) -> str:
    return url.replace("http", "ws", 1) + "/v1/worker"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def instance_of(worker: HttpWorkerAgentRuntime) -> str:
    """The instance id a worker sends in ``hello``. PRIVATE: the runtime keeps it in
    ``_lifecycle.options``; an attacker reads it from ``GET /v1/workers`` (which the fix should stop)."""
    instance: str = worker._lifecycle.options.instance_id
    return instance


# -- the host's process -------------------------------------------------------------------------


def rss(pid: int) -> int:
    """The process's resident memory in bytes, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class HostProcess:
    proc: asyncio.subprocess.Process
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def _log_file(log_dir: Path) -> tuple[Path, BinaryIO]:
    """A new file in ``log_dir`` for a host's stderr."""
    log = log_dir / f"host-{len(list(log_dir.glob('host-*.log')))}.log"
    return log, open(log, "wb")  # closed by host_process


@contextlib.asynccontextmanager
async def host_process(log_dir: Path, *args: str, quiet: bool = False) -> AsyncIterator[HostProcess]:
    """Run ``tests/procs/attack_host.py`` with ``args``; kill and reap it on the way out.

    glibc's malloc is told to map every block over 128 KiB on its own (a fixed threshold,
    not the adaptive one), so that what the host lets go of leaves its RSS at once and RSS
    measures what the host still holds rather than the allocator's caching.

    The host's stderr goes to a file in ``log_dir``; ``quiet`` discards it instead (for a
    host made to log a traceback per failed ``accept()``, thousands a second).
    """
    log, stderr = _log_file(log_dir)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", PYTHONUNBUFFERED="1")
    with stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.procs.attack_host",
            *args,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL if quiet else stderr,
        )
    try:
        assert proc.stdout is not None
        line = (await bounded(proc.stdout.readline())).decode().strip()
        assert line.startswith("READY "), f"the host said {line!r}; its log: {log.read_text()[-2000:]}"
        yield HostProcess(proc, line.split()[1], log)
    finally:
        if proc.returncode is None:
            proc.kill()
        await bounded(proc.communicate())


async def settled_rss(pid: int, samples: int = 5) -> int:
    """The host's RSS once it is idle: the lowest of a few readings taken one loop pass apart."""
    readings = []
    for _ in range(samples):
        readings.append(rss(pid))
        await asyncio.sleep(0)
    return min(readings)


async def poll(condition: Callable[[], bool | Awaitable[bool]], within: float, step: float = 0.1) -> bool:
    """Check ``condition`` every ``step`` seconds until it holds or ``within`` seconds pass.

    The steps pace a poll of something the host offers no event for (its RSS, its sockets,
    its listings); they never stand in for an event.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        held = condition()
        if held if isinstance(held, bool) else await held:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(step)


# -- peers --------------------------------------------------------------------------------------


class RawPeer:
    """A worker WebSocket driven by hand: a plain socket and websockets' sans-I/O protocol.

    It sends what it is told and reads only when told to, so it can be a peer that never
    reads (its receive buffer is kept small, so the host's writes back up at once) and
    never answers a ping.
    """

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock, self.protocol = sock, protocol
        self._ids = iter(range(1, 1 << 62))
        self._messages: list[Any] = []
        self._ended = False
        #: The code of the host's close frame; 1006 (abnormal) when the socket just ended.
        self._close_code = 1006

    @classmethod
    async def connect(
        cls, url: str, headers: dict[str, str] | None = None, *, rcvbuf: int | None = 4096
    ) -> RawPeer:
        """Open the worker WebSocket; raises AssertionError if the host refuses the handshake."""
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        protocol = ClientProtocol(parse_uri(ws_url(url)), max_size=None)
        peer = cls(sock, protocol)
        try:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            await bounded(loop.sock_connect(sock, (host, int(port))))
            request = protocol.connect()
            for name, value in (headers or {}).items():
                request.headers[name] = value
            protocol.send_request(request)
            await peer._flush()
            while protocol.state is State.CONNECTING and protocol.handshake_exc is None and not peer._ended:
                await peer._read()
            if protocol.state is not State.OPEN:
                why = protocol.handshake_exc or "the host closed the connection"
                raise AssertionError(f"handshake refused: {why}")
        except BaseException:
            sock.close()
            raise
        return peer

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for data in self.protocol.data_to_send():
            if data:
                await bounded(loop.sock_sendall(self.sock, data))

    async def _read(self) -> None:
        """Read once from the socket; what it completes goes to ``_messages``."""
        if self._ended:
            self._messages.append({"closed": self._close_code})
            return
        try:
            data = await bounded(asyncio.get_running_loop().sock_recv(self.sock, 1 << 20))
        except ConnectionError:
            data = b""
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
            self._ended = True
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._messages.append(json.loads(event.data))
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                self._close_code = Close.parse(event.data).code
                self._messages.append({"closed": self._close_code})
        with contextlib.suppress(ConnectionError):
            await self._flush()  # pongs, and the close the protocol answers with
        if self._ended and not self._messages:
            self._messages.append({"closed": self._close_code})

    async def send(self, frame: Any) -> None:
        self.protocol.send_text(json.dumps(frame).encode())
        await self._flush()

    async def request(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Send a request without waiting for its answer; returns its id."""
        request_id = next(self._ids)
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        return request_id

    async def recv(self) -> Any:
        """The next message from the host; ``{"closed": code}`` once it has closed (its close
        frame's code, or 1006 if the socket ended without one)."""
        while not self._messages:
            await self._read()
        return self._messages.pop(0)

    async def answer(self, request_id: int) -> Any:
        """Read until the answer to ``request_id`` (other messages are dropped)."""
        while True:
            message = await self.recv()
            if "closed" in message or message.get("id") == request_id:
                return message

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.answer(await self.request(method, params))

    async def hello(self, **params: Any) -> Any:
        return await self.call("hello", {"protocol": PROTOCOL, **params})

    def close(self) -> None:
        self.sock.close()


@contextlib.asynccontextmanager
async def raw_peers() -> AsyncIterator[list[RawPeer]]:
    """A list to put raw peers in; each is closed on the way out."""
    peers: list[RawPeer] = []
    try:
        yield peers
    finally:
        for peer in peers:
            peer.close()


@contextlib.asynccontextmanager
async def workers() -> AsyncIterator[Callable[..., Awaitable[HttpWorkerAgentRuntime]]]:
    """Make started workers (``make(url, **kwargs)``); each is stopped on the way out."""
    made: list[HttpWorkerAgentRuntime] = []

    async def make(url: str, *, start: bool = True, **kwargs: Any) -> HttpWorkerAgentRuntime:
        runtime = HttpWorkerAgentRuntime(url, **kwargs)
        runtime.add_message_serializer(SERIALIZERS)
        made.append(runtime)
        if start:
            await bounded(runtime.start())
        return runtime

    try:
        yield make
    finally:
        for runtime in made:
            await bounded(runtime.stop())


class Relay:
    """A TCP relay in front of a host: what connects to :attr:`url` reaches the host, until
    :meth:`cut` drops every connection through it at once, as a failing network would."""

    def __init__(self, target: str) -> None:
        self._target = target.removeprefix("http://").rsplit(":", 1)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=TIMEOUT)
        await bounded(self._server.wait_closed())

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        host, port = self._target
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await source.read(1 << 16):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
