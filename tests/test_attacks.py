"""Issue 16, attacks 1-3 and 8: a hostile peer against a live, secured host.

Each test runs the attack as an outsider would (a real ``HttpAgentServer`` with tokens, an
access policy and ``max_connections``; a raw WebSocket or plain HTTP for the attacker) and
asserts what the host must do. Where several things could go wrong, the test collects what
it saw and compares it with what should be, so one failure shows all of it.

The memory, back-pressure, CPU and file-descriptor attacks (4-7) run a host in its own
process: ``tests/test_attacks_load.py``. docs/security.md ("Attacks and defences") names
the defence each test checks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from autogen_core import AgentId, MessageContext, RoutedAgent, TypeSubscription, message_handler

from autogen_http_runtime import (
    AccessPolicy,
    AccessRule,
    BearerTokens,
    HostConnectionError,
    HttpAgentServer,
    HttpAgentService,
    Identity,
    ReconnectPolicy,
    RpcError,
)

from .attack_support import (
    RawPeer,
    Relay,
    bearer,
    instance_of,
    poll,
    raw_peers,
    workers,
)
from .utils import TIMEOUT, Recorder, Text, bounded

TOKENS = {"alice": "alice-token", "mallory": "mallory-token", "carol": "carol-token", "ops": "ops-token"}
#: alice serves agents; carol calls and publishes; mallory is a worker of the same host with
#: a narrow rule of her own, and the attacker; ops may do anything.
POLICY = AccessPolicy(
    {
        "alice": AccessRule(register=["svc", "vault", "rec"], call="*", publish="*", subscribe="*"),
        "mallory": AccessRule(register="m.*", call="svc", publish="m.*", subscribe=["m.*", "news"]),
        "carol": AccessRule(call="*", publish="*"),
        "ops": AccessRule.allow_all(),
    }
)
EVENT = {"Content-Type": "application/cloudevents+json"}


@asynccontextmanager
async def secured_host(**settings: Any) -> AsyncIterator[HttpAgentServer]:
    """A host on loopback as issue 16 attacked it: tokens, a policy and max_connections."""
    settings = {
        "authenticator": BearerTokens(TOKENS),
        "access_policy": POLICY,
        "max_connections": 8,
    } | settings
    server = HttpAgentServer("127.0.0.1", port=0, service=HttpAgentService(**settings))
    await bounded(server.start())
    try:
        yield server
    finally:
        await bounded(server.stop(grace=1))


@asynccontextmanager
async def http(server: HttpAgentServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as client:
        yield client


async def gone(client: httpx.AsyncClient, name: str, token: str) -> bool:
    """Whether the host no longer lists a worker called ``name`` (asked with ``token``)."""
    listing = (await client.get("/v1/workers", headers=bearer(token))).json()["workers"]
    return not any(worker["name"] == name for worker in listing)


def outcome(answer: Mapping[str, Any]) -> Any:
    """A JSON-RPC answer in short: ``"ok"`` or its error code."""
    return answer["error"]["code"] if "error" in answer else "ok"


class Gate(RoutedAgent):
    """Upper-cases, but only once ``release`` is set; ``started`` says a call is being served."""

    def __init__(self, started: asyncio.Event, release: asyncio.Event) -> None:
        super().__init__("waits at a gate")
        self.started, self.release = started, release

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self.started.set()
        await self.release.wait()
        return Text(message.content.upper())


# -- 1. session takeover ------------------------------------------------------------------------


async def test_1_another_identity_cannot_take_over_a_workers_session() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    async with secured_host() as server, workers() as make, raw_peers() as peers, http(server) as client:
        victim = await make(server.url, token=TOKENS["alice"], name="victim")
        await victim.register_factory("svc", lambda: Gate(started, release))
        caller = await make(server.url, token=TOKENS["carol"])
        in_flight = asyncio.ensure_future(caller.send_message(Text("held"), AgentId("svc", "k")))
        try:
            await bounded(started.wait())
            # The attacker reads the victim's instance where the host lists it...
            listing = await client.get("/v1/workers", headers=bearer(TOKENS["mallory"]))
            instance = instance_of(victim)
            # ... and says hello with it on a connection of her own.
            attacker = await RawPeer.connect(server.url, bearer(TOKENS["mallory"]))
            peers.append(attacker)
            takeover = await bounded(attacker.hello(instance=instance, name="victim"))
            release.set()
            try:
                served: Any = await bounded(in_flight)
            except RpcError as exc:
                served = f"{type(exc).__name__} ({exc.code})"
        finally:
            release.set()
            in_flight.cancel()
        seen = {
            "instance readable by another identity": instance in listing.text,
            "the takeover hello": outcome(takeover),
            "the victim's call in flight": served,
        }
        assert seen == {
            "instance readable by another identity": False,
            "the takeover hello": -32012,
            "the victim's call in flight": Text("HELD"),
        }
        assert await bounded(caller.send_message(Text("after"), AgentId("svc", "k"))) == Text("AFTER")
        # The worker's own identity still resumes its instance, as a reconnecting worker does.
        resumed = await RawPeer.connect(server.url, bearer(TOKENS["alice"]))
        peers.append(resumed)
        assert outcome(await bounded(resumed.hello(instance=instance))) == "ok"


# -- 2. subscription squatting ------------------------------------------------------------------


async def test_2_a_subscription_cannot_be_squatted_and_the_owners_replay_survives() -> None:
    inbox: asyncio.Queue[tuple[AgentId, Any, MessageContext]] = asyncio.Queue()
    quick = ReconnectPolicy(initial_delay=0.05, max_delay=0.2)
    async with (
        secured_host() as server,
        Relay(server.url) as relay,
        workers() as make,
        raw_peers() as peers,
        http(server) as client,
    ):
        owner = await make(relay.url, token=TOKENS["alice"], name="owner", reconnect=quick)
        await owner.register_factory("rec", lambda: Recorder(inbox))
        await bounded(owner.add_subscription(TypeSubscription("news", "rec", id="owner-news")))
        squatter = await RawPeer.connect(server.url, bearer(TOKENS["mallory"]))
        peers.append(squatter)
        await bounded(squatter.hello())
        spec = {"id": "owner-news", "kind": "type", "agent_type": "rec", "topic": "news"}
        removed = await bounded(squatter.call("remove_subscription", {"id": "owner-news"}))
        await bounded(squatter.call("add_subscription", {"subscription": spec}))

        # The owner's network fails; it reconnects and replays its type and subscriptions.
        relay.cut()
        assert await poll(lambda: relay.connections >= 2, TIMEOUT)
        try:
            # A call through the host: it waits for the reconnection, and fails if the worker gave up.
            await bounded(owner.agent_metadata(AgentId("rec", "probe")))
            replay: Any = "ok"
        except (HostConnectionError, RpcError) as exc:
            replay = f"{type(exc).__name__}: {exc}"
        listed = (await client.get("/v1/subscriptions", headers=bearer(TOKENS["ops"]))).json()
        workers_now = (await client.get("/v1/workers", headers=bearer(TOKENS["ops"]))).json()["workers"]
        owner_ids = {w["worker_id"] for w in workers_now if w["name"] == "owner"}
        holder = {s["worker_id"] for s in listed["subscriptions"] if s["id"] == "owner-news"}
        seen = {
            "the squatter's remove": "refused" if outcome(removed) in (-32012, -32006) else outcome(removed),
            "the owner's replay": replay,
            "the subscription is the owner's": bool(holder) and holder <= owner_ids,
        }
        assert seen == {
            "the squatter's remove": "refused",
            "the owner's replay": "ok",
            "the subscription is the owner's": True,
        }
        event = {"specversion": "1.0", "id": "e1", "source": "s", "type": "news", "agmsgtype": "Text"}
        published = await client.post(
            "/v1/events", json=event | {"data": {"content": "hi"}}, headers=bearer(TOKENS["carol"]) | EVENT
        )
        assert published.status_code == 202
        assert (await bounded(inbox.get()))[1] == Text("hi")


# -- 3. subscribing another identity's agent type -----------------------------------------------


async def test_3_a_subscription_for_an_agent_type_needs_the_right_to_serve_it() -> None:
    inbox: asyncio.Queue[tuple[AgentId, Any, MessageContext]] = asyncio.Queue()
    async with secured_host() as server, workers() as make, raw_peers() as peers, http(server) as client:
        alice = await make(server.url, token=TOKENS["alice"])
        await alice.register_factory("vault", lambda: Recorder(inbox))
        await bounded(alice.add_subscription(TypeSubscription("vault.ping", "vault")))
        attacker = await RawPeer.connect(server.url, bearer(TOKENS["mallory"]))
        peers.append(attacker)
        await bounded(attacker.hello())
        spec = {"id": "m-sub", "kind": "type", "agent_type": "vault", "topic": "m.leak"}
        added = await bounded(attacker.call("add_subscription", {"subscription": spec}))
        event = {
            "specversion": "1.0",
            "id": "e1",
            "source": "chosen-key",
            "type": "m.leak",
            "agmsgtype": "Text",
        }
        await attacker.send(event | {"data": {"content": "from mallory"}})
        # Frames from one worker are routed in order: once this is answered, the event was routed.
        await bounded(attacker.call("remove_subscription", {"id": "no-such-subscription"}))
        # Then a legitimate event to the same agent type, queued after anything the attacker's made.
        sentinel = {"specversion": "1.0", "id": "e2", "source": "sentinel", "type": "vault.ping"}
        published = await client.post(
            "/v1/events",
            json=sentinel | {"agmsgtype": "Text", "data": {"content": "legit"}},
            headers=bearer(TOKENS["carol"]) | EVENT,
        )
        assert published.status_code == 202
        first = await bounded(inbox.get())
        seen = {
            "add_subscription for 'vault'": outcome(added),
            "first agent 'vault' heard from": first[0].key,
        }
        assert seen == {"add_subscription for 'vault'": -32012, "first agent 'vault' heard from": "sentinel"}


# -- 8. lesser holes ----------------------------------------------------------------------------


async def test_8a_the_api_description_needs_a_token_on_a_secured_host() -> None:
    async with secured_host() as server, http(server) as client:
        statuses = {path: (await client.get(path)).status_code for path in ("/openapi.json", "/docs")}
        assert statuses == {"/openapi.json": 401, "/docs": 401}
        with_token = await client.get("/openapi.json", headers=bearer(TOKENS["ops"]))
        assert with_token.status_code == 200


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_8b_refused_handshakes_do_not_flood_the_log() -> None:
    attempts = 300
    handler = _Warnings()
    package = logging.getLogger("autogen_http_runtime")
    package.addHandler(handler)
    try:
        async with secured_host() as server:
            for n in range(attempts):
                with pytest.raises(AssertionError, match="401"):
                    await RawPeer.connect(server.url, bearer(f"guess-{n}"))
    finally:
        package.removeHandler(handler)
    refusals = [line for line in handler.lines if "Refused" in line or "refused" in line]
    assert 1 <= len(refusals) <= 5, f"{len(refusals)} WARNING lines for {attempts} refused handshakes"


class Counting(RoutedAgent):
    def __init__(self, calls: list[str]) -> None:
        super().__init__("counts its calls")
        self.calls = calls

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self.calls.append(message.content)
        return Text(message.content.upper())


async def test_8c_a_request_id_that_cannot_be_answered_is_refused_before_the_call_runs() -> None:
    calls: list[str] = []
    async with secured_host() as server, workers() as make, http(server) as client:
        alice = await make(server.url, token=TOKENS["alice"])
        await alice.register_factory("svc", lambda: Counting(calls))
        payload = {"data_type": "Text", "data": {"content": "lone surrogate"}}
        request = {"jsonrpc": "2.0", "id": "ID", "method": "send", "params": {"payload": payload}}
        request["params"]["recipient"] = {"type": "svc", "key": "k"}
        # The id as JSON text: a lone surrogate, which Python's json reads but UTF-8 cannot carry.
        body = json.dumps(request).replace('"ID"', '"\\ud800"')
        headers = bearer(TOKENS["carol"]) | {"Content-Type": "application/json"}
        answer = await client.post("/v1/rpc", content=body.encode(), headers=headers)
        seen: dict[str, Any] = {"status": answer.status_code, "handler ran": bool(calls)}
        if answer.status_code == 200:
            reply = answer.json()
            seen["answer"] = outcome(reply)
            if seen["answer"] == "ok":  # answering it faithfully is fine too, as long as it works
                assert reply["id"] == "\ud800"
                return
        assert seen == {"status": 200, "handler ran": False, "answer": -32600}


async def test_8d_a_connection_is_closed_when_its_token_expires() -> None:
    import jwt

    secret = "a-test-signing-key-of-at-least-32-bytes!"

    async def jwt_authenticator(headers: Mapping[str, str]) -> Identity | None:
        """The authenticator of docs/security.md."""
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], audience="autogen-http")
        except jwt.InvalidTokenError:
            return None
        return Identity(claims["sub"], claims)

    expires = int(time.time()) + 2
    short = jwt.encode({"sub": "alice", "aud": "autogen-http", "exp": expires}, secret, algorithm="HS256")
    ops = jwt.encode({"sub": "ops", "aud": "autogen-http", "exp": 2**40}, secret, algorithm="HS256")
    service = {"authenticator": jwt_authenticator, "access_policy": POLICY}
    async with secured_host(**service) as server, raw_peers() as peers, http(server) as client:
        worker = await RawPeer.connect(server.url, bearer(short))
        peers.append(worker)
        assert outcome(await bounded(worker.hello(name="short-lived"))) == "ok"

        # The worker reads (and so answers the host's close); the host has until one second
        # past the expiry to close the connection.
        try:
            ended: Any = await asyncio.wait_for(worker.recv(), timeout=expires + 1.0 - time.time())
        except asyncio.TimeoutError:
            ended = "still open"
        late = time.time() - expires
        assert ended == {"closed": 1008}, f"{late:.1f} s after its token expired, the connection: {ended}"
        assert late > -0.5, f"closed {-late:.1f} s before its token expired"
        assert await poll(lambda: gone(client, "short-lived", ops), within=TIMEOUT)


async def test_8d_revoking_an_identity_closes_its_connections() -> None:
    async with secured_host() as server, raw_peers() as peers, http(server) as client:
        worker = await RawPeer.connect(server.url, bearer(TOKENS["alice"]))
        peers.append(worker)
        assert outcome(await bounded(worker.hello(name="revoked"))) == "ok"
        # Close every connection of an identity (docs/security.md, "Revoking and expiring").
        assert server.service.revoke("alice") == 1
        assert (await bounded(worker.recv())) == {"closed": 1008}
        assert await poll(lambda: gone(client, "revoked", TOKENS["ops"]), within=TIMEOUT)


async def test_8e_introspection_needs_a_read_permission() -> None:
    async with secured_host() as server, workers() as make, http(server) as client:
        alice = await make(server.url, token=TOKENS["alice"], name="alice-worker")
        await alice.register_factory("rec", lambda: Recorder(asyncio.Queue()))
        await bounded(alice.add_subscription(TypeSubscription("news", "rec", id="alice-news")))
        paths = ("/v1/workers", "/v1/agents", "/v1/subscriptions")
        for_ops = {p: await client.get(p, headers=bearer(TOKENS["ops"])) for p in paths}
        assert {p: answer.status_code for p, answer in for_ops.items()} == dict.fromkeys(paths, 200)
        worker_id = for_ops["/v1/workers"].json()["workers"][0]["worker_id"]
        # Without a read permission: refused (403), or a listing with nothing of anyone else's.
        secrets = (worker_id, "alice-worker", '"rec"', "alice-news")

        def learned(answer: httpx.Response) -> list[str]:
            if answer.status_code == 403:
                return []
            if answer.status_code != 200:
                return [f"HTTP {answer.status_code}"]
            return [secret for secret in secrets if secret in answer.text]

        told = {path: learned(await client.get(path, headers=bearer(TOKENS["mallory"]))) for path in paths}
        assert told == dict.fromkeys(paths, []), "what mallory, with no read permission, learns of alice's"
