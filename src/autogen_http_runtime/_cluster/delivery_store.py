"""At-least-once events on Redis Streams: the commands, and the scripts that batch them.

One stream per cluster (``dq``) holds every event copy not yet handled, as ``r`` (the
recipient, ``type/key``) and ``e`` (the copy, encoded); one consumer group (``hosts``)
reads it, each host a consumer under its own name. A copy a host read is in the group's
pending list until acknowledged (``XACK``, then ``XDEL``: the stream keeps only what is
pending or unread). A copy pending longer than the visibility timeout is claimed
(``XCLAIM``, which counts the delivery) by whichever host looks first, and delivered
again; one delivered ``max_deliveries`` times goes to the dead letters (``dead``), with
the last reason its handler failed for (``dfail``) if any.

``XAUTOCLAIM`` would claim in one command but does not say how often each entry was
delivered; ``XPENDING ... IDLE`` does, so :data:`CLAIM` runs ``XPENDING`` and ``XCLAIM``
in one script (both allowed in Redis 7.0's scripts), which two hosts cannot interleave.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from .._host.deliveries import DeadLetter
from .engine import EngineUnavailable
from .redis_engine import RedisEngine

#: The consumer group every host reads the deliveries stream in.
GROUP: Final = "hosts"
#: Dead letters kept at most (about: Redis trims by whole nodes); the oldest go first.
DEAD_LETTERS_KEPT: Final = 100_000
#: Seconds at least a consumer (a host) with nothing pending stays idle before it is removed.
IDLE_CONSUMER: Final = 60.0
#: Seconds a command of the data path may take before the store counts Redis as out of reach.
COMMAND_TIMEOUT: Final = 5.0

#: ARGV[1]: the lengths of recipient, copy, recipient, copy, ... (comma-separated);
#: ARGV[2]: those strings end to end. (One argument each: redis-py packs a command's arguments
#: one by one in Python, which costs more than the whole script for thousands of copies.)
ADD: Final = """
local data, at, n, r = ARGV[2], 1, 0, nil
for length in string.gmatch(ARGV[1], '%d+') do
  local piece = string.sub(data, at, at + tonumber(length) - 1)
  at = at + tonumber(length)
  if r == nil then
    r = piece
  else
    redis.call('XADD', KEYS[1], '*', 'r', r, 'e', piece)
    r, n = nil, n + 1
  end
end
return n
"""

#: ARGV[1]: the group; ARGV[2]: entry ids, comma-separated.
ACK: Final = """
local ids = {}
for id in string.gmatch(ARGV[2], '[^,]+') do ids[#ids + 1] = id end
if #ids == 0 then return 0 end
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('XDEL', KEYS[1], unpack(ids))
redis.call('HDEL', KEYS[2], unpack(ids))
return n
"""

#: KEYS: stream, dead letters, reasons. ARGV: group, consumer, min idle (ms), max deliveries,
#: count, now (ms), dead letters kept, idle (ms) after which a consumer with nothing pending
#: is removed (a host gone: each incarnation of a host is a consumer of its own).
#: Returns {moved to the dead letters, claimed entries, pending}.
CLAIM: Final = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', ARGV[5])
local claim, dead = {}, 0
for _, p in ipairs(pending) do
  local id, count = p[1], tonumber(p[4])
  if count >= tonumber(ARGV[4]) then
    local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
    if entry then
      local f, r, e = entry[2], '', ''
      for i = 1, #f, 2 do
        if f[i] == 'r' then r = f[i + 1] elseif f[i] == 'e' then e = f[i + 1] end
      end
      local why = redis.call('HGET', KEYS[3], id)
      if not why then why = 'not acknowledged within the visibility timeout' end
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
        'r', r, 'e', e, 'n', count, 'why', why, 't', ARGV[6], 'src', id)
      dead = dead + 1
    end
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[3], id)
  else
    claim[#claim + 1] = id
  end
end
local claimed = {}
if #claim > 0 then
  claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(claim))
end
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['pending'] == 0 and info['idle'] > tonumber(ARGV[8]) and info['name'] ~= ARGV[2] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
  end
end
return {dead, claimed, redis.call('XPENDING', KEYS[1], ARGV[1])[1]}
"""

#: KEYS: dead letters, stream. ARGV: the dead letter's id. Returns the new entry's id, or nil.
REPLAY: Final = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])[1]
if not entry then return false end
local f, r, e = entry[2], '', ''
for i = 1, #f, 2 do
  if f[i] == 'r' then r = f[i + 1] elseif f[i] == 'e' then e = f[i + 1] end
end
local id = redis.call('XADD', KEYS[2], '*', 'r', r, 'e', e)
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""

#: One stored copy: its entry id, recipient and encoded CloudEvent.
Entry = tuple[str, str, bytes]


@dataclass(frozen=True, slots=True)
class Claimed:
    dead: int
    entries: list[Entry]
    pending: int


