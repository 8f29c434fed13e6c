"""Direct links between the hosts of a cluster (``cluster_link_url``): what one host sends
another goes over a WebSocket straight to it, signed, and through Redis only without one.

Faults with links on (a killed host, a killed Redis) are in ``test_cluster_faults.py``.
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx
import pytest
import redis.asyncio as aioredis
from autogen_core import AgentId, MessageContext, RoutedAgent, TopicId, TypeSubscription, message_handler
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from autogen_http_runtime import (
    HttpAgentServer,
    HttpAgentService,
    HttpWorkerAgentRuntime,
    WorkerDisconnectedError,
)
from autogen_http_runtime._cluster.envelope import FOR_WORKER, BatchWriter, Item, batch_key
from autogen_http_runtime._constants import DEFAULT_MAX_MESSAGE_SIZE
from autogen_http_runtime._http import cluster_links
from autogen_http_runtime._http.cluster_links import WebSocketLink, link_url

from .cluster_utils import (
    LEASE,
    SECRET,
    MakeHost,
    MakeWorker,
    Named,
    make_host,
    make_worker,
    redis_commands,
    redis_server,
    reset_named,
    until,
)
from .redis_server import RedisServer
from .test_cli import ready_url, serve
from .utils import TIMEOUT, Recorder, Text, Upper, bounded

__all__ = ["make_host", "make_worker", "redis_server"]  # fixtures


@pytest.fixture(autouse=True)
def _named() -> None:
    reset_named()


async def _upper_calls(caller: HttpWorkerAgentRuntime, prefix: str, count: int) -> None:
    """``count`` calls to the agent ``upper/k``, each answered right."""
    for i in range(count):
        reply = await bounded(caller.send_message(Text(f"{prefix}{i}"), AgentId("upper", "k")))
        assert reply == Text(f"{prefix.upper()}{i}")


async def _in_redis(redis_server: RedisServer, *command: str) -> None:
    """Run ``command`` in the cluster's Redis, as whoever can write there could."""
    client = aioredis.Redis.from_url(redis_server.url, protocol=2)
    try:
        await bounded(client.execute_command(*command))
    finally:
        await client.aclose()


def _host_with_hello_timeout(redis_server: RedisServer, hello_timeout: float) -> HttpAgentServer:
    """A host with links that gives a new one ``hello_timeout`` seconds for its first batch."""
    service = HttpAgentService(
        redis_url=redis_server.url,
        cluster_secret=SECRET,
        cluster_lease=LEASE,
        cluster_link_url="auto",
        hello_timeout=hello_timeout,
        max_message_size=DEFAULT_MAX_MESSAGE_SIZE,  # as HttpAgentServer's: the hosts must agree
    )
    return HttpAgentServer("127.0.0.1", port=0, service=service)


async def test_calls_and_events_cross_hosts_over_links_with_no_redis_command(
    make_host: MakeHost, make_worker: MakeWorker, redis_server: RedisServer
) -> None:
    a, b = await make_host(cluster_link_url="auto"), await make_host(cluster_link_url="auto")
    on_a, on_b = await make_worker(a.url), await make_worker(b.url)
    await Upper.register(on_b, "upper", Upper)
    await Named.register(on_a, "named", lambda: Named("on-a"))
    inbox: asyncio.Queue[tuple[AgentId, object, object]] = asyncio.Queue()
    await Recorder.register(on_b, "recorder", lambda: Recorder(inbox))  # type: ignore[arg-type]
    await on_b.add_subscription(TypeSubscription("news", "recorder"))
    # The first calls each way open the links.
    assert await bounded(on_a.send_message(Text("warm"), AgentId("upper", "k"))) == Text("WARM")
    assert await bounded(on_b.send_message(Text("?"), AgentId("named", "k"))) == Text("on-a")

    assert a.service.cluster is not None and b.service.cluster is not None
    assert a.service.cluster.status().links == (b.service.cluster.host,)
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        metrics = (await http.get(a.url + "/metrics")).text
    assert f'autogen_http_cluster_links{{host="{a.service.cluster.host}"}} 1.0' in metrics

    before = await redis_commands(redis_server.url)
    replies = await bounded(
        asyncio.gather(*(on_a.send_message(Text(f"m{i}"), AgentId("upper", str(i))) for i in range(200)))
    )
    assert replies == [Text(f"M{i}") for i in range(200)]
    assert await bounded(on_b.send_message(Text("?"), AgentId("named", "j"))) == Text("on-a")
    for i in range(20):
        await bounded(on_a.publish_message(Text(f"e{i}"), TopicId("news", "s")))
    got = [(await bounded(inbox.get()))[1] for _ in range(20)]
    assert got == [Text(f"e{i}") for i in range(20)]  # in order, each once
    after = await redis_commands(redis_server.url)
    assert after.get("publish", 0) == before.get("publish", 0)


