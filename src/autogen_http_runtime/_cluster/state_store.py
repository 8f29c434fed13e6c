"""Durable agents' states in the cluster's Redis: every host of the cluster reads the same.

One hash per agent id, ``autogen:{<cluster>}:state:<type>/<key>``, with the version
(``v``) and the state's JSON text (``s``). A save is one Lua script that compares the
versions and writes, so two hosts saving one id at once never leave the older state.
States are kept until deleted: they are what must survive a restart, so they need
Redis persistence (AOF or RDB), unlike the directory (docs/durable-agents.md).

The loads and saves that come in while a batch is with Redis go together in the next
one, one write on one connection of the store's own: under load a save costs a fraction
of a round trip, and nothing of the directory's connections. The store packs the
commands itself (what is the same in every save, the script included, packed once) and
reads the answers from a redis-py connection, with no client or pipeline around it; each
operation is queued as it starts (``start_save``), so the host follows its future with
no task of its own (``QueuedStateStore``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
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


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


#: The parts of the commands in Redis's protocol that are the same for every save and load.
_SAVE_HEAD: Final = b"*8\r\n" + _bulk(b"EVAL") + _bulk(SAVE.encode()) + _bulk(b"1")
_LOAD_HEAD: Final = b"*5\r\n" + _bulk(b"HMGET")
_LOAD_TAIL: Final = _bulk(b"v") + _bulk(b"s") + _bulk(b"w")

#: One queued operation: the command in Redis's protocol, who waits for its answer, and
#: what makes that answer of Redis's reply.
_Operation = tuple[bytes, "asyncio.Future[Any]", Callable[[Any], Any]]
T = TypeVar("T")


def _loaded(reply: list[str | None]) -> StoredState | None:
    version, state, writer = reply
    return None if version is None or state is None else StoredState(int(version), state, writer or "")


def _saved(reply: list[int]) -> SaveOutcome:
    stored, held = reply
    return SaveOutcome(bool(stored), int(held))


class RedisStateStore:
    """Agent states in Redis, shared by the hosts of a cluster.

    Args:
        url: The cluster's ``redis_url``.
        cluster: The cluster's name: keys start with ``autogen:{<cluster>}:state:``.
    """

    def __init__(self, url: str, *, cluster: str) -> None:
        check_url(url)
        self.where = redacted(url)
        self.prefix = f"autogen:{{{cluster}}}:state:"
        # One connection (batches go one at a time), with no timeout of its own: each batch
        # has one (COMMAND_TIMEOUT). No retry: a save that ran and was sent again would find
        # its own version and be taken as stale; a failed one is reported, and the next
        # save, one version on, replaces it.
        self._pool = aioredis.ConnectionPool.from_url(
            url,
            protocol=2,
            decode_responses=True,
            socket_timeout=None,
            socket_connect_timeout=COMMAND_TIMEOUT,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            client_name="autogen-http-state",
        )
        self._connection: AbstractConnection | None = None
        self._queue: list[_Operation] = []
        self._sender: asyncio.Task[None] | None = None
        self._timed_out = False
        self._closed = False

    def key(self, agent: str) -> str:
        return self.prefix + agent

    async def load(self, key: str) -> StoredState | None:
        return await self.start_load(key)

    async def save(
        self, key: str, version: int, state: str, writer: str = "", base: str | None = None
    ) -> SaveOutcome:
        return await self.start_save(key, version, state, writer, base)

    def start_load(self, key: str) -> asyncio.Future[StoredState | None]:
        """Queue a load behind the operations queued before it; its future."""
        return self._submit(_LOAD_HEAD + _bulk(self.key(key).encode()) + _LOAD_TAIL, _loaded)

    def start_save(
        self, key: str, version: int, state: str, writer: str = "", base: str | None = None
    ) -> asyncio.Future[SaveOutcome]:
        """Queue a save behind the operations queued before it; its future."""
        # '*' for no base: an instance id is hex, never '*' (see _host/state.py accepts()).
        command = b"".join(
            (
                _SAVE_HEAD,
                _bulk(self.key(key).encode()),
                _bulk(b"%d" % version),
                _bulk(state.encode()),
                _bulk(writer.encode()),
                _bulk(b"*" if base is None else base.encode()),
            )
        )
        return self._submit(command, _saved)

    def _submit(self, command: bytes, answer_from: Callable[[Any], T]) -> asyncio.Future[T]:
        if self._closed:
            raise StateStoreError(f"Redis at {self.where}: the store closed")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        self._queue.append((command, answer, answer_from))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send())
        return answer

    async def _send(self) -> None:
        """Send what is queued, a batch at a time, until nothing is."""
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            failure: StateStoreError | None = None
            self._timed_out = False
            timer = loop.call_later(COMMAND_TIMEOUT, self._time_out)
            try:
                results = await self._exchange(batch)
            except asyncio.CancelledError:
                if not self._timed_out:  # the store is closing
                    self._fail(batch + self._queue, "the store closed")
                    self._queue = []
                    raise
                uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
                if uncancel is not None:
                    uncancel()
                failure = StateStoreError(f"Redis at {self.where}: no answer in {COMMAND_TIMEOUT} s")
            except (RedisError, OSError) as exc:
                failure = StateStoreError(f"Redis at {self.where}: {exc or type(exc).__name__}")
            finally:
                timer.cancel()
            if failure is not None:
                results = [failure] * len(batch)
            # Every answer is given before the next await: a close meanwhile leaves none waiting.
            for (_, answer, answer_from), result in zip(batch, results, strict=True):
                if answer.done():  # its caller gave up
                    continue
                if isinstance(result, Exception):
                    answer.set_exception(result)
                    continue
                try:
                    answer.set_result(answer_from(result))
                except (ValueError, TypeError) as exc:
                    answer.set_exception(StateStoreError(f"Redis at {self.where}: an odd answer: {exc}"))
            if failure is not None:
                await self._disconnect()  # the next batch connects again

    async def _exchange(self, batch: list[_Operation]) -> list[Any]:
        """Send the batch's commands in one write and read their answers."""
        connection = self._connection
        if connection is None:
            self._connection = connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        await connection.send_packed_command(
            [b"".join(operation[0] for operation in batch)], check_health=False
        )
        results: list[Any] = []
        for _ in batch:
            try:
                results.append(await connection.read_response())
            except ResponseError as exc:  # that command failed in Redis: only it
                results.append(StateStoreError(f"Redis at {self.where}: {exc}"))
        return results

    def _time_out(self) -> None:
        if self._sender is not None:
            self._timed_out = True
            self._sender.cancel()

    def _fail(self, operations: list[_Operation], why: str) -> None:
        for _, answer, _ in operations:
            if not answer.done():
                answer.set_exception(StateStoreError(f"Redis at {self.where}: {why}"))

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await asyncio.wait_for(connection.disconnect(), COMMAND_TIMEOUT)
            except (RedisError, OSError, asyncio.TimeoutError):
                pass

    async def close(self) -> None:
        """Fail what is still queued, end the sender and close the connection (bounded)."""
        self._closed = True
        queued, self._queue = self._queue, []
        self._fail(queued, "the store closed")
        sender, self._sender = self._sender, None
        if sender is not None:
            await cancel_tasks([sender], 1.0)
        await self._disconnect()
