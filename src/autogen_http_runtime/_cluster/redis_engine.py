"""The cluster's engine on Redis (7 or later, or Valkey), through redis-py's asyncio client.

Three kinds of connection, each with the settings its job needs (redis-py's defaults
change between versions, so every option is given):

- control: the directory's scripts, leases, snapshots; every command bounded by a
  short ``socket_timeout``, no retries (the node decides what a failure means);
- log: the blocking ``XREAD`` that follows the directory's change log;
- hot: ``PUBLISH`` to other hosts' inboxes and the ``SUBSCRIBE`` to this one's, without
  a per-command timeout (it costs tens of microseconds a command); a hung Redis is found
  by the control connection's lease renewal instead.

Every key and channel of a cluster starts with ``autogen:{<cluster>}:``: several clusters
share one Redis, and a Redis Cluster would keep each in one slot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from . import lua
from .engine import (
    Change,
    EngineUnavailable,
    Gap,
    NotJoined,
    Refusal,
    SettingsDisagree,
    Snapshot,
    Tick,
    Write,
)

#: Entries the change log keeps (about: Redis trims by whole nodes). A host that falls
#: further behind reloads a snapshot.
LOG_LENGTH: Final = 10_000
#: Seconds a new connection to Redis may take, at least. A connection refused fails at once
#: whatever this says; a tighter bound only fails a busy host's joins, and loses a connection
#: asyncio opened just as the bound passed (unclosed: a ResourceWarning).
MIN_CONNECT_TIMEOUT: Final = 2.0


def redacted(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def check_url(url: str) -> None:
    """Raises: ValueError: Not a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"redis_url must be a redis://, rediss:// or unix:// URL, not {redacted(url)!r}.")