async def _closed_with(url: str, *messages: bytes | str) -> int:
    """Send ``messages`` on a new link to ``url``; the close code the host answered with."""
    async with connect(url) as link:
        for message in messages:
            await link.send(message)
        with pytest.raises(ConnectionClosed) as closed:
            await bounded(link.recv())
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_a_link_is_closed_at_its_first_forged_replayed_or_text_message(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    b = await make_host(cluster_link_url="auto")
    owner = await make_worker(b.url)
    await Named.register(owner, "named", lambda: Named("b"))
    caller = await make_worker(b.url)
    assert await bounded(caller.send_message(Text("?"), AgentId("named", "k"))) == Text("b")
    worker_id = next(iter(s.worker_id for s in b.service.core.directory.serving("named")))
    url = link_url(b.url)
    now = int(time.time() * 1000)
    request = (
        b'{"jsonrpc":"2.0","id":"1","method":"agent.call","params":{"recipient":{"type":"named",'
        b'"key":"forged"},"payload":{"type":"Text","data_content_type":"application/json",'
        b'"data":{"content":"hold"}}}}'
    )
    assert b.service.cluster is not None
    b_name = b.service.cluster.host
    forged = BatchWriter(batch_key("not-the-secret", "default"), "default", "intruder").seal(
        [Item(FOR_WORKER, worker_id, request)], 0, now, to=b_name, sequence=1, previous=0
    )
    assert await _closed_with(url, forged) == 1008
    assert await _closed_with(url, b"not a batch at all") == 1008
    assert await _closed_with(url, "text") == 1003
    # A batch bearing the secret is taken once; the same again closes the link; so does one
    # sealed for another host.
    signer = BatchWriter(batch_key(SECRET, "default"), "default", "another-host")
    first = signer.seal([], 0, now, to=b_name, sequence=1, previous=0)
    assert await _closed_with(url, first, first) == 1008
    elsewhere = signer.seal([], 0, now, to="host-c", sequence=2, previous=1)
    assert await _closed_with(url, elsewhere) == 1008
    # A link's first message is a hello: a large one is refused before its signature is checked.
    large = signer.seal([Item(FOR_WORKER, worker_id, b"x" * 5000)], 0, now, to=b_name, sequence=3, previous=2)
    assert await _closed_with(url, large) == 1008
    assert Named.held.empty()  # the forged call never reached the agent
    assert b.service.core.pending_calls == 0
    # The host serves on.
    assert await bounded(caller.send_message(Text("?"), AgentId("named", "k2"))) == Text("b")


async def test_a_host_whose_link_cannot_be_opened_is_reached_through_redis(
    make_host: MakeHost, make_worker: MakeWorker, redis_server: RedisServer
) -> None:
    a = await make_host(cluster_link_url="auto")
    b = await make_host(cluster_link_url="ws://127.0.0.1:1")  # nothing listens there
    caller, owner = await make_worker(a.url), await make_worker(b.url)
    await Upper.register(owner, "upper", Upper)
    before = await redis_commands(redis_server.url)
    await _upper_calls(caller, "x", 10)
    after = await redis_commands(redis_server.url)
    # A's requests go through Redis; B's answers over its link to A.
    assert after["publish"] - before.get("publish", 0) == 10

    # A host whose entry in Redis names no URL at all (Redis holds what anyone wrote there).
    c = await make_host(cluster_link_url="auto")
    assert c.service.cluster is not None
    bogus = '{"link": "not a url"}'
    await _in_redis(redis_server, "HSET", "autogen:{default}:hosts", c.service.cluster.host, bogus)
    on_c = await make_worker(c.url)
    await Upper.register(on_c, "upper-c", Upper)
    assert await bounded(caller.send_message(Text("z"), AgentId("upper-c", "k"))) == Text("Z")


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("ws://10.0.0.5:9000", "ws://10.0.0.5:9000/v1/cluster/link"),
        ("http://10.0.0.5:9000/agents/", "ws://10.0.0.5:9000/agents/v1/cluster/link"),
        ("https://host-1.internal", "wss://host-1.internal/v1/cluster/link"),
        ("wss://h:1/v1/cluster/link", "wss://h:1/v1/cluster/link"),  # the endpoint's own URL
    ],
)
def test_a_link_url_is_a_url_of_the_service_or_of_the_endpoint(given: str, url: str) -> None:
    assert link_url(given) == url


