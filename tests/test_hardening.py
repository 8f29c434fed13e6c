"""Issue 16's defences beyond the attack tests (tests/test_attacks*.py): the settings and the
edges of each, over a real host and real workers."""

from __future__ import annotations

import asyncio
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
    AuthenticationError,
    BearerTokens,
    HostConnectionError,
    HttpAgentServer,
    HttpAgentService,
    Identity,
    PermissionDeniedError,
    RateLimit,
    ReconnectPolicy,
    TooManyCallsError,
)
from autogen_http_runtime._logging import Throttled

from .attack_support import RawPeer, bearer, poll, raw_peers, workers
from .utils import TIMEOUT, Text, Upper, bounded, connected_workers, subscriptions

TOKENS = {"alice": "alice-token", "bob": "bob-token", "ops": "ops-token"}


@asynccontextmanager
async def host(**settings: Any) -> AsyncIterator[HttpAgentServer]:
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


class Records(logging.Handler):
    """The messages of the records a logger passes on at ``level`` and above."""

    def __init__(self, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@asynccontextmanager
async def recorded(level: int = logging.WARNING) -> AsyncIterator[Records]:
    records = Records(level)
    package = logging.getLogger("autogen_http_runtime")
    package.addHandler(records)
    try:
        yield records
    finally:
        package.removeHandler(records)


# -- the policy: read, route, instances ---------------------------------------------------------


def test_access_rules_read_route_and_their_defaults() -> None:
    rule = AccessRule(register="a", call="svc*")
    assert rule.route == ("svc*",) and rule.read == ()
    assert AccessRule(call="*", route=()).route == ()
    everything = AccessRule.allow_all()
    assert everything.allows("route", "x") and everything.allows("read", "workers")
    policy = AccessPolicy.from_mapping({"rules": {"m": {"call": ["a"], "route": ["b"], "read": ["agents"]}}})
    rule_m = policy.rule_for(Identity("m"))
    assert rule_m is not None and rule_m.route == ("b",) and rule_m.read == ("agents",)
    with pytest.raises(ValueError, match="Unknown access rule keys"):
        AccessPolicy.from_mapping({"rules": {"m": {"reed": ["agents"]}}})


async def test_read_permission_names_each_listing_and_public_routes_stay_public() -> None:
    policy = AccessPolicy({"alice": AccessRule(read="agents"), "ops": AccessRule.allow_all()})
    settings = {"authenticator": BearerTokens(TOKENS), "access_policy": policy, "public_routes": ["metrics"]}
    async with host(**settings) as server, http(server) as client:
        paths = ("/v1/agents", "/v1/workers", "/v1/subscriptions", "/dashboard")
        alice = {p: (await client.get(p, headers=bearer(TOKENS["alice"]))).status_code for p in paths}
        assert alice == {"/v1/agents": 200, "/v1/workers": 403, "/v1/subscriptions": 403, "/dashboard": 403}
        ops = {p: (await client.get(p, headers=bearer(TOKENS["ops"]))).status_code for p in paths}
        assert ops == dict.fromkeys(paths, 200)
        assert (await client.get("/metrics")).status_code == 200  # public: no identity, no rule


async def test_without_tokens_the_policy_still_applies_to_anonymous_listings() -> None:
    # No authenticator: every caller is 'anonymous', whose rule governs the listings as it
    # does the calls (a policy used to be skipped for HTTP reads when nothing authenticated).
    policy = AccessPolicy({"anonymous": AccessRule(call="*", read="agents")})
    async with host(access_policy=policy) as server, http(server) as client:
        paths = ("/v1/agents", "/v1/workers", "/metrics", "/healthz")
        codes = {p: (await client.get(p)).status_code for p in paths}
        assert codes == {"/v1/agents": 200, "/v1/workers": 403, "/metrics": 403, "/healthz": 200}
        refused = await client.get("/v1/workers")
        assert "Identity 'anonymous' may not read workers." in refused.json()["detail"]


async def test_an_instance_is_shown_only_to_its_own_identity() -> None:
    everyone = AccessPolicy({name: AccessRule.allow_all() for name in TOKENS})
    async with (
        host(authenticator=BearerTokens(TOKENS), access_policy=everyone) as server,
        workers() as make,
        http(server) as client,
    ):
        await make(server.url, token=TOKENS["alice"], name="alice-worker")

        async def instance_for(token: str) -> str:
            listing = (await client.get("/v1/workers", headers=bearer(token))).json()["workers"]
            return str(listing[0]["instance"])

        assert await instance_for(TOKENS["alice"]) != ""
        assert await instance_for(TOKENS["ops"]) == ""


async def test_route_lets_an_identity_subscribe_types_it_does_not_serve() -> None:
    policy = AccessPolicy(
        {
            "alice": AccessRule(register=["svc1", "vault"], subscribe="*"),
            "bob": AccessRule(call="*", route="svc*", subscribe="*"),
        }
    )
    async with host(authenticator=BearerTokens(TOKENS), access_policy=policy) as server, workers() as make:
        bob = await make(server.url, token=TOKENS["bob"])
        await bounded(bob.add_subscription(TypeSubscription("t", "svc1")))
        with pytest.raises(PermissionDeniedError, match="may not subscribe \\(route events to\\) agent type"):
            await bounded(bob.add_subscription(TypeSubscription("t", "vault")))
        assert [s.agent_type for s in subscriptions(server.service.core)] == ["svc1"]


async def test_only_the_identity_that_added_a_subscription_removes_it() -> None:
    # Tokens and no policy: identities differ, and each may do anything but this.
    async with host(authenticator=BearerTokens(TOKENS)) as server, workers() as make:
        first = await make(server.url, token=TOKENS["alice"])
        second = await make(server.url, token=TOKENS["alice"])
        bob = await make(server.url, token=TOKENS["bob"])
        for n in (1, 2):
            await bounded(first.add_subscription(TypeSubscription("t", f"a{n}", id=f"s{n}")))
        with pytest.raises(PermissionDeniedError, match="belongs to another identity"):
            await bounded(bob.remove_subscription("s1"))
        await bounded(second.remove_subscription("s1"))  # another worker of the same identity may
        assert [s.id for s in subscriptions(server.service.core)] == ["s2"]


async def test_another_identity_cannot_resume_an_instance_its_owner_can() -> None:
    async with host(authenticator=BearerTokens(TOKENS)) as server, raw_peers() as peers:
        owner = await RawPeer.connect(server.url, bearer(TOKENS["alice"]))
        peers.append(owner)
        assert "result" in await bounded(owner.hello(instance="i-1"))
        thief = await RawPeer.connect(server.url, bearer(TOKENS["bob"]))
        peers.append(thief)
        refused = await bounded(thief.hello(instance="i-1"))
        assert refused["error"]["code"] == -32012
        assert "belongs to another identity" in refused["error"]["message"]
        assert len(connected_workers(server.service.core)) == 1
        again = await RawPeer.connect(server.url, bearer(TOKENS["alice"]))
        peers.append(again)
        assert "result" in await bounded(again.hello(instance="i-1"))
        assert (await bounded(owner.recv())) == {"closed": 1000}  # replaced, as before


# -- subscriptions: the cap, the rate limit, the replay -------------------------------------------


async def test_subscriptions_per_identity_are_capped() -> None:
    async with host(authenticator=BearerTokens(TOKENS), max_subscriptions=3) as server, workers() as make:
        alice, also_alice = (
            await make(server.url, token=TOKENS["alice"]),
            await make(server.url, token=TOKENS["alice"]),
        )
        bob = await make(server.url, token=TOKENS["bob"])
        for n, worker in enumerate((alice, alice, also_alice)):
            await bounded(worker.add_subscription(TypeSubscription(f"t{n}", "a", id=f"s{n}")))
        with pytest.raises(TooManyCallsError, match="already holds 3 subscriptions.*max_subscriptions"):
            await bounded(alice.add_subscription(TypeSubscription("t9", "a", id="s9")))
        await bounded(bob.add_subscription(TypeSubscription("t9", "b")))  # its own count
        await bounded(also_alice.remove_subscription("s2"))
        await bounded(alice.add_subscription(TypeSubscription("t9", "a", id="s9")))
        assert len(subscriptions(server.service.core)) == 4


async def test_a_subscription_refused_by_the_rate_limit_says_when_to_retry() -> None:
    limit = RateLimit(rate=2, burst=1)
    async with host(authenticator=BearerTokens(TOKENS), rate_limit=limit) as server, raw_peers() as peers:
        peer = await RawPeer.connect(server.url, bearer(TOKENS["alice"]))
        peers.append(peer)
        await bounded(peer.hello())
        specs = [{"id": f"s{n}", "kind": "type", "agent_type": "a", "topic": f"t{n}"} for n in range(2)]
        answers = [await bounded(peer.call("add_subscription", {"subscription": s})) for s in specs]
        assert "result" in answers[0]
        error = answers[1]["error"]
        assert error["code"] == -32011 and "rate limit" in error["message"]
        assert 0 < error["data"]["retry_after"] <= 0.5


async def test_a_worker_replays_its_subscriptions_within_the_hosts_rate_limit() -> None:
    limit = RateLimit(rate=50, burst=2)
    quick = ReconnectPolicy(initial_delay=0.05, max_delay=0.2)
    async with host(authenticator=BearerTokens(TOKENS), rate_limit=limit) as server, workers() as make:
        worker = await make(server.url, start=False, token=TOKENS["alice"], reconnect=quick)
        for n in range(8):  # four times the burst, before start: all go in start()
            await worker.add_subscription(TypeSubscription(f"t{n}", "a", id=f"s{n}"))
        await bounded(worker.start())
        assert len(subscriptions(server.service.core)) == 8
        for session in connected_workers(server.service.core):
            session.close(1011, "test drops it")
        assert await poll(lambda: len(subscriptions(server.service.core)) == 8, within=TIMEOUT)
        assert len(connected_workers(server.service.core)) == 1


async def test_a_subscription_taken_meanwhile_does_not_end_a_reconnecting_worker() -> None:
    slow = ReconnectPolicy(initial_delay=0.3, max_delay=0.3, jitter=0)
    async with recorded() as records, host() as server, workers() as make:
        owner = await make(server.url, reconnect=slow)
        await owner.register_factory("upper", Upper)
        await bounded(owner.add_subscription(TypeSubscription("news", "upper", id="news-sub")))
        other = await make(server.url)
        for session in connected_workers(server.service.core):
            if "upper" in session.agent_types:
                session.close(1011, "test drops it")
        core = server.service.core
        assert await poll(lambda: not subscriptions(core), within=TIMEOUT)
        await bounded(other.add_subscription(TypeSubscription("elsewhere", "other", id="news-sub")))
        # The owner reconnects: its type comes back, the taken subscription is skipped.
        skipped = "The host refused subscription 'news-sub' again after reconnecting"
        assert await poll(lambda: any(line.startswith(skipped) for line in records.lines), TIMEOUT)
        assert await bounded(other.send_message(Text("x"), AgentId("upper", "k"))) == Text("X")
        assert await bounded(owner.send_message(Text("y"), AgentId("upper", "k"))) == Text("Y")


async def test_a_subscription_refused_at_start_fails_the_start() -> None:
    policy = AccessPolicy({"alice": AccessRule(register="a")})
    async with host(authenticator=BearerTokens(TOKENS), access_policy=policy) as server, workers() as make:
        worker = await make(server.url, start=False, token=TOKENS["alice"])
        await worker.add_subscription(TypeSubscription("forbidden", "a"))
        with pytest.raises(PermissionDeniedError):
            await bounded(worker.start())


# -- credentials: expiry and revocation ------------------------------------------------------------


def test_an_identity_expires_at_expires_at_or_at_its_claims_exp() -> None:
    assert Identity("a").expiry is None and not Identity("a").expired()
    assert Identity("a", {"exp": 100}).expiry == 100.0
    assert Identity("a", {"exp": 100}, expires_at=50).expiry == 50
    assert Identity("a", {"exp": "soon"}).expiry is None  # not a number: no expiry
    assert Identity("a", expires_at=time.time() - 1).expired()


async def test_a_worker_whose_identity_expires_is_closed_and_refused_after() -> None:
    expires = time.time() + 1.0

    async def short_lived(headers: Mapping[str, str]) -> Identity | None:
        return Identity("alice", expires_at=expires) if "authorization" in headers else None

    async with recorded() as records, host(authenticator=short_lived) as server, workers() as make:
        worker = await make(server.url, token="t", reconnect=ReconnectPolicy(initial_delay=0.05))
        await worker.register_factory("upper", Upper)
        assert await poll(lambda: not connected_workers(server.service.core), within=TIMEOUT)
        assert time.time() >= expires - 0.1
        # Its reconnection brings the same expired credentials: refused, and not retried.
        assert await poll(lambda: any("will not be retried" in line for line in records.lines), TIMEOUT)
        with pytest.raises(HostConnectionError):
            await bounded(worker.send_message(Text("x"), AgentId("upper", "k")))
        async with http(server) as client:
            assert (await client.get("/v1/agents", headers=bearer("t"))).status_code == 401


async def test_revoking_bearer_tokens_ends_a_worker_for_good() -> None:
    tokens = BearerTokens(TOKENS)
    async with recorded() as records, host(authenticator=tokens) as server, workers() as make:
        alice = await make(server.url, token=TOKENS["alice"], reconnect=ReconnectPolicy(initial_delay=0.05))
        await alice.register_factory("upper", Upper)
        bob = await make(server.url, token=TOKENS["bob"])
        assert tokens.remove("alice") and not tokens.remove("alice")
        assert server.service.revoke("alice") == 1
        assert "upper" not in server.service.core.directory.agent_types()  # forgotten at once
        assert await poll(lambda: any("will not be retried" in line for line in records.lines), TIMEOUT)
        assert [s.identity.name for s in connected_workers(server.service.core)] == ["bob"]
        with pytest.raises(AuthenticationError):
            await bounded(make(server.url, token=TOKENS["alice"]))
        assert server.service.revoke("nobody") == 0
        await bounded(bob.stop())


# -- the rest --------------------------------------------------------------------------------------


class Surrogate(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("answers with a lone surrogate")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        return Text("\ud800")


async def test_answers_holding_lone_surrogates_are_written_as_ascii_json() -> None:
    async with host() as server, workers() as make, raw_peers() as peers, http(server) as client:
        serving = await make(server.url)
        await serving.register_factory("odd", Surrogate)
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "send",
            "params": {
                "recipient": {"type": "odd", "key": "k"},
                "payload": {"data_type": "Text", "data": {"content": "x"}},
            },
        }
        answer = await client.post("/v1/rpc", json=call)
        assert answer.status_code == 200 and answer.content.isascii()
        assert answer.json()["result"]["payload"]["data"] == {"content": "\ud800"}
        peer = await RawPeer.connect(server.url)
        peers.append(peer)
        assert "result" in await bounded(peer.hello(name="\ud800"))
        listing = await client.get("/v1/workers")
        assert listing.status_code == 200
        assert "\ud800" in [w["name"] for w in listing.json()["workers"]]


async def test_denials_are_logged_once_a_minute_per_identity() -> None:
    policy = AccessPolicy({"alice": AccessRule(call="none"), "bob": AccessRule(call="none")})
    async with (
        recorded() as records,
        host(authenticator=BearerTokens(TOKENS), access_policy=policy) as server,
        workers() as make,
    ):
        alice, bob = (
            await make(server.url, token=TOKENS["alice"]),
            await make(server.url, token=TOKENS["bob"]),
        )
        for worker in (alice, alice, alice, bob, bob):
            with pytest.raises(PermissionDeniedError):
                await bounded(worker.send_message(Text("x"), AgentId("upper", "k")))
    denied = [line for line in records.lines if line.startswith("Denied")]
    assert [line.split("'")[1] for line in denied] == ["alice", "bob"]


def test_a_throttled_line_counts_what_it_held_back() -> None:
    now = [0.0]
    log = logging.getLogger("test_hardening.throttled")
    records = Records(logging.DEBUG)
    log.addHandler(records)
    log.setLevel(logging.DEBUG)
    try:
        throttled = Throttled(log, 60, clock=lambda: now[0])
        for _ in range(3):
            throttled.warning("refused %s", "x")
        now[0] = 61
        throttled.warning("refused %s", "y")
    finally:
        log.removeHandler(records)
    assert records.lines[0].startswith("refused x (more like it within 60 s")
    assert records.lines[1:3] == ["refused x", "refused x"]  # at DEBUG
    assert records.lines[3] == "refused y (2 more like it in the last 60 s were logged at DEBUG)"


async def test_the_api_description_may_be_made_public() -> None:
    settings = {"authenticator": BearerTokens(TOKENS), "public_routes": ["openapi", "docs"]}
    async with host(**settings) as server, http(server) as client:
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "autogen-http-runtime host"
        assert "swagger" in (await client.get("/docs")).text.lower()
        assert (await client.get("/v1/agents")).status_code == 401


class Big(RoutedAgent):
    """Answers ``Text("<n>")`` with a text of n characters."""

    def __init__(self) -> None:
        super().__init__("answers big")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        return Text("z" * int(message.content))


async def test_a_caller_that_stays_behind_is_dropped_by_its_own_timer() -> None:
    """Answers hold nobody back, so no sender waits on a caller that reads them too slowly: its
    own transport times it, and drops it after ``slow_consumer_timeout``.

    The caller reads a little all the time, so the kernel (``TCP_USER_TIMEOUT``, which cuts a
    peer that reads nothing) never cuts it: only the host's timer can."""
    mib = 1024 * 1024
    settings = {"max_message_size": mib, "max_queued_bytes": 16 * mib, "slow_consumer_timeout": 0.5}
    async with recorded() as records, host(**settings) as server, workers() as make, raw_peers() as peers:
        serving = await make(server.url, max_message_size=mib, name="serving")
        await serving.register_factory("big", Big)
        stalled = await RawPeer.connect(server.url)
        peers.append(stalled)
        await bounded(stalled.hello(name="stalled"))
        params = {
            "recipient": {"type": "big", "key": "k"},
            "payload": {"data_type": "Text", "data": {"content": "900000"}},
        }
        for _ in range(16):  # 14.4 MB of answers: past high water (8 MiB), short of the limit
            await stalled.request("send", params)

        async def trickle() -> None:
            loop = asyncio.get_running_loop()
            while await loop.sock_recv(stalled.sock, 4096):  # noqa: ASYNC110 - paced, not waiting
                await asyncio.sleep(0.05)  # the pace of a slow reader, not a synchronisation

        reading = asyncio.ensure_future(trickle())
        try:
            core = server.service.core
            assert await poll(lambda: [w.name for w in connected_workers(core)] == ["serving"], TIMEOUT)
        finally:
            reading.cancel()
        assert core.stats.senders_held == 0  # nobody was held back for it
        assert any("dropped: too slow: did not catch up within 0.5 s" in line for line in records.lines)


async def test_a_request_id_with_a_lone_surrogate_is_refused_before_the_call_runs() -> None:
    """Validated first: the answer could carry such an id only as an escape many clients cannot
    read back (test_attacks.py's 8c accepts either; this is the choice the host makes)."""
    async with host() as server, workers() as make, http(server) as client:
        serving = await make(server.url)
        await serving.register_factory("odd", Surrogate)  # would answer, were it called
        body = (
            '{"jsonrpc": "2.0", "id": "\\ud800", "method": "send", "params": {"recipient": '
            '{"type": "odd", "key": "k"}, "payload": {"data_type": "Text", "data": {"content": "x"}}}}'
        )
        answer = await client.post("/v1/rpc", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 200
        assert answer.json() == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": -32600,
                "message": "A string request id must be Unicode text (it holds a lone surrogate).",
            },
        }
        assert server.service.core.stats.calls_routed == 0
