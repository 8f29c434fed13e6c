"""Security over real sockets: TLS and mTLS, authentication, authorisation, sender checks, limits."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from autogen_core import AgentId, TopicId, TypeSubscription

from autogen_http_runtime import (
    AccessPolicy,
    AccessRule,
    AuthenticationError,
    BearerTokens,
    HostConnectionError,
    HttpAgentServer,
    HttpAgentService,
    HttpWorkerAgentRuntime,
    Identity,
    PermissionDeniedError,
    RateLimit,
    ReconnectPolicy,
    TLSError,
    TooManyCallsError,
)
from autogen_http_runtime._host.security import RateLimiter

from .test_websocket_client import connect_proxy
from .utils import (
    SERIALIZERS,
    TIMEOUT,
    Recorder,
    Text,
    Upper,
    bounded,
    connected_workers,
    owners,
    subscriptions,
)

TOKENS = {"alice": "alice-secret-token", "bob": "bob-secret-token", "carol": "carol-secret-token"}
POLICY = AccessPolicy(
    {
        "alice": AccessRule(register="upper*", call="*", publish="news", subscribe=["news", "tasks.*"]),
        "bob": AccessRule(register="rec*", call="upper_open", publish="chat", subscribe="chat"),
    }
)


@asynccontextmanager
async def serving(
    address: str = "127.0.0.1", ssl_settings: Mapping[str, Any] | None = None, **service: Any
) -> AsyncIterator[HttpAgentServer]:
    server = HttpAgentServer(address, port=0, service=HttpAgentService(**service), ssl=ssl_settings)
    await bounded(server.start())
    try:
        yield server
    finally:
        await bounded(server.stop(grace=1))


@asynccontextmanager
async def workers() -> AsyncIterator[Callable[..., Any]]:
    started: list[HttpWorkerAgentRuntime] = []

    async def create(url: str, *, start: bool = True, **kwargs: Any) -> HttpWorkerAgentRuntime:
        worker = HttpWorkerAgentRuntime(url, **kwargs)
        worker.add_message_serializer(SERIALIZERS)
        started.append(worker)
        if start:
            await bounded(worker.start())
        return worker

    try:
        yield create
    finally:
        for worker in started:
            await bounded(worker.stop())


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """Files of a host certificate for 127.0.0.1 signed by ``ca``, and the CA's own."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"cert": tmp_path / "host.pem", "key": tmp_path / "host.key", "ca": tmp_path / "ca.pem"}
    cert.cert_chain_pems[0].write_to_path(files["cert"])
    cert.private_key_pem.write_to_path(files["key"])
    ca.cert_pem.write_to_path(files["ca"])
    client = ca.issue_cert("worker-1")
    client.private_key_and_cert_chain_pem.write_to_path(tmp_path / "client.pem")
    return {name: str(path) for name, path in files.items()} | {"client": str(tmp_path / "client.pem")}


def host_tls(files: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"ssl_certfile": files["cert"], "ssl_keyfile": files["key"], **extra}


async def test_a_worker_talks_to_the_host_over_tls(tls: dict[str, str], ca: trustme.CA) -> None:
    async with serving(ssl_settings=host_tls(tls)) as server, workers() as make:
        assert server.url.startswith("https://")
        serving_worker = await make(server.url, ssl_ca=tls["ca"])
        await Upper.register(serving_worker, "upper", lambda: Upper())
        context = ssl.create_default_context()
        ca.configure_trust(context)
        caller = await make(server.url, ssl=context)  # an SSLContext of one's own works too
        reply = await bounded(caller.send_message(Text("over tls"), AgentId("upper", "k")))
        assert reply == Text("OVER TLS")
        assert serving_worker._lifecycle.options.endpoints[0].ws_url.startswith("wss://")