class DeliveryStore:
    """This host's connections for the deliveries stream (apart from the directory's)."""

    def __init__(self, engine: RedisEngine, host: str) -> None:
        self._engine = engine
        self._host = host
        self.where = engine.where
        self.stream, self.dead, self.reasons = engine.key("dq"), engine.key("dead"), engine.key("dfail")
        self._reader: aioredis.Redis | None = None
        self._writer: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    async def connect(self) -> None:
        await self.close()
        self._reader = self._engine.client(timeout=None, decode=False, role="deliveries-read")
        self._writer = self._engine.client(timeout=COMMAND_TIMEOUT, decode=False, role="deliveries")
        self._scripts = {
            name: self._writer.register_script(text)
            for name, text in (("ADD", ADD), ("ACK", ACK), ("CLAIM", CLAIM), ("REPLAY", REPLAY))
        }
        await self.ensure_group()

    async def close(self) -> None:
        clients, self._reader, self._writer = (self._reader, self._writer), None, None
        for client in clients:
            if client is not None:
                try:
                    await client.aclose()
                except (RedisError, OSError):
                    pass

    def _why(self, exc: BaseException) -> EngineUnavailable:
        return EngineUnavailable(f"Redis at {self.where}: {exc or type(exc).__name__}")

    def _client(self) -> aioredis.Redis:
        if self._writer is None:
            raise EngineUnavailable(f"Redis at {self.where}: not connected")
        return self._writer

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless there (Redis may have restarted empty)."""
        try:
            await self._client().xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise self._why(exc) from exc
        except (RedisError, OSError) as exc:
            raise self._why(exc) from exc

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        self._client()
        try:
            return await self._scripts[name](keys=list(keys), args=list(args))
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self.ensure_group()
                return await self._scripts[name](keys=list(keys), args=list(args))
            raise self._why(exc) from exc
        except (RedisError, OSError) as exc:
            raise self._why(exc) from exc

    async def add(self, flat: Sequence[bytes]) -> None:
        """Append copies: ``flat`` is recipient, copy, recipient, copy, ..."""
        lengths = ",".join([str(len(piece)) for piece in flat])
        await self._script("ADD", [self.stream], [lengths, b"".join(flat)])

    async def ack(self, ids: Sequence[str]) -> None:
        """Acknowledge and delete entries (ids of the form ``<ms>-<n>``: no comma)."""
        await self._script("ACK", [self.stream, self.reasons], [GROUP, ",".join(ids)])

    async def fail(self, reasons: dict[str, str]) -> None:
        try:
            await self._client().hset(self.reasons, mapping=reasons)  # type: ignore[arg-type]
        except (RedisError, OSError) as exc:
            raise self._why(exc) from exc

    async def read(self, count: int, block: float) -> list[Entry]:
        """Copies no host has read yet, now this one's to deliver (up to ``block`` seconds' wait)."""
        if self._reader is None:
            raise EngineUnavailable(f"Redis at {self.where}: not connected")
        try:
            answer: Any = await self._reader.xreadgroup(
                GROUP, self._host, {self.stream: ">"}, count=count, block=max(1, int(block * 1000))
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self.ensure_group()
                return []
            raise self._why(exc) from exc
        except (RedisError, OSError) as exc:
            raise self._why(exc) from exc
        return [_entry(entry_id, fields) for _stream, entries in answer or () for entry_id, fields in entries]

    async def claim(self, min_idle: float, max_deliveries: int, count: int) -> Claimed:
        dead, claimed, pending = await self._script(
            "CLAIM",
            [self.stream, self.dead, self.reasons],
            [GROUP, self._host, int(min_idle * 1000), max_deliveries, count, int(time.time() * 1000)]
            + [DEAD_LETTERS_KEPT, int(max(IDLE_CONSUMER, 10 * min_idle) * 1000)],
        )
        entries = [_entry(entry_id, _pairs(fields)) for entry_id, fields in claimed if fields is not None]
        return Claimed(int(dead), entries, int(pending))

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        """The newest ``count`` dead letters, newest first."""
        try:
            entries: Any = await self._client().xrevrange(self.dead, count=count)
        except (RedisError, OSError) as exc:
            raise self._why(exc) from exc
        return [_dead_letter(entry_id, fields) for entry_id, fields in entries]

    async def replay(self, dead_id: str) -> bool:
        """Deliver a dead letter again (a new copy, its count from zero); ``False``: no such dead letter."""
        return bool(await self._script("REPLAY", [self.dead, self.stream], [dead_id]))

    async def drop(self, dead_id: str) -> bool:
        try:
            return bool(await self._client().xdel(self.dead, dead_id))
        except (RedisError, OSError) as exc:
            raise self._why(exc) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
    return _text(entry_id), _text(fields.get(b"r", b"")), fields.get(b"e", b"")


def _dead_letter(entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        id=_text(entry_id),
        recipient=_text(fields.get(b"r", b"")),
        copy=fields.get(b"e", b""),
        attempts=int(fields.get(b"n", b"0")),
        reason=_text(fields.get(b"why", b"")),
        time=int(fields.get(b"t", b"0")) / 1000,
    )