class RedisEngine:
    """One host's connections to the Redis of its cluster.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://`` for TLS (redis-py's
            ``ssl_*`` query parameters, e.g. ``?ssl_ca_certs=/path/ca.pem``), or ``unix://``.
        cluster: The cluster's name.
        host: This host's name in the cluster.
        lease: Seconds a host's lease lasts without renewal.
    """

    def __init__(self, url: str, *, cluster: str, host: str, lease: float) -> None:
        check_url(url)
        self._url = url
        self.where = redacted(url)
        self._host = host
        self._lease_ms = max(100, int(lease * 1000))
        self._control_timeout = max(0.5, lease / 3)
        self._prefix = f"autogen:{{{cluster}}}:"
        self._control: aioredis.Redis | None = None
        self._log: aioredis.Redis | None = None
        self._hot: aioredis.Redis | None = None
        self._inbox: PubSub | None = None
        self._scripts: dict[str, Any] = {}

    def client(self, *, timeout: float | None, decode: bool, role: str) -> aioredis.Redis:
        client: aioredis.Redis = aioredis.Redis.from_url(
            self._url,
            protocol=2,
            decode_responses=decode,
            socket_timeout=timeout,
            socket_connect_timeout=max(self._control_timeout, MIN_CONNECT_TIMEOUT),
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            client_name=f"autogen-http-{role}",
        )
        return client

    def key(self, name: str) -> str:
        return self._prefix + name

    def channel(self, host: str) -> str:
        return self.key(f"inbox:{host}")

    async def connect(self) -> None:
        await self.close()
        self._control = self.client(timeout=self._control_timeout, decode=True, role="control")
        self._log = self.client(timeout=None, decode=True, role="log")
        self._hot = self.client(timeout=None, decode=False, role="hot")
        self._scripts = {
            name: self._control.register_script(getattr(lua, name))
            for name in ("JOIN", "TICK", "LEAVE", "WRITE", "SNAPSHOT", "ASSERT_HOST")
        }
        try:
            await self._control.ping()
            self._inbox = self._hot.pubsub(ignore_subscribe_messages=True)
            await self._inbox.subscribe(self.channel(self._host))
        except (RedisError, OSError) as exc:
            raise EngineUnavailable(self._why(exc)) from exc

    async def close(self) -> None:
        inbox, clients = self._inbox, (self._control, self._log, self._hot)
        self._inbox = self._control = self._log = self._hot = None
        if inbox is not None:
            try:
                await inbox.aclose()  # type: ignore[no-untyped-call]
            except (RedisError, OSError):
                pass
        for client in clients:
            if client is not None:
                try:
                    await client.aclose()
                except (RedisError, OSError):
                    pass

    def _why(self, exc: BaseException) -> str:
        return f"Redis at {self.where}: {exc or type(exc).__name__}"

    async def _run(self, script: str, *args: object) -> Any:
        if self._control is None:
            raise EngineUnavailable(f"Redis at {self.where}: not connected")
        try:
            return await self._scripts[script](
                keys=[self.key("ver")], args=[self._prefix, LOG_LENGTH, self._host, *args]
            )
        except (RedisError, OSError) as exc:
            raise EngineUnavailable(self._why(exc)) from exc

    async def join(self, info: str, settings: Sequence[tuple[str, str]]) -> None:
        flat = [value for pair in settings for value in pair]
        answer = await self._run("JOIN", info, self._lease_ms, os.urandom(8).hex(), *flat)
        if answer[0] == "DISAGREE":
            raise SettingsDisagree(answer[1])

    async def leave(self) -> None:
        await self._run("LEAVE")

    async def tick(self) -> Tick:
        renewed, live, gone = await self._run("TICK", self._lease_ms)
        return Tick(renewed == 1, tuple(live), tuple(gone))

    async def write(self, writes: Sequence[Write]) -> list[int | Refusal]:
        ops = json.dumps([[write.op, *write.args] for write in writes])
        answers = await self._run("WRITE", ops)
        results: list[int | Refusal] = []
        for answer in answers:
            if isinstance(answer, list):
                if answer[0] == "NOLEASE":
                    raise NotJoined
                results.append(Refusal(str(answer[0]), str(answer[1])))
            else:
                results.append(int(answer))
        return results

    async def assert_host(self, state: str) -> tuple[int, list[tuple[str, Refusal]]]:
        answer = await self._run("ASSERT_HOST", state)
        if answer[0] == "NOLEASE":
            raise NotJoined
        refused = [(str(what), Refusal(str(code), str(detail))) for what, code, detail in answer[1]]
        return int(answer[0]), refused

    async def snapshot(self) -> Snapshot:
        epoch, version, workers, types, pins, subs, live = await self._run("SNAPSHOT")
        return Snapshot(
            epoch=epoch,
            version=int(version),
            workers=_pairs(workers),
            types={name: json.loads(members) for name, members in _pairs(types).items()},
            pins=_pairs(pins),
            subscriptions=_pairs(subs),
            hosts=tuple(live),
        )

    async def host_info(self, host: str) -> str | None:
        if self._control is None:
            raise EngineUnavailable(f"Redis at {self.where}: not connected")
        try:
            info = await self._control.hget(self.key("hosts"), host)
        except (RedisError, OSError) as exc:
            raise EngineUnavailable(self._why(exc)) from exc
        return None if info is None else str(info)

    async def version(self) -> int:
        if self._control is None:
            raise EngineUnavailable(f"Redis at {self.where}: not connected")
        try:
            return int(await self._control.get(self.key("ver")) or 0)
        except (RedisError, OSError) as exc:
            raise EngineUnavailable(self._why(exc)) from exc

    async def changes(self, after: int, wait: float) -> list[Change]:
        if self._log is None:
            raise EngineUnavailable(f"Redis at {self.where}: not connected")
        try:
            answer: Any = await self._log.xread(
                {self.key("log"): f"0-{after}"}, count=1000, block=max(1, int(wait * 1000))
            )
        except (RedisError, OSError) as exc:
            raise EngineUnavailable(self._why(exc)) from exc
        changes: list[Change] = []
        for _stream, entries in answer or ():
            for entry_id, fields in entries:
                version = int(entry_id.partition("-")[2])
                if version != after + 1 + len(changes):
                    raise Gap
                changes.append(Change(version, fields["o"], fields.get("a", ""), fields.get("b", "")))
        return changes

    async def publish(self, host: str, data: bytes) -> int:
        if self._hot is None:
            raise EngineUnavailable(f"Redis at {self.where}: not connected")
        try:
            receivers: int = await self._hot.publish(self.channel(host), data)
        except (RedisError, OSError) as exc:
            raise EngineUnavailable(self._why(exc)) from exc
        return receivers

    async def receive(self) -> bytes:
        inbox = self._inbox
        if inbox is None:
            raise EngineUnavailable(f"Redis at {self.where}: not connected")
        try:
            while True:
                message = await inbox.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and message.get("type") == "message":
                    data: bytes = message["data"]
                    return data
        except (RedisError, OSError) as exc:
            raise EngineUnavailable(self._why(exc)) from exc


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