async def test_a_worker_reaches_a_tls_host_through_an_http_proxy(
    tls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(ssl_settings=host_tls(tls)) as server, workers() as make, connect_proxy() as proxied:
        proxy_url, asked = proxied
        serving_worker = await make(server.url, ssl_ca=tls["ca"])
        await Upper.register(serving_worker, "upper", lambda: Upper())
        for name in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        caller = await make(server.url, ssl_ca=tls["ca"])  # TLS end to end, inside the tunnel
        reply = await bounded(caller.send_message(Text("tunnelled"), AgentId("upper", "k")))
        assert reply == Text("TUNNELLED")
        assert asked == [server.url.removeprefix("https://")]


async def test_a_certificate_from_another_ca_is_refused_clearly(tls: dict[str, str], tmp_path: Path) -> None:
    other = trustme.CA()
    other.cert_pem.write_to_path(tmp_path / "other.pem")
    async with serving(ssl_settings=host_tls(tls)) as server, workers() as make:
        for settings in ({"ssl_ca": str(tmp_path / "other.pem")}, {}):  # a wrong CA; the system's trust
            worker = await make(server.url, start=False, **settings)
            with pytest.raises(TLSError, match="certificate is not trusted") as info:
                await bounded(worker.start())
            assert isinstance(info.value, HostConnectionError)
            assert "ssl_ca=" in str(info.value)


async def test_mtls_refuses_a_worker_without_a_client_certificate(tls: dict[str, str]) -> None:
    settings = host_tls(tls, ssl_cert_reqs=ssl.CERT_REQUIRED, ssl_ca_certs=tls["ca"])
    async with serving(ssl_settings=settings) as server, workers() as make:
        anonymous = await make(server.url, start=False, ssl_ca=tls["ca"])
        with pytest.raises(HostConnectionError, match="client certificate"):
            await bounded(anonymous.start())
        serving_worker = await make(server.url, ssl_ca=tls["ca"], ssl_certfile=tls["client"])
        await Upper.register(serving_worker, "upper", lambda: Upper())
        reply = await bounded(serving_worker.send_message(Text("mtls"), AgentId("upper", "k")))
        assert reply == Text("MTLS")


def test_tls_settings_need_a_secure_address(tls: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="not secure"):
        HttpWorkerAgentRuntime("http://127.0.0.1:9000", ssl_ca=tls["ca"])
    with pytest.raises(ValueError, match="not both"):
        HttpWorkerAgentRuntime("https://127.0.0.1:9000", ssl=ssl.create_default_context(), ssl_ca=tls["ca"])
    with pytest.raises(ValueError, match="not both"):
        HttpWorkerAgentRuntime("127.0.0.1:9000", token="t", headers={"authorization": "Bearer u"})


# -- authentication -------------------------------------------------------------------------


async def test_bearer_tokens_parse_and_compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens"
    path.write_text("# name=token\nalice = a-token\n\nbob=b-token  # the second\n")
    store = BearerTokens.from_file(path)
    assert store.names == ["alice", "bob"]
    assert await store({"authorization": "Bearer a-token"}) == Identity("alice")
    assert await store({"authorization": "bearer b-token"}) == Identity("bob")
    assert await store({"authorization": "Bearer a-toke"}) is None
    assert await store({"authorization": "Basic a-token"}) is None
    assert await store({}) is None
    monkeypatch.setenv("AUTOGEN_HTTP_TOKENS", "x=1,y=2")
    assert BearerTokens.from_env().names == ["x", "y"]
    monkeypatch.delenv("AUTOGEN_HTTP_TOKENS")
    with pytest.raises(ValueError, match="AUTOGEN_HTTP_TOKENS"):
        BearerTokens.from_env()
    for bad in ("alice", "a=1,b=1", "a=1,a=2", "a="):
        with pytest.raises(ValueError):
            BearerTokens.parse(bad)


async def test_a_worker_without_a_valid_token_is_refused_at_start() -> None:
    async with serving(authenticator=BearerTokens(TOKENS)) as server, workers() as make:
        for kwargs in ({}, {"token": "wrong"}, {"headers": {"Authorization": "Bearer nope"}}):
            worker = await make(server.url, start=False, **kwargs)
            with pytest.raises(AuthenticationError, match="HTTP 401") as info:
                await bounded(worker.start())
            assert info.value.status == 401
            assert "requires authentication" in str(info.value)
        assert connected_workers(server.service.core) == []
        good = await make(server.url, token=TOKENS["alice"])
        await Upper.register(good, "upper", lambda: Upper())
        assert await bounded(good.send_message(Text("in"), AgentId("upper", "k"))) == Text("IN")
        assert [s.identity.name for s in connected_workers(server.service.core)] == ["alice"]


async def test_an_identity_without_a_rule_is_refused_with_403() -> None:
    async with serving(authenticator=BearerTokens(TOKENS), access_policy=POLICY) as server, workers() as make:
        worker = await make(server.url, start=False, token=TOKENS["carol"])
        with pytest.raises(AuthenticationError, match="HTTP 403") as info:
            await bounded(worker.start())
        assert info.value.status == 403
        assert "'carol' has no access" in str(info.value)


async def test_a_pluggable_authenticator_and_one_that_fails() -> None:
    async def by_header(headers: Mapping[str, str]) -> str | None:
        if headers.get("x-team") == "explode":
            raise RuntimeError("authenticator bug")
        return headers.get("x-team")

    async with serving(authenticator=by_header) as server, workers() as make:
        worker = await make(server.url, headers={"X-Team": "blue"})
        assert [s.identity for s in connected_workers(server.service.core)] == [Identity("blue")]
        await worker.stop()
        broken = await make(server.url, start=False, headers={"X-Team": "explode"})
        with pytest.raises(AuthenticationError):
            await bounded(broken.start())


class _Records(logging.Handler):
    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted = wanted
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.wanted in record.getMessage():
            self.seen.set()


async def test_a_revoked_token_ends_reconnecting_instead_of_retrying_forever() -> None:
    allowed = {"t1"}

    async def tokens(headers: Mapping[str, str]) -> Identity | None:
        token = headers.get("authorization", "").removeprefix("Bearer ")
        return Identity("w") if token in allowed else None

    assert not ReconnectPolicy().is_retryable(AuthenticationError("no"))
    assert not ReconnectPolicy().is_retryable(TLSError("no"))
    assert ReconnectPolicy().is_retryable(HostConnectionError("dropped"))
    log = logging.getLogger("test_security.revoked")
    records = _Records("will not be retried")
    log.addHandler(records)
    try:
        async with serving(authenticator=tokens) as server, workers() as make:
            worker = await make(
                server.url, token="t1", logger=log, reconnect=ReconnectPolicy(initial_delay=0)
            )
            allowed.clear()
            for session in connected_workers(server.service.core):
                session.close(1011, "test drops it")
            await bounded(records.seen.wait())
            with pytest.raises(HostConnectionError, match="HTTP 401"):
                await bounded(worker.send_message(Text("x"), AgentId("upper", "k")))
    finally:
        log.removeHandler(records)


async def test_http_routes_need_a_token_but_the_probes_do_not() -> None:
    async with serving(authenticator=BearerTokens(TOKENS)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            for path in ("/v1/agents", "/v1/workers", "/v1/subscriptions", "/metrics", "/dashboard"):
                refused = await client.get(path)
                assert refused.status_code == 401, path
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert refused.json()["type"] == "urn:autogen-http:problem:unauthenticated"
            wrong = await client.post("/v1/rpc", json={}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            for probe in ("/healthz", "/readyz"):
                assert (await client.get(probe)).status_code == 200
            auth = {"Authorization": f"Bearer {TOKENS['bob']}"}
            assert (await client.get("/v1/agents", headers=auth)).status_code == 200
    async with serving(authenticator=BearerTokens(TOKENS), public_routes=["healthz", "metrics"]) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            assert (await client.get("/metrics")).status_code == 200
            assert (await client.get("/readyz")).status_code == 401


async def test_one_warning_when_listening_beyond_loopback_without_authentication(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="autogen_http_runtime")
    async with serving("127.0.0.1"):
        pass
    async with serving("0.0.0.0", authenticator=BearerTokens(TOKENS)):
        pass
    assert not [r for r in caplog.records if "WITHOUT AUTHENTICATION" in r.getMessage()]
    async with serving("0.0.0.0"):
        pass
    loud = [r for r in caplog.records if "WITHOUT AUTHENTICATION" in r.getMessage()]
    assert len(loud) == 1 and loud[0].levelno == logging.WARNING


async def test_a_jwt_authenticator_as_in_docs_security() -> None:
    import jwt  # PyJWT, a dev dependency: the docs' example, run for real

    secret = "a-test-signing-key-of-at-least-32-bytes!"

    async def jwt_authenticator(headers: Mapping[str, str]) -> Identity | None:
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], audience="autogen-http")
        except jwt.InvalidTokenError:
            return None
        return Identity(claims["sub"], claims)

    good = jwt.encode({"sub": "alice", "aud": "autogen-http", "exp": 2**40}, secret, algorithm="HS256")
    expired = jwt.encode({"sub": "alice", "aud": "autogen-http", "exp": 1}, secret, algorithm="HS256")
    async with serving(authenticator=jwt_authenticator, access_policy=POLICY) as server, workers() as make:
        worker = await make(server.url, token=good)
        await Upper.register(worker, "upper", lambda: Upper())
        assert connected_workers(server.service.core)[0].identity.claims["aud"] == "autogen-http"
        late = await make(server.url, start=False, token=expired)
        with pytest.raises(AuthenticationError):
            await bounded(late.start())


# -- authorisation --------------------------------------------------------------------------


async def test_the_policy_limits_registration_calls_subscriptions_and_publishes() -> None:
    async with serving(authenticator=BearerTokens(TOKENS), access_policy=POLICY) as server, workers() as make:
        alice = await make(server.url, token=TOKENS["alice"])
        bob = await make(server.url, token=TOKENS["bob"])
        await Upper.register(alice, "upper", lambda: Upper())
        await Upper.register(alice, "upper_open", lambda: Upper())
        with pytest.raises(PermissionDeniedError, match="'bob' may not register agent type 'upper_b'"):
            await bounded(Upper.register(bob, "upper_b", lambda: Upper()))
        assert "upper_b" not in owners(server.service.core)
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        await bounded(bob.register_factory("rec", lambda: asyncio.sleep(0, Recorder(inbox))))
        with pytest.raises(PermissionDeniedError, match="may not call agent type 'upper'") as info:
            await bounded(bob.send_message(Text("x"), AgentId("upper", "k")))
        assert info.value.code == -32012
        assert await bounded(bob.send_message(Text("ok"), AgentId("upper_open", "k"))) == Text("OK")
        with pytest.raises(PermissionDeniedError, match="may not subscribe to topic type 'news'"):
            await bounded(bob.add_subscription(TypeSubscription("news", "rec")))
        topics = [sub.topic for sub in subscriptions(server.service.core) if sub.kind == "type"]
        assert "news" not in topics
        # alice may subscribe bob's agents to her topics, and publish there; bob may not publish there.
        await bounded(alice.add_subscription(TypeSubscription("news", "rec")))
        await bounded(bob.add_subscription(TypeSubscription("chat", "rec")))
        denied = server.service.core.stats.errors.get(-32012, 0)
        await bob.publish_message(Text("from bob"), TopicId("news", "s"))
        # A call is a round trip through the host after the publish: then the host has seen it.
        with pytest.raises(PermissionDeniedError):
            await bounded(bob.send_message(Text("x"), AgentId("upper", "k")))
        assert server.service.core.stats.errors[-32012] == denied + 2
        await alice.publish_message(Text("from alice"), TopicId("news", "s"))
        received = await bounded(inbox.get())
        assert received[1] == Text("from alice")
        assert inbox.empty()


async def test_a_worker_cannot_spoof_the_sender() -> None:
    async with serving(authenticator=BearerTokens(TOKENS), access_policy=POLICY) as server, workers() as make:
        alice = await make(server.url, token=TOKENS["alice"])
        bob = await make(server.url, token=TOKENS["bob"])
        await Upper.register(alice, "upper_open", lambda: Upper())
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        await bounded(bob.register_factory("rec", lambda: asyncio.sleep(0, Recorder(inbox))))
        await bounded(bob.add_subscription(TypeSubscription("chat", "rec")))
        with pytest.raises(
            PermissionDeniedError, match="Sender 'upper_open/k' is not an agent of this caller"
        ):
            await bounded(
                bob.send_message(Text("x"), AgentId("upper_open", "k"), sender=AgentId("upper_open", "k"))
            )
        # Its own agents it may name: the call arrives with that sender.
        ok = await bounded(
            bob.send_message(Text("y"), AgentId("upper_open", "k"), sender=AgentId("rec", "me"))
        )
        assert ok == Text("Y")
        denied = server.service.core.stats.errors.get(-32012, 0)
        await bob.publish_message(Text("spoofed"), TopicId("chat", "s"), sender=AgentId("upper_open", "k"))
        await bob.publish_message(Text("honest"), TopicId("chat", "s"), sender=AgentId("rec", "other"))
        received = await bounded(inbox.get())
        assert received[1] == Text("honest") and received[2].sender == AgentId("rec", "other")
        assert server.service.core.stats.errors[-32012] == denied + 1


async def test_the_http_api_is_authorised_per_identity() -> None:
    async with serving(authenticator=BearerTokens(TOKENS), access_policy=POLICY) as server, workers() as make:
        alice = await make(server.url, token=TOKENS["alice"])
        await Upper.register(alice, "upper", lambda: Upper())
        bob = {"Authorization": f"Bearer {TOKENS['bob']}"}
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "send",
            "params": {
                "recipient": {"type": "upper", "key": "k"},
                "payload": {"data_type": "Text", "data": {"content": "x"}},
            },
        }
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            answer = (await client.post("/v1/rpc", json=call, headers=bob)).json()
            assert answer["error"]["code"] == -32012
            event = {
                "specversion": "1.0",
                "id": "e1",
                "source": "s",
                "type": "news",
                "agmsgtype": "Text",
                "data": {"content": "x"},
            }
            refused = await client.post(
                "/v1/events", json=event, headers=bob | {"Content-Type": "application/cloudevents+json"}
            )
            assert refused.status_code == 403, refused.text
            assert "may not publish to topic type 'news'" in refused.json()["detail"]


