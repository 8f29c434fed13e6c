"""Checks, on our redis-server (7.0 here), the consumer-group behaviour the at-least-once feature
will lean on. Prints one line per fact; exits non-zero if a fact does not hold.

    python benchmarks/redis_prototype/streams_gotchas.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def check(fact: str, ok: bool, detail: object = "") -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {fact} {detail}")
    return ok


def main() -> int:
    results = []
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url, protocol=2, socket_timeout=5)
        version = r.info("server")["redis_version"]
        print(f"redis-server {version}")
        s, g = "{c}:events:t", "handlers"
        # MKSTREAM creates the stream with the group; a second CREATE is BUSYGROUP.
        r.xgroup_create(s, g, id="$", mkstream=True)
        try:
            r.xgroup_create(s, g, id="$")
            results.append(check("second XGROUP CREATE raises BUSYGROUP", False))
        except redis.ResponseError as error:
            results.append(check("second XGROUP CREATE raises BUSYGROUP", "BUSYGROUP" in str(error)))
        ids = [r.xadd(s, {"n": str(i)}) for i in range(10)]
        got = r.xreadgroup(g, "c1", {s: ">"}, count=10)
        results.append(check("XREADGROUP > delivers new entries", len(got[0][1]) == 10))
        r.xack(s, g, *ids[:5])
        pending = r.xpending(s, g)
        results.append(check("XPENDING summary counts unacked", pending["pending"] == 5, pending["pending"]))
        # Trimming does not look at the PEL: pending entries can be trimmed away.
        r.xtrim(s, maxlen=2, approximate=False)
        again = r.xreadgroup(g, "c1", {s: "0"}, count=10)
        trimmed = [entry for entry in again[0][1] if entry[1] is None or entry[1] == {}]
        results.append(
            check(
                "re-reading own history (id 0) shows trimmed pending entries with no fields",
                len(trimmed) == 3,
                f"{len(trimmed)} of {len(again[0][1])}",
            )  # fmt: skip
        )
        # XAUTOCLAIM (7.0: 3-element reply, the third lists deleted ids it dropped from the PEL).
        raw = r.execute_command("XAUTOCLAIM", s, g, "c2", 0, "0-0", "COUNT", 100)
        results.append(check("XAUTOCLAIM replies with 3 elements on 7.0", len(raw) == 3, f"len={len(raw)}"))
        results.append(
            check(
                "XAUTOCLAIM reports trimmed entries as deleted and drops them from the PEL",
                len(raw[2]) == 3,
                raw[2],
            )  # fmt: skip
        )
        results.append(check("  ... and claims the live ones", len(raw[1]) == 2, [e[0] for e in raw[1]]))
        results.append(check("PEL after XAUTOCLAIM", r.xpending(s, g)["pending"] == 2))
        detail = r.xpending_range(s, g, min="-", max="+", count=10)
        results.append(
            check(
                "XPENDING detail counts deliveries (re-reading id 0 and XAUTOCLAIM each add one)",
                all(d["times_delivered"] >= 2 for d in detail),
                [d["times_delivered"] for d in detail],
            )  # fmt: skip
        )
        # XADD ... MAXLEN ~ trims whole macro nodes only: the length can stay above MAXLEN.
        for i in range(1050):
            r.xadd("{c}:approx", {"n": i}, maxlen=100, approximate=True)
        length = r.xlen("{c}:approx")
        results.append(check("XADD MAXLEN ~ 100 keeps over 100 (node granularity)", length > 100, length))
        # A restart without persistence loses the group: XREADGROUP says NOGROUP.
        server.restart()
        r2 = redis.Redis.from_url(server.url, protocol=2, socket_timeout=5)
        try:
            r2.xreadgroup(g, "c1", {s: ">"}, count=1)
            results.append(check("after an empty restart XREADGROUP raises NOGROUP", False))
        except redis.ResponseError as error:
            results.append(check("after an empty restart XREADGROUP raises NOGROUP", "NOGROUP" in str(error)))
        r.close()
        r2.close()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
