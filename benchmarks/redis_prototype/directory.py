"""A prototype of the cluster directory in Redis, to measure what docs/cluster-notes.md proposes.

Not the implementation: just enough to time it and to see the failure cases work.

* Each host holds a lease, ``{c}:lease:<host>`` (SET NX PX, renewed with SET XX PX: a nil
  reply means the lease is gone, because we stalled past it or Redis restarted empty).
* The directory is one hash per kind (here only agent types, ``{c}:types``), changed only by Lua
  scripts that also INCR ``{c}:ver`` and XADD the change to ``{c}:log`` with the version as its
  stream id (``0-<ver>``), trimmed to ``MAXLEN ~``. ``{c}:epoch`` (set once, NX) names this
  incarnation of the data set; each log entry carries it.
* Every host keeps a local view: a snapshot (one script: epoch, version and the whole hash),
  then a blocking XREAD on the log from ``0-<version>``. The next entry must be
  ``0-<version+1>`` of the same epoch; anything else (trimmed past, other epoch, version gone
  backwards) means reload.
* A host re-asserts all it owns in one script when its lease renewal finds the lease gone.
* Reaping: any host may run the reap script: for every host in ``{c}:hosts`` whose lease key is
  gone, delete what it owned and log a ``host-gone`` change (idempotent).

Scenarios (``python benchmarks/redis_prototype/directory.py``): register latency and the time
until another host's view has the entry; a second owner refused; a reader that fell behind past
MAXLEN reloads; Redis SIGKILLed and restarted EMPTY, time until every host re-asserted and every
view is whole again; a host SIGKILLed, time until others know (PUBLISH receivers, expired
keyspace event, the reaper's change); HMAC cost per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402
from redis.asyncio.retry import Retry  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.exceptions import RedisError, ResponseError  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

LOG_MAXLEN = 1000

# KEYS: types, ver, log, epoch, lease, owned   ARGV: type, host, value, replicas, epoch candidate, maxlen
REGISTER = """
if redis.call('EXISTS', KEYS[5]) == 0 then return redis.error_reply('NOLEASE') end
local epoch = redis.call('SET', KEYS[4], ARGV[5], 'NX', 'GET') or ARGV[5]
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local entry = {host = ARGV[2], value = ARGV[3], replicas = ARGV[4] == '1', members = {ARGV[2]}}
if cur then
  local old = cjson.decode(cur)
  for _, m in ipairs(old.members) do if m == ARGV[2] then return {epoch, redis.call('GET', KEYS[2])} end end
  if not (old.replicas and entry.replicas) then return redis.error_reply('TAKEN ' .. old.members[1]) end
  table.insert(old.members, ARGV[2])
  entry = old
end
local encoded = cjson.encode(entry)
redis.call('HSET', KEYS[1], ARGV[1], encoded)
redis.call('SADD', KEYS[6], ARGV[1])
local ver = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '0-' .. ver,
           'e', epoch, 'op', 'set', 'k', ARGV[1], 'v', encoded)
return {epoch, tostring(ver)}
"""

# KEYS: types, ver, log, epoch   ARGV: (none)
SNAPSHOT = """
return {redis.call('GET', KEYS[4]) or '', redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}
"""

# KEYS: types, ver, log, epoch, hosts   ARGV: prefix, maxlen
# For each host of {c}:hosts whose lease key is gone: drop its members everywhere, log it.
REAP = """
local gone = {}
for _, host in ipairs(redis.call('HKEYS', KEYS[5])) do
  if redis.call('EXISTS', ARGV[1] .. 'lease:' .. host) == 0 then
    local owned = ARGV[1] .. 'owned:' .. host
    for _, t in ipairs(redis.call('SMEMBERS', owned)) do
      local cur = redis.call('HGET', KEYS[1], t)
      if cur then
        local entry = cjson.decode(cur)
        local keep = {}
        for _, m in ipairs(entry.members) do if m ~= host then table.insert(keep, m) end end
        local ver = redis.call('INCR', KEYS[2])
        local epoch = redis.call('GET', KEYS[4]) or ''
        if #keep == 0 then
          redis.call('HDEL', KEYS[1], t)
          redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '0-' .. ver, 'e', epoch, 'op', 'del', 'k', t)
        else
          entry.members = keep
          local encoded = cjson.encode(entry)
          redis.call('HSET', KEYS[1], t, encoded)
          redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '0-' .. ver,
                     'e', epoch, 'op', 'set', 'k', t, 'v', encoded)
        end
      end
    end
    redis.call('DEL', owned)
    redis.call('HDEL', KEYS[5], host)
    local ver = redis.call('INCR', KEYS[2])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '0-' .. ver,
               'e', redis.call('GET', KEYS[4]) or '', 'op', 'host-gone', 'k', host)
    table.insert(gone, host)
  end