# -- limits ---------------------------------------------------------------------------------


def test_the_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimit(rate=2, burst=3), clock=lambda: now[0])
    who = Identity("x")
    assert [limiter.take(who) for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert [limiter.take(who) for _ in range(2)] == [True, False]
    assert limiter.take(Identity("y"))  # a bucket per identity
    with pytest.raises(ValueError):
        RateLimit(rate=0, burst=1)


async def test_an_identity_over_its_rate_limit_gets_a_clear_error() -> None:
    limit = RateLimit(rate=0.001, burst=2)
    async with serving(authenticator=BearerTokens(TOKENS), rate_limit=limit) as server, workers() as make:
        worker = await make(server.url, token=TOKENS["alice"])
        await Upper.register(worker, "upper", lambda: Upper())
        for _ in range(2):
            await bounded(worker.send_message(Text("x"), AgentId("upper", "k")))
        with pytest.raises(TooManyCallsError, match="'alice' is over its rate limit"):
            await bounded(worker.send_message(Text("x"), AgentId("upper", "k")))
        other = await make(server.url, token=TOKENS["bob"])  # another identity has its own bucket
        assert await bounded(other.send_message(Text("b"), AgentId("upper", "k"))) == Text("B")
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            event = {
                "specversion": "1.0",
                "id": "e1",
                "source": "s",
                "type": "t",
                "agmsgtype": "Text",
                "data": {"content": "x"},
            }
            headers = {
                "Authorization": f"Bearer {TOKENS['alice']}",
                "Content-Type": "application/cloudevents+json",
            }
            refused = await client.post("/v1/events", json=event, headers=headers)
            assert refused.status_code == 429
            assert "rate limit" in refused.json()["detail"]


async def test_connections_past_max_connections_are_refused_until_one_leaves() -> None:
    async with serving(max_connections=1) as server, workers() as make:
        first = await make(server.url)
        second = await make(server.url, start=False)
        with pytest.raises(HostConnectionError, match="max_connections") as info:
            await bounded(second.start())
        assert not isinstance(info.value, AuthenticationError)
        await first.stop()
        await bounded(second.start())
        assert len(connected_workers(server.service.core)) == 1


async def test_an_identity_past_max_connections_per_identity_is_refused_and_others_are_not() -> None:
    async with (
        serving(authenticator=BearerTokens(TOKENS), max_connections_per_identity=1) as server,
        workers() as make,
    ):
        first = await make(server.url, token=TOKENS["alice"])
        second = await make(server.url, token=TOKENS["alice"], start=False)
        with pytest.raises(HostConnectionError, match="HTTP 429") as info:
            await bounded(second.start())
        assert "Identity 'alice' already has 1 worker connections" in str(info.value)
        assert not isinstance(info.value, AuthenticationError)
        await make(server.url, token=TOKENS["bob"])  # another identity counts on its own
        await first.stop()
        await bounded(second.start())  # alice's connection was freed
        assert len(connected_workers(server.service.core)) == 2


# -- the CLI's settings ---------------------------------------------------------------------


def test_the_serve_command_builds_a_secured_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autogen_http_runtime._cli.main import main
    from autogen_http_runtime._cli.serving import make_server
    from autogen_http_runtime._cli.settings import ServeSettings

    policy = tmp_path / "policy.json"
    policy.write_text('{"rules": {"alice": {"register": ["upper*"], "call": "*"}}}')
    monkeypatch.setenv("AUTOGEN_HTTP_TOKENS", "alice=a-token")
    settings = ServeSettings(
        port=0,
        access_policy=str(policy),
        rate_limit="5",
        max_connections=3,
        max_connections_per_identity="2",
        public_routes="healthz,metrics",
    )
    server = make_server(settings)
    service = server.service
    assert isinstance(service.authenticator, BearerTokens) and service.authenticator.names == ["alice"]
    assert service.core.access is not None
    assert service.core.access.allows(Identity("alice"), "register", "upper_x")
    assert not service.core.access.allows(Identity("alice"), "publish", "news")
    assert service.core.rate_limiter is not None and service.core.rate_limiter.limit == RateLimit(5, 10)
    assert service.max_connections == 3 and service.max_connections_per_identity == 2
    assert ServeSettings(rate_limit="none").limit() is None
    monkeypatch.delenv("AUTOGEN_HTTP_TOKENS")
    tokens = tmp_path / "tokens"
    tokens.write_text("bob=b-token\n")
    assert make_server(ServeSettings(tokens_file=str(tokens))).service.authenticator is not None
    assert main(["serve", "--tokens", "bob", "--port", "0"]) == 2


async def test_a_raw_client_cannot_remove_another_identitys_subscription() -> None:
    import json

    from websockets.asyncio.client import connect

    async with serving(authenticator=BearerTokens(TOKENS), access_policy=POLICY) as server, workers() as make:
        alice = await make(server.url, token=TOKENS["alice"])
        subscription = TypeSubscription("news", "rec")
        await bounded(alice.add_subscription(subscription))
        url = server.url.replace("http://", "ws://") + "/v1/worker"
        headers = {"Authorization": f"Bearer {TOKENS['bob']}"}
        async with connect(url, additional_headers=headers) as ws:

            async def call(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
                await ws.send(
                    json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
                )
                answer: dict[str, Any] = json.loads(await bounded(ws.recv()))
                return answer

            assert "result" in await call(1, "hello", {"protocol": "autogen-http/1"})
            refused = await call(2, "remove_subscription", {"id": subscription.id})
            assert refused["error"]["code"] == -32012
            assert "may not subscribe to topic type 'news'" in refused["error"]["message"]
        assert subscription.id in {s.id for s in subscriptions(server.service.core)}
