"""Durable agents' states in the cluster's Redis: every host of the cluster reads the same.

One hash per agent id, ``autogen:{<cluster>}:state:<type>/<key>``, with the version
(``v``) and the state's JSON text (``s``). A save is one Lua script that compares the
versions and writes, so two hosts saving one id at once never leave the older state.
States are kept until deleted: they are what must survive a restart, so they need
Redis persistence (AOF or RDB), unlike the directory (docs/durable-agents.md).
"""

from __future__ import annotations

from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .._host.state import SaveOutcome, StateStoreError, StoredState
from .redis_engine import check_url, redacted

#: KEYS[1] the id's hash; ARGV[1] the version, ARGV[2] the state. Returns {stored, version}.
SAVE: Final = """
local held = redis.call('HGET', KEYS[1], 'v')
if held and tonumber(held) >= tonumber(ARGV[1]) then
  return {0, tonumber(held)}
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2])
return {1, tonumber(ARGV[1])}
"""

#: Connections to Redis one host's state store opens at most.
CONNECTIONS: Final = 8
#: Seconds one command may take (or wait for a connection) before the save or load fails.
COMMAND_TIMEOUT: Final = 5.0


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
        self._save: Any = None

    def _connected(self) -> aioredis.Redis:
        if self._client is None:
            # A connection pool of its own: a slow state write never delays the directory's
            # commands. No retry: a save that ran and was sent again would find its own
            # version and be taken as stale; a failed one is reported, and the next save,
            # one version on, replaces it.
            # At most CONNECTIONS at once: a burst of saves waits for one rather than open
            # a connection each.
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url,
                max_connections=CONNECTIONS,
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
            self._save = self._client.register_script(SAVE)
        return self._client

    def key(self, agent: str) -> str:
        return self.prefix + agent

    async def load(self, key: str) -> StoredState | None:
        try:
            version, state = await self._connected().hmget(self.key(key), ["v", "s"])
        except (RedisError, OSError) as exc:
            raise StateStoreError(f"Redis at {self.where}: {exc or type(exc).__name__}") from None
        if version is None or state is None:
            return None
        return StoredState(int(version), state if isinstance(state, str) else state.decode("utf-8"))

    async def save(self, key: str, version: int, state: str) -> SaveOutcome:
        client = self._connected()
        try:
            stored, held = await self._save(keys=[self.key(key)], args=[version, state], client=client)
        except (RedisError, OSError) as exc:
            raise StateStoreError(f"Redis at {self.where}: {exc or type(exc).__name__}") from None
        return SaveOutcome(bool(stored), int(held))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose(close_connection_pool=True)
            except (RedisError, OSError):
                pass