end
return gone
"""


def fail_fast(url: str, **kwargs: Any) -> aioredis.Redis:
    """Every command bounded, no retries: the cluster decides what to do on an error."""
    options: dict[str, Any] = {
        "protocol": 2,
        "socket_timeout": 2.0,
        "socket_connect_timeout": 1.0,
        "retry": Retry(NoBackoff(), 0),
    }
    return aioredis.Redis.from_url(url, **(options | kwargs))


class Host:
    def __init__(self, url: str, cluster: str, host_id: str, lease_ms: int = 1500) -> None:
        self.cluster, self.id, self.lease_ms = cluster, host_id, lease_ms
        self.p = f"{{{cluster}}}:"
        self.r = fail_fast(url)
        self.feed = fail_fast(url, socket_timeout=None)  # blocks in XREAD; bounded by BLOCK ms
        self.owned: dict[str, tuple[str, bool]] = {}  # what this host registered: type -> (value, replicas)
        self.view: dict[str, dict[str, Any]] = {}
        self.epoch, self.version = "", 0
        self.changed = asyncio.Condition()
        self.reloads = 0
        self.reasserted = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.scripts = {name: self.r.register_script(src) for name, src in (("register", REGISTER),
                        ("snapshot", SNAPSHOT), ("reap", REAP))}  # fmt: skip

    def k(self, name: str) -> str:
        return self.p + name

    async def start(self) -> None:
        await self._assert_lease()
        await self.reload()
        self.tasks = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._follow())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await task
        await self.r.aclose()
        await self.feed.aclose()

    async def _assert_lease(self) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.k(f"lease:{self.id}"), "1", px=self.lease_ms)
            pipe.hset(self.k("hosts"), self.id, json.dumps({"inbox": self.k(f"inbox:{self.id}")}))
            await pipe.execute()

    async def register(self, agent_type: str, value: str = "w1", replicas: bool = False) -> int:
        self.owned[agent_type] = (value, replicas)
        return await self._register(agent_type, value, replicas)

    async def _register(self, agent_type: str, value: str, replicas: bool) -> int:
        keys = [self.k(n) for n in ("types", "ver", "log", "epoch", f"lease:{self.id}", f"owned:{self.id}")]
        args = [agent_type, self.id, value, "1" if replicas else "0", os.urandom(8).hex(), LOG_MAXLEN]
        _epoch, ver = await self.scripts["register"](keys=keys, args=args)
        return int(ver)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                renewed = await self.r.set(self.k(f"lease:{self.id}"), "1", px=self.lease_ms, xx=True)
                if renewed is None:  # the lease is gone: Redis restarted empty, or we stalled
                    await self._assert_lease()
                    for agent_type, (value, replicas) in self.owned.items():
                        await self._register(agent_type, value, replicas)
                    self.reasserted += 1
            except RedisError:
                pass  # Redis unreachable: try again on the next beat

    async def reload(self) -> None:
        keys = [self.k(n) for n in ("types", "ver", "log", "epoch")]
        epoch, ver, flat = await self.scripts["snapshot"](keys=keys)
        view = {flat[i].decode(): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        async with self.changed:
            self.view, self.epoch, self.version = view, epoch.decode(), int(ver)
            self.reloads += 1
            self.changed.notify_all()

    async def _follow(self) -> None:
        while True:
            try:
                reply = await self.feed.xread({self.k("log"): f"0-{self.version}"}, count=512, block=500)
            except RedisError:
                await asyncio.sleep(0.05)  # Redis is away; the next read reconnects
                with contextlib.suppress(RedisError):
                    await self.reload()
                continue
            if not reply:
                # Quiet log: a restarted Redis looks just like this, so compare the version.
                ver = int(await self.r.get(self.k("ver")) or 0)
                if ver < self.version:
                    await self.reload()
                continue
            for _stream, entries in reply:
                for entry_id, fields in entries:
                    ver = int(entry_id.split(b"-")[1])
                    if ver != self.version + 1 or fields[b"e"].decode() != self.epoch:
                        await self.reload()  # a gap (trimmed), or another incarnation
                        break
                    self._apply(ver, fields)
            async with self.changed:
                self.changed.notify_all()

    def _apply(self, ver: int, fields: dict[bytes, bytes]) -> None:
        key, op = fields[b"k"].decode(), fields[b"op"]
        if op == b"set":
            self.view[key] = json.loads(fields[b"v"])
        elif op == b"del":
            self.view.pop(key, None)
        self.version = ver

    async def wait_version(self, version: int, timeout: float = 2.0) -> None:
        """Read-your-writes: wait until this view has applied ``version``."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.version >= version), timeout)

    async def reap(self) -> list[str]:
        keys = [self.k(n) for n in ("types", "ver", "log", "epoch", "hosts")]
        gone = await self.scripts["reap"](keys=keys, args=[self.p, LOG_MAXLEN])
        return [g.decode() for g in gone]


