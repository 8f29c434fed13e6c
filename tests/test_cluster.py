"""Several hosts acting as one runtime through a real Redis (``HttpAgentService(redis_url=...)``).

Hosts run in the test's process on their own ports, sharing one throwaway redis-server;
workers connect to them over real WebSockets. Faults (a killed host, a killed Redis) are in
``test_cluster_faults.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis.asyncio as aioredis
from autogen_core import (
    AgentId,
    CancellationToken,
    DefaultTopicId,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
)

from autogen_http_runtime import (
    AgentNotFoundError,
    AgentTypeConflictError,
    CallTimeoutError,
    ClusterJoinError,
    HttpAgentServer,
    SubscriptionError,
)
from autogen_http_runtime._cluster.envelope import FOR_WORKER, BatchReader, BatchWriter, Item, batch_key
from autogen_http_runtime._protocol import wire

from .cluster_utils import (
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
from .test_tracing import by_name, trace_ids, tracing
from .utils import Recorder, Text, Upper, bounded

__all__ = ["make_host", "make_worker", "redis_server"]  # fixtures

Inbox = asyncio.Queue[tuple[AgentId, object, object]]


@pytest.fixture(autouse=True)
def _named() -> None:
    reset_named()


async def test_a_call_crosses_hosts_both_ways(make_host: MakeHost, make_worker: MakeWorker) -> None:
    a, b = await make_host(), await make_host()
    on_a, on_b = await make_worker(a.url, name="on-a"), await make_worker(b.url, name="on-b")
    await Upper.register(on_b, "upper", Upper)
    await Named.register(on_a, "named", lambda: Named("on-a"))

    assert await bounded(on_a.send_message(Text("hi"), AgentId("upper", "k"))) == Text("HI")
    assert await bounded(on_b.send_message(Text("?"), AgentId("named", "k"))) == Text("on-a")
    # Errors cross as they are: the handler's exception, typed.
    with pytest.raises(Exception, match="kaboom"):
        await bounded(on_a.send_message(Text("boom"), AgentId("upper", "k")))
    # Many at once, over one host pair.
    replies = await bounded(
        asyncio.gather(*(on_a.send_message(Text(f"m{i}"), AgentId("upper", str(i))) for i in range(200)))
    )
    assert replies == [Text(f"M{i}") for i in range(200)]


async def test_same_host_traffic_costs_no_redis_command_and_a_cross_host_call_two(
    make_host: MakeHost, make_worker: MakeWorker, redis_server: RedisServer
) -> None:
    a, b = await make_host(), await make_host()
    caller, local, remote = await make_worker(a.url), await make_worker(a.url), await make_worker(b.url)
    await Upper.register(local, "local", Upper)
    await Upper.register(remote, "remote", Upper)
    await bounded(caller.send_message(Text("warm"), AgentId("remote", "k")))

    before = await redis_commands(redis_server.url)
    for i in range(50):
        await bounded(caller.send_message(Text("x"), AgentId("local", str(i))))
    after = await redis_commands(redis_server.url)
    assert after.get("publish", 0) == before.get("publish", 0)
    assert after.get("evalsha", 0) - before.get("evalsha", 0) <= 5  # lease renewals only

    before = after
    for i in range(50):
        await bounded(caller.send_message(Text("x"), AgentId("remote", str(i))))
    after = await redis_commands(redis_server.url)
    # One call at a time: the request in one PUBLISH, the answer in another; no lookups.
    assert after["publish"] - before["publish"] == 100
    assert after.get("get", 0) == before.get("get", 0)
    assert after.get("hget", 0) == before.get("hget", 0)


async def test_events_reach_every_kind_of_subscription_across_three_hosts(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    a, b, c = await make_host(), await make_host(), await make_host()
    publisher = await make_worker(a.url)
    inbox: Inbox = asyncio.Queue()
    on_b, on_c, on_a = await make_worker(b.url), await make_worker(c.url), await make_worker(a.url)
    await Recorder.register(on_b, "exact", lambda: Recorder(inbox))  # type: ignore[arg-type]
    await Recorder.register(on_c, "prefixed", lambda: Recorder(inbox))  # type: ignore[arg-type]
    await Recorder.register(on_a, "default", lambda: Recorder(inbox))  # type: ignore[arg-type]
    await on_b.add_subscription(TypeSubscription("news", "exact"))
    await on_c.add_subscription(TypePrefixSubscription("ne", "prefixed"))
    await on_a.add_subscription(TypeSubscription("default", "default"))  # DefaultSubscription's topic

    await bounded(publisher.publish_message(Text("one"), TopicId("news", "s1")))
    await bounded(publisher.publish_message(Text("two"), DefaultTopicId()))
    got = {(await bounded(inbox.get()))[0] for _ in range(3)}
    assert got == {AgentId("exact", "s1"), AgentId("prefixed", "s1"), AgentId("default", "default")}
    # Each subscribed agent got its copy once: nothing more arrives.
    await bounded(publisher.publish_message(Text("three"), TopicId("other", "s")))
    await bounded(publisher.send_message(Text("sync"), AgentId("exact", "sync")))  # a barrier via B
    assert inbox.qsize() == 1  # only the barrier itself
    assert (await inbox.get())[0] == AgentId("exact", "sync")


async def test_http_api_works_on_every_host_and_listings_show_the_whole_cluster(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    a, b, c = await make_host(), await make_host(), await make_host()
    server_worker = await make_worker(b.url, name="serves-upper")
    await Upper.register(server_worker, "upper", Upper)
    inbox: Inbox = asyncio.Queue()
    listener = await make_worker(a.url, name="listens")
    await Recorder.register(listener, "rec", lambda: Recorder(inbox))  # type: ignore[arg-type]
    await listener.add_subscription(TypeSubscription("alerts", "rec"))

    async with httpx.AsyncClient(timeout=10) as http:
        for host in (a, b, c):
            answer = await http.post(
                host.url + "/v1/rpc",
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "send",
                    "params": {
                        "recipient": {"type": "upper", "key": "h"},
                        "payload": {"data_type": "Text", "data": {"content": host.address}},
                    },
                },
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"]["payload"]["data"] == {"content": host.address.upper()}
        posted = await http.post(
            c.url + "/v1/events",
            json={
                "specversion": "1.0",
                "id": "e1",
                "source": "s",
                "type": "alerts",
                "datacontenttype": "application/json",
                "agmsgtype": "Text",
                "data": {"content": "via c"},
            },
            headers={"Content-Type": "application/cloudevents+json"},
        )
        assert posted.status_code == 202, posted.text
        recipient, message, _ = await bounded(inbox.get())
        assert (recipient, message) == (AgentId("rec", "s"), Text("via c"))

        for host in (a, b, c):
            workers = (await http.get(host.url + "/v1/workers")).json()["workers"]
            by_name = {w["name"]: w for w in workers}
            assert set(by_name) == {"serves-upper", "listens"}
            assert by_name["serves-upper"]["host"] == b.service.cluster.host  # type: ignore[union-attr]
            assert by_name["listens"]["host"] == a.service.cluster.host  # type: ignore[union-attr]
            agents = (await http.get(host.url + "/v1/agents")).json()
            assert set(agents["agent_types"]) >= {"upper", "rec"}
            subscriptions = (await http.get(host.url + "/v1/subscriptions")).json()["subscriptions"]
            assert any(s["topic"] == "alerts" and s["agent_type"] == "rec" for s in subscriptions)


async def test_state_and_metadata_calls_cross_hosts(make_host: MakeHost, make_worker: MakeWorker) -> None:
    a, b = await make_host(), await make_host()
    caller, owner = await make_worker(a.url), await make_worker(b.url)
    await Named.register(owner, "named", lambda: Named("b"))
    agent = AgentId("named", "c1")
    await bounded(caller.send_message(Text("one"), agent))
    assert await bounded(caller.agent_save_state(agent)) == {"name": "b", "calls": 1}
    await bounded(caller.agent_load_state(agent, {"name": "b", "calls": 41}))
    await bounded(caller.send_message(Text("two"), agent))
    assert await bounded(caller.agent_save_state(agent)) == {"name": "b", "calls": 42}
    metadata = await bounded(caller.agent_metadata(agent))
    assert metadata["type"] == "named" and metadata["key"] == "c1"


async def test_a_deadline_and_a_cancel_reach_the_worker_on_another_host(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    a, b = await make_host(), await make_host()
    caller = await make_worker(a.url, call_timeout=0.5)
    holder = await make_worker(b.url)
    await Named.register(holder, "named", lambda: Named("b"))

    with pytest.raises(CallTimeoutError):
        await bounded(caller.send_message(Text("hold"), AgentId("named", "deadline")))
    assert await bounded(Named.cancelled.get()) == "deadline"

    token = CancellationToken()
    call = asyncio.ensure_future(
        caller.send_message(Text("hold"), AgentId("named", "cancel"), cancellation_token=token)
    )
    assert await bounded(Named.held.get()) == "deadline"
    assert await bounded(Named.held.get()) == "cancel"
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(call)
    assert await bounded(Named.cancelled.get()) == "cancel"
    # Nothing is left in flight on either host.
    assert a.service.core.pending_calls == 0
    await until(lambda: _zero(b))


async def _zero(host: HttpAgentServer) -> bool:
    return host.service.core.pending_calls == 0


async def test_registration_is_seen_by_every_host_when_it_returns(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    a, b = await make_host(), await make_host()
    caller, owner = await make_worker(a.url), await make_worker(b.url)
    for i in range(20):
        await Upper.register(owner, f"fresh{i}", Upper)
        # No wait: the call goes to host A at once after host B acknowledged the type.
        assert await bounded(caller.send_message(Text("x"), AgentId(f"fresh{i}", "k"))) == Text("X")
    for i in range(10):
        topic = f"t{i}"
        inbox: Inbox = asyncio.Queue()
        await Recorder.register(owner, f"rec{i}", lambda inbox=inbox: Recorder(inbox))  # type: ignore[misc]
        await owner.add_subscription(TypeSubscription(topic, f"rec{i}"))
        await bounded(caller.publish_message(Text("e"), TopicId(topic, "s")))
        assert (await bounded(inbox.get()))[0] == AgentId(f"rec{i}", "s")


async def test_an_unknown_agent_still_fails_with_agent_not_found(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    a = await make_host()
    await make_host()
    caller = await make_worker(a.url)
    with pytest.raises(AgentNotFoundError):
        await bounded(caller.send_message(Text("x"), AgentId("nobody", "k")))


async def test_a_type_or_subscription_taken_on_another_host_is_refused(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    a, b = await make_host(), await make_host()
    first, second = await make_worker(a.url), await make_worker(b.url)
    await Upper.register(first, "upper", Upper)
    with pytest.raises(AgentTypeConflictError, match="already registered"):
        await Upper.register(second, "upper", Upper)
    await first.add_subscription(TypeSubscription("news", "upper", id="sub-1"))
    with pytest.raises(SubscriptionError):
        await second.add_subscription(TypeSubscription("news", "upper", id="sub-1"))
    # The type stays where it was: calls through either host reach the first worker.
    assert await bounded(second.send_message(Text("x"), AgentId("upper", "k"))) == Text("X")


async def test_replicas_on_different_hosts_share_one_placement(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    a, b = await make_host(replicas=True), await make_host(replicas=True)
    on_a, on_b = await make_worker(a.url, name="ra"), await make_worker(b.url, name="rb")
    await Named.register(on_a, "who", lambda: Named("ra"))
    await Named.register(on_b, "who", lambda: Named("rb"))
    caller_a, caller_b = await make_worker(a.url), await make_worker(b.url)
    keys = [f"k{i}" for i in range(60)]

    async def placement(caller: object) -> dict[str, str]:
        replies = await bounded(
            asyncio.gather(*(caller.send_message(Text("?"), AgentId("who", k)) for k in keys))  # type: ignore[attr-defined]
        )
        return {k: r.content for k, r in zip(keys, replies, strict=True)}

    seen_from_a, seen_from_b = await placement(caller_a), await placement(caller_b)
    assert seen_from_a == seen_from_b
    assert set(seen_from_a.values()) == {"ra", "rb"}
    # The replica on B leaves: its ids go to A's, and both hosts agree again.
    await bounded(on_b.stop())
    await until(lambda: _one_member(a, "who"))
    assert set((await placement(caller_b)).values()) == {"ra"}


async def _one_member(host: HttpAgentServer, agent_type: str) -> bool:
    return len(host.service.core.directory.serving(agent_type)) == 1


async def test_every_host_must_agree_on_the_settings_that_change_routing(
    make_host: MakeHost, redis_server: RedisServer
) -> None:
    await make_host()
    options: dict[str, Any]
    name: str
    for options, name in (
        ({"replicas": True}, "replicas"),
        ({"cluster_secret": "another-secret-altogether"}, "cluster_secret"),
        ({"max_message_size": 1 << 20}, "max_message_size"),
    ):
        settings: dict[str, Any] = {"redis_url": redis_server.url, "cluster_secret": SECRET, **options}
        host = HttpAgentServer("127.0.0.1", port=0, **settings)
        with pytest.raises(ClusterJoinError, match=name):
            await bounded(host.start())
        await bounded(host.stop())


async def test_a_cluster_needs_a_secret_and_a_redis_url() -> None:
    with pytest.raises(ValueError, match="cluster_secret"):
        HttpAgentServer(port=0, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="redis://"):
        HttpAgentServer(port=0, redis_url="http://127.0.0.1:1", cluster_secret=SECRET)


async def test_redis_that_cannot_be_reached_fails_start_with_a_clear_error() -> None:
    host = HttpAgentServer(port=0, redis_url="redis://127.0.0.1:1/0", cluster_secret=SECRET)
    with pytest.raises(ClusterJoinError, match="127.0.0.1:1"):
        await bounded(host.start())
    await bounded(host.stop())


async def test_a_batch_signed_with_another_secret_or_replayed_is_refused(
    make_host: MakeHost, make_worker: MakeWorker, redis_server: RedisServer
) -> None:
    a, b = await make_host(), await make_host()
    caller, owner = await make_worker(a.url), await make_worker(b.url)
    await Named.register(owner, "named", lambda: Named("b"))
    target_host = b.service.cluster.host  # type: ignore[union-attr]
    worker_id = next(iter(s.worker_id for s in b.service.core.directory.serving("named")))
    channel = f"autogen:{{default}}:inbox:{target_host}"

    spy = aioredis.Redis.from_url(redis_server.url, protocol=2)
    listening = spy.pubsub()
    await listening.subscribe(channel)
    await bounded(caller.send_message(Text("?"), AgentId("named", "real")))
    captured = None
    while captured is None:
        message = await bounded(listening.get_message(ignore_subscribe_messages=True, timeout=1.0))
        if message is not None:
            captured = message["data"]
    await listening.aclose()  # type: ignore[no-untyped-call]

    # The real request, made into one that would hold the agent, signed with another secret.
    real = BatchReader(batch_key(SECRET, "default"), "default", target_host).open(
        captured, int(time.time() * 1000)
    )
    request = json.loads(real.items[0].data)
    request["params"]["recipient"]["key"] = "forged"
    request["params"]["payload"]["data"] = {"content": "hold"}
    forged = BatchWriter(batch_key("not-the-secret", "default"), "default", "intruder").seal(
        [Item(FOR_WORKER, worker_id, wire.encode_bytes(request))],
        0,
        int(time.time() * 1000),
        to=target_host,
        sequence=1,
        previous=0,
    )
    refused_before = b.service.cluster.status().refused  # type: ignore[union-attr]
    try:
        assert await spy.publish(channel, forged) == 1
        assert await spy.publish(channel, captured) == 1  # a real batch, sent again
        await until(lambda: _refused(b, refused_before + 2))
    finally:
        await spy.aclose()
    assert Named.held.empty()  # the forged call never reached the agent
    assert b.service.core.pending_calls == 0


async def _refused(host: HttpAgentServer, count: int) -> bool:
    return host.service.cluster.status().refused >= count  # type: ignore[union-attr]


async def test_two_clusters_share_one_redis_without_meeting(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    x1, x2 = await make_host(cluster_name="x"), await make_host(cluster_name="x")
    y1 = await make_host(cluster_name="y")
    in_x, in_y = await make_worker(x2.url), await make_worker(y1.url)
    await Named.register(in_x, "named", lambda: Named("x"))
    await Named.register(in_y, "named", lambda: Named("y"))  # no conflict: another cluster
    caller = await make_worker(x1.url)
    assert await bounded(caller.send_message(Text("?"), AgentId("named", "k"))) == Text("x")
    assert len(list(y1.service.core.directory.workers())) == 1


async def test_metrics_carry_the_host_and_the_cluster(make_host: MakeHost) -> None:
    a = await make_host()
    await make_host()
    host = a.service.cluster.host  # type: ignore[union-attr]
    async with httpx.AsyncClient(timeout=10) as http:

        async def both_hosts_counted() -> bool:
            text = (await http.get(a.url + "/metrics")).text
            return f'autogen_http_cluster_hosts{{host="{host}"}} 2.0' in text

        await until(both_hosts_counted)
        text = (await http.get(a.url + "/metrics")).text
        ready = await http.get(a.url + "/readyz")
    assert f'autogen_http_cluster_info{{cluster="default",host="{host}"}} 1.0' in text
    assert f'autogen_http_cluster_available{{host="{host}"}} 1.0' in text
    assert f'autogen_http_calls_routed_total{{host="{host}"}}' in text
    assert ready.status_code == 200 and ready.json()["cluster"] == {
        "name": "default",
        "host": host,
        "hosts": 2,
    }


async def test_serve_joins_a_cluster_from_its_environment(
    make_host: MakeHost, make_worker: MakeWorker, redis_server: RedisServer
) -> None:
    a = await make_host()
    owner = await make_worker(a.url)
    await Upper.register(owner, "upper", Upper)
    env = {
        "AUTOGEN_HTTP_PORT": "0",
        "AUTOGEN_HTTP_REDIS_URL": redis_server.url,
        "AUTOGEN_HTTP_CLUSTER_SECRET": SECRET,
        "AUTOGEN_HTTP_CLUSTER_LEASE": "1.5",
    }
    async with serve(sys.executable, "-m", "autogen_http_runtime", "serve", env=env) as proc:
        url = await ready_url(proc)
        caller = await make_worker(url)
        assert await bounded(caller.send_message(Text("x"), AgentId("upper", "k"))) == Text("X")
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(url + "/readyz")).json()["cluster"]["name"] == "default"


async def test_serve_that_cannot_join_exits_1_with_one_line(redis_server: RedisServer) -> None:
    command = (sys.executable, "-m", "autogen_http_runtime", "serve", "--port", "0")
    async with serve(*command, "--redis-url", "redis://127.0.0.1:1/0", "--cluster-secret", SECRET) as proc:
        _, stderr = await bounded(proc.communicate())
    assert proc.returncode == 1
    assert (
        stderr.decode()
        .splitlines()[-1]
        .startswith("autogen-http-runtime serve: Cannot join cluster 'default'")
    )
    async with serve(*command, "--redis-url", redis_server.url) as proc:
        _, stderr = await bounded(proc.communicate())
    assert proc.returncode == 2 and "cluster_secret" in stderr.decode()


async def test_a_cluster_over_tls_as_an_acl_user_limited_to_its_keys(
    tmp_path: Path, make_worker: MakeWorker
) -> None:
    rules = "~autogen:{secure}:* &autogen:{secure}:* +@all -@dangerous"  # as docs/cluster.md says
    with RedisServer(
        tmp_path, username="agents", password="pw-of-agents", acl_rules=rules, tls=True
    ) as server:
        query = urlencode(server.client_kwargs())
        url = f"{server.url}?{query}"
        assert url.startswith("rediss://agents:pw-of-agents@")
        hosts = [
            HttpAgentServer(port=0, redis_url=url, cluster_name="secure", cluster_secret=SECRET)
            for _ in range(2)
        ]
        try:
            for host in hosts:
                await bounded(host.start())
            owner, caller = await make_worker(hosts[0].url), await make_worker(hosts[1].url)
            await Upper.register(owner, "upper", Upper)
            assert await bounded(caller.send_message(Text("tls"), AgentId("upper", "k"))) == Text("TLS")
            # A cluster whose keys the user may not touch cannot join, and the error hides the password.
            other = HttpAgentServer(port=0, redis_url=url, cluster_name="other", cluster_secret=SECRET)
            with pytest.raises(ClusterJoinError) as refused:
                await bounded(other.start())
            await bounded(other.stop())
            assert "pw-of-agents" not in str(refused.value) and "agents:***@" in str(refused.value)
        finally:
            for host in hosts:
                await bounded(host.stop(grace=1))


async def test_a_call_and_an_event_across_hosts_are_one_trace(
    make_host: MakeHost, make_worker: MakeWorker
) -> None:
    provider, exporter, _ = tracing()
    a, b = await make_host(), await make_host()
    calling = await make_worker(a.url, tracer_provider=provider)
    serving = await make_worker(b.url, tracer_provider=provider)
    await Upper.register(serving, "upper", Upper)
    inbox: Inbox = asyncio.Queue()
    await Recorder.register(serving, "rec", lambda: Recorder(inbox))  # type: ignore[arg-type]
    await serving.add_subscription(TypeSubscription("traced", "rec"))
    with provider.get_tracer("test").start_as_current_span("across hosts") as root:
        assert await bounded(calling.send_message(Text("t"), AgentId("upper", "k"))) == Text("T")
        await bounded(calling.publish_message(Text("e"), TopicId("traced", "s")))
    await bounded(inbox.get())
    spans = exporter.get_finished_spans()
    process = by_name(spans, "autogen process upper.(k)-A")
    assert process.parent is not None and process.parent.is_remote
    assert process.parent.trace_id == root.get_span_context().trace_id
    assert trace_ids(spans) == {root.get_span_context().trace_id}