@pytest.mark.parametrize("given", ["foo", "10.0.0.5:9000", "ftp://x:1", ""])
def test_a_link_url_that_is_no_url_is_refused_at_once(given: str, redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="cluster_link_url must be the URL"):
        HttpAgentServer(port=0, redis_url=redis_server.url, cluster_secret=SECRET, cluster_link_url=given)


async def test_auto_needs_an_address_other_hosts_can_reach(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="0.0.0.0"):
        HttpAgentServer(
            "0.0.0.0", port=0, redis_url=redis_server.url, cluster_secret=SECRET, cluster_link_url="auto"
        )
    with pytest.raises(ValueError, match="needs a cluster"):
        HttpAgentServer("127.0.0.1", port=0, cluster_link_url="auto")


async def test_serve_takes_links_from_its_environment(
    make_host: MakeHost, make_worker: MakeWorker, redis_server: RedisServer
) -> None:
    a = await make_host(cluster_link_url="auto")
    owner = await make_worker(a.url)
    await Upper.register(owner, "upper", Upper)
    env = {
        "AUTOGEN_HTTP_PORT": "0",
        "AUTOGEN_HTTP_REDIS_URL": redis_server.url,
        "AUTOGEN_HTTP_CLUSTER_SECRET": SECRET,
        "AUTOGEN_HTTP_CLUSTER_LINK_URL": "auto",
    }
    async with serve(sys.executable, "-m", "autogen_http_runtime", "serve", env=env) as proc:
        caller = await make_worker(await ready_url(proc))
        assert await bounded(caller.send_message(Text("x"), AgentId("upper", "k"))) == Text("X")
        before = await redis_commands(redis_server.url)
        await _upper_calls(caller, "y", 10)
        after = await redis_commands(redis_server.url)
        assert after.get("publish", 0) == before.get("publish", 0)


async def test_a_link_with_nothing_to_carry_stays_open(
    make_host: MakeHost, make_worker: MakeWorker, redis_server: RedisServer
) -> None:
    # B takes links only from hosts that send a batch within 0.3 s; A, which only receives
    # from B here, opens its link to B and has nothing to send on it.
    b = _host_with_hello_timeout(redis_server, 0.3)
    service = b.service
    await bounded(b.start())
    try:
        a = await make_host(cluster_link_url="auto")
        inbox: asyncio.Queue[tuple[AgentId, object, object]] = asyncio.Queue()
        on_a, on_b = await make_worker(a.url), await make_worker(b.url)
        await Recorder.register(on_a, "recorder", lambda: Recorder(inbox))  # type: ignore[arg-type]
        await on_a.add_subscription(TypeSubscription("news", "recorder"))
        await bounded(on_b.publish_message(Text("one"), TopicId("news", "s")))
        assert (await bounded(inbox.get()))[1] == Text("one")
        assert a.service.cluster is not None and service.cluster is not None
        assert a.service.cluster.status().links == (service.cluster.host,)
        await asyncio.sleep(1.0)  # over three hello timeouts: not a synchronisation, the test's point
        assert a.service.cluster.status().links == (service.cluster.host,)
        await bounded(on_b.publish_message(Text("two"), TopicId("news", "s")))
        assert (await bounded(inbox.get()))[1] == Text("two")
    finally:
        await bounded(b.stop(grace=1))


class Gate(RoutedAgent):
    """Answers once the test opens the gate."""

    entered: asyncio.Queue[str]
    opened: asyncio.Event

    def __init__(self) -> None:
        super().__init__("waits for the test")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        Gate.entered.put_nowait(message.content)
        await Gate.opened.wait()
        return Text(f"through: {message.content}")


def _abort_link(host: HttpAgentServer, to: HttpAgentServer) -> None:
    """Break ``host``'s link to ``to`` as a network fault would (no close frame)."""
    node, other = host.service.cluster, to.service.cluster
    assert node is not None and other is not None and node._peers is not None
    link = node._peers.peers[other.host].link
    assert isinstance(link, WebSocketLink) and link._client is not None
    link._client.abort()