def q(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        f"p{p}": round(ordered[min(len(ordered) - 1, len(ordered) * p // 100)] * 1e6, 1) for p in (50, 90, 99)
    }


async def scenario_register(url: str, report: Any) -> None:
    a, b = Host(url, "c1", "a"), Host(url, "c1", "b")
    await a.start()
    await b.start()
    try:
        call, seen = [], []
        for i in range(1000):
            t = time.perf_counter()
            ver = await a.register(f"type-{i}")
            t1 = time.perf_counter()
            await b.wait_version(ver)
            call.append(t1 - t)
            seen.append(time.perf_counter() - t)
        assert len(b.view) == 1000
        report({"case": "register (EVALSHA) round trip, us", **q(call)})
        report({"case": "register until the other host's view has it, us", **q(seen)})
        try:
            await b.register("type-1")
            report({"case": "second owner of a type", "outcome": "accepted (wrong)"})
        except ResponseError as error:
            report({"case": "second owner of a type", "outcome": f"refused: {error}"})
        await a.register("shared", replicas=True)
        await b.register("shared", replicas=True)
        await a.wait_version(b.version)
        report({"case": "replicated type, members", "members": a.view["shared"]["members"]})
        # A reader that falls behind past MAXLEN: stop B's follower, make 3 x MAXLEN changes.
        b.tasks[1].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await b.tasks[1]
        reloads = b.reloads
        for i in range(3 * LOG_MAXLEN):
            await a.register(f"later-{i}")
        b.tasks[1] = asyncio.create_task(b._follow())
        await b.wait_version(a.version, 5)
        report(
            {
                "case": "reader behind past MAXLEN",
                "reloaded": b.reloads - reloads,
                "views_equal": a.view == b.view,
            }
        )
    finally:
        await a.stop()
        await b.stop()


async def scenario_restart(server: RedisServer, report: Any) -> None:
    hosts = [Host(server.url, "c2", f"h{i}", lease_ms=1500) for i in range(3)]
    for h in hosts:
        await h.start()
    try:
        for i, h in enumerate(hosts):
            for j in range(50):
                await h.register(f"t{i}-{j}")
        await asyncio.gather(*(h.wait_version(hosts[2].version) for h in hosts))
        server.kill()
        await asyncio.sleep(0.2)
        server.restart()
        restarted = time.perf_counter()
        probe = fail_fast(server.url)
        deadline = restarted + 10
        while time.perf_counter() < deadline:
            in_redis = await probe.hlen("{c2}:types")
            views_whole = all(len(h.view) == 150 for h in hosts)
            if in_redis == 150 and views_whole:
                break
            await asyncio.sleep(0.01)
        await probe.aclose()
        report(
            {
                "case": "Redis SIGKILLed, restarted empty: all 150 types back in Redis and in all 3 views",
                "seconds_after_restart": round(time.perf_counter() - restarted, 3),
                "lease_ms": 1500,
                "heartbeat_s": 0.5,
                "reasserted": [h.reasserted for h in hosts],
            }
        )
    finally:
        for h in hosts:
            await h.stop()


LEASE_HOLDER = """
import asyncio, sys
sys.path.insert(0, sys.argv[3])
from benchmarks.redis_prototype.directory import Host
async def main():
    h = Host(sys.argv[1], "c3", sys.argv[2], lease_ms=1500)
    await h.start()
    await h.register("victim-type")
    p = h.r.pubsub()
    await p.subscribe(h.k("inbox:" + h.id))
    print("READY", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def scenario_dead_host(server: RedisServer, report: Any) -> None:
    admin = fail_fast(server.url)
    await admin.config_set("notify-keyspace-events", "Ex")
    watcher = Host(server.url, "c3", "w", lease_ms=1500)
    await watcher.start()
    peer = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-c", LEASE_HOLDER, server.url, "victim", str(ROOT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert peer.stdout is not None
        assert (await asyncio.to_thread(peer.stdout.readline)).strip() == "READY"
        await watcher.wait_version(int(await admin.get("{c3}:ver")))
        assert "victim-type" in watcher.view
        events = fail_fast(server.url, socket_timeout=None).pubsub()
        await events.subscribe("__keyevent@0__:expired")
        await events.get_message(timeout=1)
        peer.kill()
        killed = time.perf_counter()
        await asyncio.to_thread(peer.wait)
        times: dict[str, float] = {}

        async def publish_zero() -> None:
            while await admin.publish("{c3}:inbox:victim", b"x") != 0:  # noqa: ASYNC110 (polls Redis)
                await asyncio.sleep(0.001)
            times["PUBLISH to its inbox returns 0"] = time.perf_counter() - killed

        async def expired_event() -> None:
            while True:
                m = await events.get_message(timeout=5)
                if m and m["type"] == "message" and m["data"] == b"{c3}:lease:victim":
                    times["expired keyspace event"] = time.perf_counter() - killed
                    return

        async def reaper() -> None:  # each host would run this every lease/6 (here 0.25 s)
            while not await watcher.reap():  # noqa: ASYNC110 (polls Redis)
                await asyncio.sleep(0.25)
            times["reap script removed it"] = time.perf_counter() - killed

        async def view() -> None:
            async with watcher.changed:
                await watcher.changed.wait_for(lambda: "victim-type" not in watcher.view)
            times["other host's view dropped its type"] = time.perf_counter() - killed

        await asyncio.wait_for(asyncio.gather(publish_zero(), expired_event(), reaper(), view()), 10)
        await events.aclose()
        report({"case": "host SIGKILLed (lease 1500 ms, renewed every 500 ms): seconds after the kill",
                **{k: round(v, 3) for k, v in times.items()}})  # fmt: skip
    finally:
        if peer.poll() is None:
            peer.kill()
        peer.wait()
        if peer.stdout is not None:
            peer.stdout.close()
        await watcher.stop()
        await admin.aclose()


def scenario_hmac(report: Any) -> None:
    secret = os.urandom(32)
    frame = os.urandom(300)
    n = 100_000
    for name, sign in (
        ("hmac.digest sha256", lambda: hmac.digest(secret, frame, "sha256")),
        ("hmac.new sha256", lambda: hmac.new(secret, frame, hashlib.sha256).digest()),
        ("blake2b keyed, 16 bytes", lambda: hashlib.blake2b(frame, key=secret, digest_size=16).digest()),
    ):
        started = time.perf_counter()
        for _ in range(n):
            sign()
        report(
            {
                "case": f"MAC of a 300-byte frame, {name}",
                "us_per_frame": round((time.perf_counter() - started) / n * 1e6, 2),
            }
        )
    tag = hmac.digest(secret, frame, "sha256")
    started = time.perf_counter()
    for _ in range(n):
        hmac.compare_digest(tag, hmac.digest(secret, frame, "sha256"))
    report(
        {
            "case": "verify (digest + compare_digest)",
            "us_per_frame": round((time.perf_counter() - started) / n * 1e6, 2),
        }
    )


async def main() -> None:
    def report(row: dict[str, Any]) -> None:
        print(json.dumps(row), flush=True)

    with RedisServer() as server:
        await scenario_register(server.url, report)
        await scenario_restart(server, report)
        await scenario_dead_host(server, report)
    scenario_hmac(report)


if __name__ == "__main__":
    asyncio.run(main())
