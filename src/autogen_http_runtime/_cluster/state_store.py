"""Durable agents' states in the cluster's Redis: every host of the cluster reads the same.

One hash per agent id, ``autogen:{<cluster>}:state:<type>/<key>``, with the version
(``v``) and the state's JSON text (``s``). A save is one Lua script that compares the
versions and writes, so two hosts saving one id at once never leave the older state.
States are kept until deleted: they are what must survive a restart, so they need
Redis persistence (AOF or RDB), unlike the directory (docs/durable-agents.md).

The loads and saves that come in while a batch is with Redis go together in the next
one, one pipeline on one connection of the store's own: under load a save costs a
fraction of a round trip and of redis-py's per-command work, and nothing of the
directory's connections.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from .._host.state import SaveOutcome, StateStoreError, StoredState
from .redis_engine import check_url, redacted
from .tasks import cancel_tasks

#: KEYS[1] the id's hash; ARGV[1] the version, ARGV[2] the state. Returns {stored, version}.
#: Sent with EVAL (Redis caches it by its digest): nothing to load again after a restart.
SAVE: Final = """
local held = redis.call('HMGET', KEYS[1], 'v', 'w')
local base = ARGV[4]
if held[1] then
  local newer = tonumber(ARGV[1]) > tonumber(held[1])
  if not newer or (base ~= '*' and base ~= (held[2] or '')) then
    return {0, tonumber(held[1])}
  end
elseif base ~= '*' and base ~= '' then
  return {0, 0}
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2], 'w', ARGV[3])
return {1, tonumber(ARGV[1])}
"""

#: Seconds one batch may take before its loads and saves fail.
COMMAND_TIMEOUT: Final = 5.0
#: The most operations sent to Redis in one pipeline.
MAX_BATCH: Final = 256

#: One queued operation: the command's arguments and who waits for its answer.
_Operation = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


class RedisStateStore:
    """Agent states in Redis, shared by the hosts of a cluster.

    Args:
        url: The cluster's ``redis_url``.
        cluster: The cluster's name: keys start with ``autogen:{<cluster>}:state:``.
    """

    def __init__(self, url: str, *, cluster: str) -> None:
        check_url(url)
        self._url = url
        self.where = redacted(url)
        self.prefix = f"autogen:{{{cluster}}}:state:"
        self._client: aioredis.Redis | None = None
        self._queue: list[_Operation] = []
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    def _connected(self) -> aioredis.Redis:
        if self._client is None:
            # One connection (batches go one at a time). No retry: a save that ran and was
            # sent again would find its own version and be taken as stale; a failed one is
            # reported, and the next save, one version on, replaces it.
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url,
                max_connections=1,
                timeout=COMMAND_TIMEOUT,
                protocol=2,
                decode_responses=True,
                socket_timeout=COMMAND_TIMEOUT,
                socket_connect_timeout=COMMAND_TIMEOUT,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
                client_name="autogen-http-state",
            )
            self._client = aioredis.Redis(connection_pool=pool)
        return self._client

    def key(self, agent: str) -> str:
        return self.prefix + agent

    async def load(self, key: str) -> StoredState | None:
        version, state, writer = await self._submit(("HMGET", self.key(key), "v", "s", "w"))
        if version is None or state is None:
            return None
        return StoredState(int(version), state, writer or "")

    async def save(
        self, key: str, version: int, state: str, writer: str = "", base: str | None = None
    ) -> SaveOutcome:
        # '*' for no base: an instance id is hex, never '*' (see _host/state.py accepts()).
        command = ("EVAL", SAVE, 1, self.key(key), version, state, writer, "*" if base is None else base)
        stored, held = await self._submit(command)
        return SaveOutcome(bool(stored), int(held))

    async def _submit(self, command: tuple[Any, ...]) -> Any:
        if self._closed:
            raise StateStoreError(f"Redis at {self.where}: the store closed")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, answer))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send())
        return await answer

    async def _send(self) -> None:
        """Send what is queued, a batch at a time, until nothing is."""
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            client = self._connected()
            try:
                if len(batch) == 1:  # alone: a pipeline would cost more than the command
                    results = [await client.execute_command(*batch[0][0])]  # type: ignore[no-untyped-call]
                else:
                    pipe = client.pipeline(transaction=False)
                    for command, _ in batch:
                        pipe.execute_command(*command)
                    results = await pipe.execute(raise_on_error=False)
            except ResponseError as exc:  # the one command failed in Redis: only it
                results = [exc]
            except (RedisError, OSError) as exc:
                failure = StateStoreError(f"Redis at {self.where}: {exc or type(exc).__name__}")
                results = [failure] * len(batch)
            except asyncio.CancelledError:
                for _, answer in batch + self._queue:
                    if not answer.done():
                        answer.set_exception(StateStoreError(f"Redis at {self.where}: the store closed"))
                self._queue = []
                raise
            for (_, answer), result in zip(batch, results, strict=True):
                if answer.done():  # its caller gave up
                    continue
                if isinstance(result, StateStoreError):
                    answer.set_exception(result)
                elif isinstance(result, Exception):
                    answer.set_exception(StateStoreError(f"Redis at {self.where}: {result}"))
                else:
                    answer.set_result(result)

    async def close(self) -> None:
        """Fail what is still queued, end the sender and close the connection (bounded)."""
        self._closed = True
        queued, self._queue = self._queue, []
        for _, answer in queued:
            if not answer.done():
                answer.set_exception(StateStoreError(f"Redis at {self.where}: the store closed"))
        sender, self._sender = self._sender, None
        if sender is not None:
            await cancel_tasks([sender], 1.0)
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.aclose(close_connection_pool=True), COMMAND_TIMEOUT)
            except (RedisError, OSError, asyncio.TimeoutError):
                pass