async def test_a_broken_link_fails_the_calls_it_could_have_carried_at_once(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    Gate.entered, Gate.opened = asyncio.Queue(), asyncio.Event()
    a, b = await make_host(cluster_link_url="auto"), await make_host(cluster_link_url="auto")
    caller, owner = await make_worker(a.url), await make_worker(b.url)
    await Gate.register(owner, "gate", Gate)
    Gate.opened.set()
    assert await bounded(caller.send_message(Text("warm"), AgentId("gate", "k"))) == Text("through: warm")
    Gate.opened.clear()
    await bounded(Gate.entered.get())

    # B's link to A breaks while A's call is with B's worker: its answer would have gone
    # over that link, so A fails the call at once rather than wait for what may be lost.
    call = asyncio.ensure_future(caller.send_message(Text("one"), AgentId("gate", "k")))
    assert await bounded(Gate.entered.get()) == "one"
    _abort_link(b, a)
    with pytest.raises(WorkerDisconnectedError, match="its direct link to this host closed"):
        await bounded(call)

    # A's link to B breaks while its call is in flight there: the request may be lost, the
    # call fails at once too.
    call = asyncio.ensure_future(caller.send_message(Text("two"), AgentId("gate", "k2")))
    assert await bounded(Gate.entered.get()) == "two"
    _abort_link(a, b)
    with pytest.raises(WorkerDisconnectedError, match="this host's direct link to it closed"):
        await bounded(call)
    Gate.opened.set()
    # And the hosts serve on (through Redis until the links are open again, then over them).
    assert await bounded(caller.send_message(Text("three"), AgentId("gate", "k"))) == Text("through: three")

    async def linked_again() -> bool:
        assert a.service.cluster is not None and b.service.cluster is not None
        return bool(a.service.cluster.status().links and b.service.cluster.status().links)

    await until(linked_again)
    assert await bounded(caller.send_message(Text("four"), AgentId("gate", "k"))) == Text("through: four")


@pytest.mark.parametrize("links", [False, True], ids=["through-redis", "direct-links"])
async def test_a_host_declared_gone_while_it_lived_is_reached_again(
    make_host: MakeHost, make_worker: MakeWorker, redis_server: RedisServer, links: bool
) -> None:
    # B's lease goes (as when it stalls past it): A reaps B and forgets it, B joins again
    # under its name. A then numbers its batches to B from a new peer: B must take them.
    options = {"cluster_link_url": "auto"} if links else {}
    a, b = await make_host(**options), await make_host(**options)
    caller, owner = await make_worker(a.url), await make_worker(b.url)
    await Upper.register(owner, "upper", Upper)
    await _upper_calls(caller, "x", 30)
    assert a.service.cluster is not None and b.service.cluster is not None
    b_name = b.service.cluster.host
    await _in_redis(redis_server, "DEL", f"autogen:{{default}}:lease:{b_name}")

    async def reaped_and_back() -> bool:
        return b.service.cluster is not None and b.service.cluster.status().reasserted >= 1

    await until(reaped_and_back)

    async def served() -> bool:
        try:
            return await bounded(caller.send_message(Text("y"), AgentId("upper", "k")), 1.0) == Text("Y")
        except Exception:
            return False

    await until(served, 5.0)
    await _upper_calls(caller, "z", 10)


async def test_a_link_url_that_reaches_another_host_is_tried_once_and_redis_carries_on(
    make_host: MakeHost, make_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    a = await make_host(cluster_link_url="auto")
    b = await make_host(cluster_link_url=a.url)  # a mistake: B says A's address is its own
    caller, owner = await make_worker(a.url), await make_worker(b.url)
    await Upper.register(owner, "upper", Upper)
    await _upper_calls(caller, "x", 5)
    assert a.service.cluster is not None and b.service.cluster is not None
    b_name = b.service.cluster.host

    async def told() -> bool:
        return any(
            "refused this host's direct link" in r.getMessage() and b_name in r.getMessage()
            for r in caplog.records
        )

    await until(told)
    assert a.service.cluster.status().links == ()
    await _upper_calls(caller, "y", 5)  # and on through Redis


async def test_links_that_send_nothing_are_few_and_closed_in_time(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_links, "MAX_UNPROVEN", 2)
    b = _host_with_hello_timeout(redis_server, 0.5)
    await bounded(b.start())
    try:
        url = link_url(b.url)
        async with connect(url) as one, connect(url) as two:
            with pytest.raises(InvalidStatus):
                async with connect(url):
                    pass  # a third, while two wait for their first batch: refused
            for waiting in (one, two):
                with pytest.raises(ConnectionClosed) as closed:
                    await bounded(waiting.recv())  # closed at the hello timeout
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        async with connect(url):
            pass  # room again
    finally:
        await bounded(b.stop(grace=1))
