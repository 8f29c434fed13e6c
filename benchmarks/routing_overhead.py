"""The routing core's cost per call and per event, in memory: no sockets, no event loop work.

    python benchmarks/routing_overhead.py [--calls 200000] [--events 200000] [--repeat 5]

Runs ``RoutingCore.handle_text`` on a request and its answer (one call) and on a
published event with one subscriber, and prints the best of ``--repeat`` runs in
microseconds. It measures what the host's own bookkeeping adds (counters, latency
histogram, outcome tally), so it is the figure to compare before and after changing the
core: run it against another checkout with ``PYTHONPATH=<that checkout>/src``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from autogen_http_runtime._constants import PROTOCOL_VERSION
from autogen_http_runtime._host.core import RoutingCore
from autogen_http_runtime._host.session import WorkerSession

SEND = {"recipient": {"type": "b", "key": "k"}, "payload": {"data_type": "T", "data": {"x": 1}}}


def _request(request_id: int, method: str, **params: object) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def _drain(session: WorkerSession) -> list[bytes]:
    out = []
    while not session.outbox.empty():
        data = session.outbox.get_nowait()
        assert isinstance(data, bytes)
        session.sent(data)
        out.append(data)
    return out


def _greeted(router: RoutingCore, agent_type: str | None = None) -> WorkerSession:
    session = router.open_session()
    router.handle_text(session, _request(0, "hello", protocol=PROTOCOL_VERSION))
    if agent_type:
        router.handle_text(session, _request(1, "register_agent_type", type=agent_type))
    _drain(session)
    return session


def time_calls(count: int) -> float:
    """Seconds per call: the request routed to the target, the answer routed back."""
    router = RoutingCore()
    caller, target = _greeted(router), _greeted(router, "b")
    requests = [_request(i, "send", **SEND) for i in range(count)]
    answer = '{"jsonrpc":"2.0","id":%d,"result":{"payload":null}}'
    started = time.perf_counter()
    for text in requests:
        router.handle_text(caller, text)
        [forwarded] = _drain(target)
        host_id = int(forwarded.split(b'"id":', 1)[1].split(b",", 1)[0])
        router.handle_text(target, answer % host_id)
        _drain(caller)
    return (time.perf_counter() - started) / count


def time_events(count: int) -> float:
    """Seconds per event published to a topic with one subscriber on another worker."""
    router = RoutingCore()
    publisher, subscriber = _greeted(router), _greeted(router, "b")
    subscription = {"id": "s", "kind": "type", "agent_type": "b", "topic": "t"}
    router.handle_text(subscriber, _request(2, "add_subscription", subscription=subscription))
    _drain(subscriber)
    event = json.dumps(
        {
            "specversion": "1.0",
            "id": "e",
            "source": "src",
            "type": "t",
            "datacontenttype": "application/json",
            "agmsgtype": "T",
            "data": {"x": 1},
        }
    )
    started = time.perf_counter()
    for _ in range(count):
        router.handle_text(publisher, event)
        _drain(subscriber)
    return (time.perf_counter() - started) / count


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    call = min(time_calls(args.calls) for _ in range(args.repeat))
    event = min(time_events(args.events) for _ in range(args.repeat))
    print(f"per call (request + answer): {call * 1e6:.2f} us")
    print(f"per event (one subscriber):  {event * 1e6:.2f} us")


if __name__ == "__main__":
    asyncio.run(main())  # the sessions' queues want a running loop on Python 3.10
