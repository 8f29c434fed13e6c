"""Hostile input: property-based tests of the frame decoder and the routing core, and a live fuzz.

The decoder and the core are pure, so hypothesis drives them directly; the live test throws
thousands of random and mutated frames at a real host over real WebSockets, then checks that
it still routes for real workers. Everything is seeded: a failure reproduces as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import httpx
import pytest
from autogen_core import JSON_DATA_CONTENT_TYPE, AgentId, TopicId, TypeSubscription
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from autogen_http_runtime import HttpAgentServer
from autogen_http_runtime._constants import AGENTS_PATH, HOST_LOGGER, PROTOCOL_VERSION, WORKER_WS_PATH
from autogen_http_runtime._host.core import RoutingCore
from autogen_http_runtime._host.session import WorkerSession
from autogen_http_runtime._protocol import json_codec as _json
from autogen_http_runtime._protocol import wire
from autogen_http_runtime._protocol.wire import ErrorCode, JsonObject, MessageError, Method, Payload

from .conftest import WorkerFactory
from .utils import TIMEOUT, Recorder, Text, Upper, bounded, owners, subscriptions

#: Deterministic and quick: the same examples on every run, nothing stored between runs.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FRAME_TYPES = (wire.Request, wire.Notification, wire.Response, wire.ErrorResponse, wire.Event)
#: What ``decode`` may raise: text that is not JSON, JSON that is not a frame, params not an object.
DECODE_CODES = {ErrorCode.PARSE_ERROR, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_PARAMS}

#: Member names of frames, params, payloads and events: mutations add these more than any other.
FIELD_NAMES = [
    "jsonrpc", "id", "method", "params", "result", "error", "code", "message", "data",
    "specversion", "source", "type", "key", "recipient", "sender", "payload", "data_type",
    "data_content_type", "data_base64", "subscription", "kind", "agent_type", "topic",
    "protocol", "max_message_size", "name", "state", "timeout", "message_id", "agsender",
    "agrecipient", "agmsgtype", "datacontenttype", "traceparent", "tracestate",
]  # fmt: skip
AGENT_TYPES = ["a", "b", "c"]
TOPICS = ["t", "news", "news.x"]
#: Strings that mean something to the protocol, and some that are awkward to carry.
SPECIAL_STRINGS = [
    "", "2.0", "1.0", "hello", "send", "cancel", "bye", PROTOCOL_VERSION, "a", "b/k", "a/",
    "/k", "no spaces", "type", "type_prefix", "application/json", "\ud800", "\udfff x \ud83d",
    "\x00", "é", "日本", "😀", "null", "NaN", "AAAA", "!!!!",
]  # fmt: skip


# -- building frames, valid and not, from a random.Random ------------------------------------


def random_id(rng: random.Random) -> Any:
    return rng.choice([rng.randint(0, 40), f"r{rng.randint(0, 40)}", rng.randint(-(2**63), 2**63)])


def random_string(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(SPECIAL_STRINGS)
    alphabet = "ab_-.:=/ \\\"'{}[]0é\u2028\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def random_json(rng: random.Random, depth: int = 2, *, nan: bool = False) -> Any:
    roll = rng.random()
    if depth > 0 and roll < 0.15:
        return [random_json(rng, depth - 1, nan=nan) for _ in range(rng.randint(0, 3))]
    if depth > 0 and roll < 0.3:
        return {
            rng.choice(FIELD_NAMES): random_json(rng, depth - 1, nan=nan) for _ in range(rng.randint(0, 3))
        }
    scalars: list[Any] = [None, True, False, 0, 1, -1, 2**63, -(2**70), 1.5, -0.0, 1e308, "x"]
    if nan:
        scalars += [float("nan"), float("inf")]
    return rng.choice([*scalars, random_string(rng), rng.randint(-100, 100)])


def retyped(rng: random.Random, value: Any) -> Any:
    """``value`` as some other JSON type."""
    options = [None, True, 0, -1, 2**64, 1.5, "", "1", str(value)[:40], [value], {"v": value}, [], {}]
    return rng.choice([o for o in options if type(o) is not type(value)])


def random_payload(rng: random.Random) -> Payload:
    content_type = rng.choice([JSON_DATA_CONTENT_TYPE, JSON_DATA_CONTENT_TYPE, "application/x-protobuf"])
    if content_type == JSON_DATA_CONTENT_TYPE and rng.random() < 0.8:
        data = json.dumps({"content": random_string(rng)}).encode()
    else:
        data = rng.randbytes(rng.randint(0, 16))
    return Payload(rng.choice(["Text", "Ping", "Nope", ""]), content_type, data)


def routed_request(rng: random.Random, recipient: JsonObject) -> JsonObject:
    """A call for the host to forward to the worker serving ``recipient["type"]``."""
    if rng.random() < 0.7:
        params = {
            "recipient": recipient,
            "sender": rng.choice([None, recipient]),
            "message_id": random_string(rng),
            "payload": wire.payload_to_wire(random_payload(rng)),
        }
        return wire.request(random_id(rng), Method.SEND, params)
    method = rng.choice([Method.AGENT_METADATA, Method.AGENT_SAVE_STATE, Method.AGENT_LOAD_STATE])
    return wire.request(random_id(rng), method, {"recipient": recipient, "state": {"n": 1}})


def valid_frame(
    rng: random.Random, types: list[str] = AGENT_TYPES, topics: list[str] = TOPICS, *, disruptive: bool = True
) -> JsonObject:
    """A frame that follows the protocol, though it may well ask for something that fails.

    ``disruptive`` frames end the sender's session (``bye``) or another's (``hello`` with an
    ``instance`` another connection uses).
    """
    agent_type = rng.choice(types)
    hello = {"protocol": PROTOCOL_VERSION, "name": "fuzz", "max_message_size": rng.choice([1024, 1 << 20])}
    if disruptive and rng.random() < 0.5:
        hello["instance"] = rng.choice(["i1", "i2"])
    recipient = {"type": agent_type, "key": rng.choice(["k", "default", "é"])}
    builders: list[Callable[[], JsonObject]] = [
        lambda: wire.request(random_id(rng), Method.HELLO, hello),
        lambda: wire.request(random_id(rng), Method.REGISTER_AGENT_TYPE, {"type": agent_type}),
        lambda: wire.request(random_id(rng), Method.UNREGISTER_AGENT_TYPE, {"type": agent_type}),
        lambda: wire.request(
            random_id(rng),
            Method.ADD_SUBSCRIPTION,
            {
                "subscription": wire.subscription_to_wire(
                    wire.SubscriptionSpec(
                        f"s{rng.randint(0, 5)}",
                        rng.choice(["type", "type_prefix"]),
                        agent_type,
                        rng.choice(topics),
                    )
                )
            },
        ),
        lambda: wire.request(random_id(rng), Method.REMOVE_SUBSCRIPTION, {"id": f"s{rng.randint(0, 5)}"}),
        lambda: routed_request(rng, recipient),
        lambda: routed_request(rng, recipient),
        lambda: wire.notification(Method.CANCEL, {"id": random_id(rng)}),
        lambda: wire.notification(random_string(rng) or "x", {}),
        lambda: wire.result(random_id(rng), rng.choice([{"payload": None}, random_json(rng)])),
        lambda: wire.error(
            rng.choice([random_id(rng), None]),
            rng.choice(list(ErrorCode)),
            random_string(rng),
            rng.choice([None, random_json(rng)]),
        ),
        lambda: wire.event(
            event_id=f"e{rng.randint(0, 1000)}",
            topic_type=rng.choice(topics),
            topic_source=rng.choice(["s", "default", "x/y"]),
            payload=random_payload(rng),
            sender=rng.choice([None, AgentId(rng.choice(AGENT_TYPES), "k")]),
            trace=rng.choice([{}, {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}]),
        ),
    ]
    if disruptive:
        builders.append(lambda: wire.request(random_id(rng), Method.BYE, {}))
    return rng.choice(builders)()


def _slots(value: Any, out: list[tuple[Any, Any]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((value, key))
            _slots(item, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.append((value, index))
            _slots(item, out)


def mutate(rng: random.Random, frame: JsonObject, *, nan: bool = False) -> JsonObject:
    """Drop, replace, retype or add one to four members anywhere in ``frame``."""
    frame = copy.deepcopy(frame)
    for _ in range(rng.randint(1, 4)):
        slots: list[tuple[Any, Any]] = []
        _slots(frame, slots)
        op = rng.choice(["drop", "replace", "retype", "add"])
        if op == "add" or not slots:
            dicts = [frame, *(c[k] for c, k in slots if isinstance(c[k], dict))]
            rng.choice(dicts)[rng.choice(FIELD_NAMES)] = random_json(rng, nan=nan)
            continue
        container, key = rng.choice(slots)
        if op == "drop":
            del container[key]
        elif op == "replace":
            container[key] = random_json(rng, nan=nan)
        else:
            container[key] = retyped(rng, container[key])
    return frame


def to_wire(frame: wire.Message) -> JsonObject:
    """The dictionary ``encode`` turns back into text, built with the module's own builders."""
    if isinstance(frame, wire.Request):
        return wire.request(frame.id, frame.method, frame.params)
    if isinstance(frame, wire.Notification):
        return wire.notification(frame.method, frame.params)
    if isinstance(frame, wire.Response):
        return wire.result(frame.id, frame.result)
    if isinstance(frame, wire.ErrorResponse):
        return wire.error(frame.id, frame.code, frame.message, frame.data)
    return frame.attributes


# -- hypothesis strategies -------------------------------------------------------------------

#: Any character, lone surrogates and the JSON-significant ones included.
characters = st.one_of(
    st.characters(exclude_categories=()),
    st.characters(categories=["Cs"]),
    st.sampled_from('{}[]":,\\ \t\n0123456789.eE+-tfnul'),
)
any_text = st.text(characters, max_size=60)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(characters, max_size=6))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(SPECIAL_STRINGS),
    any_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=10,
)
#: Objects that look like frames: the members the decoder reads, each maybe there, maybe wrong.
frame_like = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", 2.0]) | json_scalars,
        "specversion": st.sampled_from(["1.0", "1.0", "0.3"]) | json_scalars,
        "id": st.integers(-5, 40) | st.text(max_size=3) | json_values,
        "method": st.sampled_from(["hello", "send", "cancel", ""]) | json_values,
        "params": st.dictionaries(keys, json_values, max_size=4) | json_values,
        "result": json_values,
        "error": st.fixed_dictionaries(
            {}, optional={"code": st.integers() | json_scalars, "message": json_scalars, "data": json_values}
        )
        | json_values,
        "source": st.sampled_from(["s", ""]) | json_scalars,
        "type": st.sampled_from(TOPICS + ["bad topic!"]) | json_scalars,
        "data": json_values,
        "data_base64": st.sampled_from(["AAAA", "!"]) | json_scalars,
        "agsender": st.sampled_from(["a/k", "a", "bad type/k"]) | json_scalars,
        "agrecipient": st.sampled_from(["b/k", "/k"]) | json_scalars,
        "datacontenttype": json_scalars,
    },
)
randoms = st.randoms(use_true_random=False)
valid_frames = randoms.map(valid_frame)
mutated_frames = st.builds(mutate, randoms, valid_frames)


# -- the decoder -----------------------------------------------------------------------------


def check_decode(data: str | bytes) -> wire.Message | None:
    """Decode ``data``: a frame that re-encodes to itself, or a MessageError with a decoder's code."""
    try:
        frame = wire.decode(data)
    except MessageError as exc:
        assert exc.code in DECODE_CODES, exc.code
        assert isinstance(exc.message, str) and exc.message
        assert exc.request_id is None or isinstance(exc.request_id, (int, str))
        return None
    assert isinstance(frame, FRAME_TYPES)
    text = wire.encode(to_wire(frame))
    assert isinstance(text, str) and text.isascii()
    again = wire.decode(text)
    assert type(again) is type(frame)
    assert wire.encode(to_wire(again)) == text
    # NaN is the one JSON value unequal to itself: two reads of the text are equal unless it holds one.
    if json.loads(text) == json.loads(text):
        assert again == frame
    return frame


@FUZZ
@given(any_text)
def test_decode_any_text(text: str) -> None:
    check_decode(text)


@FUZZ
@given(st.binary(max_size=80))
def test_decode_any_bytes(data: bytes) -> None:
    check_decode(data)


@FUZZ
@given(json_values, st.booleans())
def test_decode_any_json(value: Any, ascii_only: bool) -> None:
    check_decode(json.dumps(value, ensure_ascii=ascii_only))


@FUZZ
@given(frame_like)
def test_decode_frame_like_objects(obj: JsonObject) -> None:
    check_decode(json.dumps(obj))


@FUZZ
@given(valid_frames)
def test_valid_frames_decode_and_round_trip(frame: JsonObject) -> None:
    decoded = check_decode(wire.encode(frame))
    assert decoded is not None, frame
    assert to_wire(decoded) == frame


@FUZZ
@given(mutated_frames, st.booleans())
def test_decode_mutated_frames(frame: JsonObject, as_bytes: bool) -> None:
    text = json.dumps(frame)
    check_decode(text.encode() if as_bytes else text)


@FUZZ
@given(valid_frames, st.integers(0, 200))
def test_decode_truncated_frames(frame: JsonObject, cut: int) -> None:
    text = wire.encode(frame)
    check_decode(text[: len(text) * cut // 200])


@pytest.mark.parametrize("depth", [10, 100, 500, 900, 990, 999, 1000, 1001, 5000, 100_000])
def test_decode_deep_nesting(depth: int) -> None:
    for inner in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        check_decode('{"jsonrpc":"2.0","id":1,"result":' + inner + "}")
        check_decode('{"jsonrpc":"2.0","id":1,"method":"send","params":{"x":' + inner + "}}")
        check_decode(inner)


# -- the readers of values inside params -----------------------------------------------------


def _expect_params_error(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except MessageError as exc:
        assert exc.code == ErrorCode.INVALID_PARAMS and exc.message
        return None


def payload_to_dict(rng: random.Random) -> JsonObject:
    return wire.payload_to_wire(random_payload(rng))


payload_like = st.fixed_dictionaries(
    {},
    optional={
        "data_type": st.sampled_from(["Text", ""]) | json_scalars,
        "data_content_type": st.sampled_from([JSON_DATA_CONTENT_TYPE, "x/y"]) | json_scalars,
        "data": json_values,
        "data_base64": st.sampled_from(["", "AAAA", "AA==", "A", "é", "!!!!"]) | any_text | json_scalars,
    },
)


@FUZZ
@given(st.one_of(json_values, payload_like, randoms.map(lambda r: mutate(r, payload_to_dict(r)))))
def test_payload_from_wire_only_raises_frame_errors(value: Any) -> None:
    payload = _expect_params_error(lambda: wire.payload_from_wire(value))
    if payload is not None:
        assert isinstance(payload.data_type, str) and isinstance(payload.data_content_type, str)
        assert isinstance(payload.data, bytes)


@FUZZ
@given(st.text(max_size=20), st.sampled_from([JSON_DATA_CONTENT_TYPE, "application/x-protobuf"]), st.binary())
def test_payloads_round_trip(data_type: str, content_type: str, data: bytes) -> None:
    payload = Payload(data_type, content_type, data)
    back = wire.payload_from_wire(json.loads(wire.encode(wire.payload_to_wire(payload))))
    assert (back.data_type, back.data_content_type) == (data_type, content_type)
    if back.data != data:
        # JSON payloads travel as JSON, so only their meaning survives, not their spacing.
        assert content_type == JSON_DATA_CONTENT_TYPE
        assert json.dumps(json.loads(back.data)) == json.dumps(json.loads(data))


subscription_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["s", ""]) | json_scalars,
        "kind": st.sampled_from(["type", "type_prefix", "prefix"]) | json_scalars,
        "agent_type": st.sampled_from(["a", "bad type", ""]) | json_scalars,
        "topic": st.sampled_from(["t", ""]) | json_scalars,
    },
)


@FUZZ
@given(st.one_of(json_values, subscription_like))
def test_subscription_from_wire_only_raises_frame_errors(value: Any) -> None:
    spec = _expect_params_error(lambda: wire.subscription_from_wire(value))
    if spec is not None:
        assert spec.kind in ("type", "type_prefix") and spec.id
        assert (
            wire.subscription_from_wire(
                wire.subscription_to_wire(
                    wire.SubscriptionSpec(spec.id, spec.kind, spec.agent_type, spec.topic)
                )
            )
            == spec
        )


agent_id_like = st.fixed_dictionaries(
    {},
    optional={"type": st.sampled_from(["a", "a.b-c_1", "bad type", ""]) | json_scalars, "key": json_scalars},
)


@FUZZ
@given(st.dictionaries(st.sampled_from(["recipient", "sender"]), json_values | agent_id_like), st.booleans())
def test_agent_id_from_wire_only_raises_frame_errors(params: JsonObject, optional: bool) -> None:
    for name in ("recipient", "sender"):
        agent_id = _expect_params_error(partial(wire.agent_id_from_wire, params, name, optional=optional))
        if agent_id is None:
            continue
        assert isinstance(agent_id, AgentId)
        assert wire.agent_id_from_wire({name: wire.agent_id_to_wire(agent_id)}, name) == agent_id


event_like = st.fixed_dictionaries(
    {
        "specversion": st.just("1.0"),
        "id": st.just("e"),
        "source": st.just("s"),
        "type": st.sampled_from(TOPICS),
    },
    optional={
        "data": json_values,
        "data_base64": st.sampled_from(["", "AAAA", "A", "é"]) | json_scalars,
        "agsender": st.sampled_from(["a/k", "a/", "a", "bad type/k"]) | any_text,
        "agrecipient": st.sampled_from(["b/k", "/k"]) | any_text,
        "agmsgtype": any_text,
        "datacontenttype": st.sampled_from([JSON_DATA_CONTENT_TYPE, "x/y"]) | any_text,
    },
)
events = st.one_of(event_like, st.builds(mutate, randoms, event_like))


@FUZZ
@given(events)
def test_what_a_worker_reads_from_a_decoded_event_only_raises_frame_errors(obj: JsonObject) -> None:
    try:
        frame = wire.decode(json.dumps(obj))
    except MessageError:
        return
    assert isinstance(frame, wire.Event)
    for name in (wire.EXT_SENDER, wire.EXT_RECIPIENT):
        agent_id = wire.event_agent(frame.attributes, name)
        assert agent_id is None or isinstance(agent_id, AgentId)
    _expect_params_error(lambda: wire.event_payload(frame.attributes))


@FUZZ
@given(
    st.dictionaries(st.sampled_from(["n", "s"]), json_values | st.sampled_from([float("nan"), float("inf")]))
)
def test_number_and_string_readers_only_raise_frame_errors(params: JsonObject) -> None:
    number = _expect_params_error(partial(wire.optional_number, params, "n"))
    assert number is None or (isinstance(number, float) and 0 <= number < float("inf"))
    text = _expect_params_error(partial(wire.required_str, params, "s"))
    assert text is None or (isinstance(text, str) and text)


# -- the routing core ------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def quiet_logger() -> tuple[logging.Logger, _Records]:
    """A router logger of its own, so that a test sees exactly what the core logged."""
    logger = logging.getLogger(f"test.fuzz.router.{time.monotonic_ns()}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    records = _Records()
    logger.addHandler(records)
    return logger, records


def drain(session: WorkerSession) -> list[JsonObject]:
    """What the core queued for ``session``; each must be a frame the decoder reads."""
    out: list[JsonObject] = []
    while not session.outbox.empty():
        text = session.outbox.get_nowait()
        if text is None:
            continue
        assert text.isascii()
        frame = wire.decode(text)  # the host only ever writes frames its own decoder accepts
        assert isinstance(frame, FRAME_TYPES)
        obj = _json.loads(text)  # the codec the host uses, so it reads as deep as the host does
        if "error" in obj:
            assert obj["error"]["code"] != ErrorCode.INTERNAL_ERROR, obj
        out.append(obj)
    return out


def call(router: RoutingCore, session: WorkerSession, request_id: Any, method: str, **params: Any) -> None:
    router.handle_text(session, wire.encode(wire.request(request_id, method, params)))


def check_core(router: RoutingCore) -> None:
    """Every call in flight is known to its caller and its target, and to nothing else."""
    sessions = list(router.sessions.values())
    made = {(id(s), caller_id): host_id for s in sessions for caller_id, host_id in s.calls_made.items()}
    served = {host_id: pending for s in sessions for host_id, pending in s.calls_served.items()}
    assert router.pending_calls == len(made) == len(served)
    for host_id, pending in served.items():
        assert pending.target.calls_served[host_id] is pending
        assert made[(id(pending.caller), pending.caller_id)] == host_id
        assert pending.caller.worker_id in router.sessions and pending.target.worker_id in router.sessions
    for owner in owners(router).values():
        assert owner.worker_id in router.sessions
    owned = [sub_id for s in sessions for sub_id in s.subscription_ids]
    assert sorted(owned) == sorted(sub.id for sub in subscriptions(router))


session_frames = st.one_of(
    valid_frames.map(wire.encode),
    valid_frames.map(wire.encode),
    st.builds(lambda r, f: json.dumps(mutate(r, f, nan=True)), randoms, valid_frames),
    st.builds(lambda r, f: json.dumps(mutate(r, f, nan=True)), randoms, valid_frames),
    frame_like.map(json.dumps),
    json_values.map(json.dumps),
    any_text,
    st.none(),  # a binary frame
    # Calls to the agent types the sessions serve, and answers and cancels aimed at calls
    # really in flight, which random ids seldom hit.
    randoms.map(lambda r: wire.encode(routed_request(r, {"type": r.choice(AGENT_TYPES), "key": "k"}))),
    st.tuples(st.sampled_from(["result", "error", "cancel"]), json_values),
    st.tuples(st.sampled_from(["result", "error", "cancel"]), json_values),
)


def aimed(router: RoutingCore, action: str, value: Any) -> tuple[WorkerSession, str]:
    """A frame about a call in flight, from the session that serves it (answers) or made it (cancel)."""
    sessions = list(router.sessions.values())
    if action == "cancel":
        caller = next((s for s in sessions if s.calls_made), sessions[0])
        return caller, wire.encode(wire.notification(Method.CANCEL, {"id": next(iter(caller.calls_made), 0)}))
    target = next((s for s in sessions if s.calls_served), sessions[0])
    host_id = next(iter(target.calls_served), 1)
    if action == "result":
        return target, json.dumps(wire.result(host_id, value))
    return target, json.dumps(wire.error(host_id, ErrorCode.REMOTE_ERROR, "failed", value))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 3), session_frames), min_size=8, max_size=30))
def test_the_core_survives_any_frames_and_still_routes(frames: list[tuple[int, Any]]) -> None:
    logger, records = quiet_logger()
    router = RoutingCore(logger=logger)
    sessions = [router.open_session() for _ in range(4)]
    for n, session in enumerate(sessions[:3]):  # the fourth never says hello
        call(router, session, "h", Method.HELLO, protocol=PROTOCOL_VERSION)
        if n:
            call(router, session, "r", Method.REGISTER_AGENT_TYPE, type=AGENT_TYPES[n])
    sub = wire.subscription_to_wire(wire.SubscriptionSpec("s0", "type_prefix", "b", "news"))
    call(router, sessions[2], "s", Method.ADD_SUBSCRIPTION, subscription=sub)

    for index, item in frames:
        if item is None:
            router.handle_binary(sessions[index])
        elif isinstance(item, tuple):
            if router.sessions:
                router.handle_text(*aimed(router, *item))
        else:
            router.handle_text(sessions[index], item)
        for session in sessions:
            drain(session)
        check_core(router)
    assert not [r for r in records.records if r.levelno >= logging.ERROR]

    # Two newcomers route a call and an event as if nothing had happened.
    in_flight = router.pending_calls
    caller, callee = router.open_session(), router.open_session()
    for session in (caller, callee):
        call(router, session, 0, Method.HELLO, protocol=PROTOCOL_VERSION)
    call(router, callee, 1, Method.REGISTER_AGENT_TYPE, type="fresh-callee")
    sub = wire.subscription_to_wire(wire.SubscriptionSpec("fresh-sub", "type", "fresh-callee", "fresh-topic"))
    call(router, callee, 2, Method.ADD_SUBSCRIPTION, subscription=sub)
    assert [f.get("error") for f in drain(callee)] == [None, None, None]
    params = {
        "recipient": {"type": "fresh-callee", "key": "k"},
        "payload": {"data_type": "T", "data": {"x": 1}},
    }
    call(router, caller, "call-1", Method.SEND, **params)
    [forwarded] = drain(callee)
    assert forwarded["method"] == Method.SEND and forwarded["params"] == params
    assert isinstance(forwarded["id"], int) and router.pending_calls == in_flight + 1
    router.handle_text(callee, wire.encode(wire.result(forwarded["id"], {"payload": None})))
    assert drain(caller)[-1] == wire.result("call-1", {"payload": None})
    assert router.pending_calls == in_flight
    payload = Payload("T", JSON_DATA_CONTENT_TYPE, b"{}")
    event = wire.event(
        event_id="e", topic_type="fresh-topic", topic_source="k", payload=payload, sender=None, trace={}
    )
    router.handle_text(caller, wire.encode(event))
    [delivered] = drain(callee)
    assert delivered["agrecipient"] == "fresh-callee/k" and delivered["id"] == "e"

    # Once everyone has gone, nothing is left behind.
    for session in [*sessions, caller, callee]:
        router.close_session(session, "test over")
    assert router.pending_calls == 0 and owners(router) == {} and len(subscriptions(router)) == 0
    assert not [r for r in records.records if r.levelno >= logging.ERROR]


def test_replies_nested_at_the_edge_of_what_json_reads_reach_the_caller_or_the_replier() -> None:
    # How deep json.loads reads depends on how deep the stack already is, and writing the
    # reply happens a few frames deeper: somewhere a reply is readable but not writable.
    logger, records = quiet_logger()
    router = RoutingCore(logger=logger)
    caller, callee = router.open_session(), router.open_session()
    for session in (caller, callee):
        call(router, session, 0, Method.HELLO, protocol=PROTOCOL_VERSION)
    call(router, callee, 1, Method.REGISTER_AGENT_TYPE, type="deep")
    drain(caller)
    drain(callee)
    recipient = {"type": "deep", "key": "k"}
    for depth in range(1010, 900, -1):
        call(router, caller, depth, Method.SEND, recipient=recipient, payload={"data_type": "T", "data": 1})
        [forwarded] = drain(callee)
        for inner in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
            text = f'{{"jsonrpc":"2.0","id":{forwarded["id"]},"result":{inner}}}'
            router.handle_text(callee, text)
            to_callee, to_caller = drain(callee), drain(caller)
            if to_caller:
                assert [f["id"] for f in to_caller] == [depth]
                break
            # Unreadable: the replier hears so, and the call waits for a reply it can read.
            [rejected] = to_callee
            assert rejected["error"]["code"] == ErrorCode.PARSE_ERROR and router.pending_calls == 1
        else:
            router.handle_text(callee, wire.encode(wire.result(forwarded["id"], None)))
            assert [f["id"] for f in drain(caller)] == [depth]
        assert router.pending_calls == 0
    assert not [r for r in records.records if r.levelno >= logging.ERROR]


def test_requests_and_events_nested_at_the_edge_get_a_protocol_error_not_an_internal_one() -> None:
    logger, records = quiet_logger()
    router = RoutingCore(logger=logger)
    caller, callee = router.open_session(), router.open_session()
    for session in (caller, callee):
        call(router, session, 0, Method.HELLO, protocol=PROTOCOL_VERSION)
    call(router, callee, 1, Method.REGISTER_AGENT_TYPE, type="deep")
    sub = wire.subscription_to_wire(wire.SubscriptionSpec("s", "type", "deep", "t"))
    call(router, callee, 2, Method.ADD_SUBSCRIPTION, subscription=sub)
    drain(caller)
    drain(callee)
    request = (
        '{"jsonrpc":"2.0","id":"q","method":"send","params":{"recipient":{"type":"deep","key":"k"},'
        '"payload":{"data_type":"T","data":INNER}}}'
    )
    event = '{"specversion":"1.0","id":"e","source":"s","type":"t","data":INNER}'
    outcomes: set[int | str] = set()
    # Around the standard library's depth limit on CPython 3.11, and far past every reader's
    # (on 3.12 and later json reads deeper than 1,010).
    for depth in [100_000, *range(1010, 900, -1)]:
        inner = "[" * depth + "]" * depth
        router.handle_text(caller, request.replace("INNER", inner))
        router.handle_text(caller, event.replace("INNER", inner))
        answers = drain(caller)  # each is forwarded, or answered with an error that is not -32603
        outcomes.update(f["error"]["code"] for f in answers)
        for forwarded in drain(callee):
            outcomes.add(forwarded.get("method", "event"))
            if "method" in forwarded:
                router.handle_text(callee, wire.encode(wire.result(forwarded["id"], None)))
                assert drain(caller) == [wire.result("q", None)]
    assert not [r for r in records.records if r.levelno >= logging.ERROR]
    # Too deep to read, or read and forwarded; in between (on CPython 3.11, where json's depth
    # limit counts Python frames) read but too deep to forward, which is -32600.
    assert {ErrorCode.PARSE_ERROR, "send", "event"} <= outcomes, outcomes
    assert outcomes <= {ErrorCode.PARSE_ERROR, ErrorCode.INVALID_REQUEST, "send", "event"}, outcomes


@pytest.mark.parametrize("limit", ["NaN", "Infinity", "-Infinity", "1" * 400, "1e400", "-0.0", "1024.5"])
def test_hello_with_a_number_json_reads_but_no_limit_can_be_is_invalid_params(limit: str) -> None:
    logger, records = quiet_logger()
    router = RoutingCore(logger=logger)
    session = router.open_session()
    hello = '{"jsonrpc":"2.0","id":1,"method":"hello","params":{"protocol":"P","max_message_size":L}}'
    router.handle_text(session, hello.replace("P", PROTOCOL_VERSION).replace("L", limit))
    [reply] = drain(session)
    assert reply["id"] == 1 and reply["error"]["code"] == ErrorCode.INVALID_PARAMS
    assert not session.greeted
    assert not [r for r in records.records if r.levelno >= logging.ERROR]


# -- a live host -------------------------------------------------------------------------------

LIVE_SEED = 20240611
CLIENTS = 4
FRAMES_PER_CLIENT = 1500
LIVE_TYPES = ["upper", "recorder", "nobody", "bad type!", *(f"fuzz-{n}" for n in range(CLIENTS))]
LIVE_TOPICS = ["fuzz-news", "unheard", "unheard.x", "t"]
DONE = "fuzz-done"


def _ws_url(server: HttpAgentServer) -> str:
    return server.url.replace("http", "ws", 1) + WORKER_WS_PATH


def _deep(rng: random.Random) -> str:
    depth = rng.choice([50, 500, rng.randint(900, 1000), 5000, 200_000])
    inner = rng.choice(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth, "[" * depth])
    template = rng.choice(
        [
            f'{{"jsonrpc":"2.0","id":{rng.randint(0, 50)},"result":INNER}}',
            '{"jsonrpc":"2.0","id":"d","method":"send","params":{"recipient":{"type":"upper","key":"k"},'
            '"payload":{"data_type":"Text","data":INNER}}}',
            '{"specversion":"1.0","id":"e","source":"s","type":"fuzz-news","data":INNER}',
            "INNER",
        ]
    )
    return template.replace("INNER", inner)


def _huge(rng: random.Random) -> str:
    size = rng.randint(100_000, 1_000_000)
    blob = "".join(rng.choice('xé\u2028\\"') for _ in range(64)) * (size // 64)
    text_payload = {"data_type": "Text", "data": {"content": blob}}
    frames = [
        wire.request("big", Method.SEND, {"recipient": {"type": rng.choice(LIVE_TYPES), "key": "k"}}),
        wire.request(
            "big", Method.SEND, {"recipient": {"type": "upper", "key": "k"}, "payload": text_payload}
        ),
        wire.request("big", blob[:100_000], {}),
        {"specversion": "1.0", "id": "big", "source": blob[:1000], "type": "unheard", "data": blob},
    ]
    frames[0]["params"]["payload"] = blob
    text = json.dumps(rng.choice(frames))
    return rng.choice([text, text[: len(text) // 2], blob])


def _surrogates(rng: random.Random) -> str:
    lone = rng.choice(["\\ud800", "\\udfff", "\\ud83d", "\\udc80x", "\\ud800\\ud800"])
    templates = [
        '{"jsonrpc":"2.0","id":"s","method":"%s","params":{}}',
        '{"jsonrpc":"2.0","id":"s","method":"register_agent_type","params":{"type":"%s"}}',
        '{"jsonrpc":"2.0","id":"s","method":"send","params":{"recipient":{"type":"upper","key":"%s"},'
        '"payload":{"data_type":"Text","data":{"content":"%s"}}}}',
        '{"specversion":"1.0","id":"%s","source":"%s","type":"fuzz-news","data":"%s"}',
        '{"jsonrpc":"2.0","id":"%s","result":"%s"}',
    ]
    template = rng.choice(templates)
    return template.replace("%s", lone)


def hostile_frame(rng: random.Random) -> str | bytes:
    """One frame of the flood: mostly frames that are wrong in some way, some plainly broken."""
    roll = rng.random()
    if roll < 0.30:
        return wire.encode(valid_frame(rng, LIVE_TYPES, LIVE_TOPICS, disruptive=False))
    if roll < 0.55:
        return json.dumps(mutate(rng, valid_frame(rng, LIVE_TYPES, LIVE_TOPICS, disruptive=False), nan=True))
    if roll < 0.62:
        return json.dumps(random_json(rng, 4, nan=True))
    if roll < 0.68:
        text = wire.encode(valid_frame(rng, LIVE_TYPES, LIVE_TOPICS, disruptive=False))
        return text[: rng.randint(0, len(text))]
    if roll < 0.72:
        return "".join(
            chr(rng.choice([rng.randint(0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])) for _ in range(40)
        )
    if roll < 0.76:
        return rng.randbytes(rng.randint(0, 64)) + rng.choice(
            [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b""]
        )
    if roll < 0.82:
        return _surrogates(rng)
    if roll < 0.86:
        return wire.encode(wire.result(rng.randint(10**6, 10**7), {"payload": None}))  # an unknown id
    if roll < 0.90:
        return wire.encode(wire.notification(Method.CANCEL, {"id": random_id(rng)}))
    if roll < 0.96:
        return wire.encode(
            wire.request(random_id(rng), Method.SEND, {"recipient": {"type": "nobody", "key": "k"}})
        )
    if roll < 0.995:
        return _deep(rng)
    return _huge(rng)


class FuzzClient:
    """A raw WebSocket client that floods the host and reads everything it is sent, concurrently.

    It answers some of the calls the host forwards to it (with more garbage), so that replies
    to calls that are really in flight get fuzzed too.
    """

    def __init__(self, ws: ClientConnection, rng: random.Random) -> None:
        self.ws = ws
        self.rng = rng
        self.received = 0
        self.done = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                self.received += 1
                assert isinstance(message, str), "the host writes text frames only"
                frame = json.loads(message)
                assert isinstance(frame, dict)
                if frame.get("id") == DONE:
                    self.done.set()
                elif "method" in frame and "id" in frame and self.rng.random() < 0.6:
                    answer = self.rng.choice(
                        [
                            wire.result(frame["id"], {"payload": None}),
                            wire.result(frame["id"], random_json(self.rng, 3)),
                            wire.error(frame["id"], ErrorCode.REMOTE_ERROR, "no", {"type": "X"}),
                            mutate(self.rng, wire.result(frame["id"], {"payload": None})),
                        ]
                    )
                    await self.ws.send(json.dumps(answer))

    async def flood(self, count: int) -> None:
        for n in range(count):
            await self.ws.send(hostile_frame(self.rng))
            if n % 50 == 0:
                await asyncio.sleep(0)  # let the host and the readers keep up
        # Frames from one connection are handled in order: the answer to this one comes last.
        await self.ws.send(wire.encode(wire.request(DONE, "no_such_method", {})))
        await bounded(self.done.wait())


@contextlib.asynccontextmanager
async def fuzz_clients(server: HttpAgentServer, rng: random.Random) -> AsyncIterator[list[FuzzClient]]:
    clients: list[FuzzClient] = []
    try:
        for n in range(CLIENTS):
            ws = await connect(_ws_url(server), open_timeout=TIMEOUT, close_timeout=2, max_size=None)
            clients.append(FuzzClient(ws, random.Random(rng.random())))
            if n < CLIENTS - 1:  # the last one never says hello
                await ws.send(wire.encode(wire.request(0, Method.HELLO, {"protocol": PROTOCOL_VERSION})))
                await ws.send(wire.encode(wire.request(1, Method.REGISTER_AGENT_TYPE, {"type": f"fuzz-{n}"})))
                sub = wire.subscription_to_wire(
                    wire.SubscriptionSpec(f"fuzz-sub-{n}", "type_prefix", f"fuzz-{n}", "t")
                )
                await ws.send(wire.encode(wire.request(2, Method.ADD_SUBSCRIPTION, {"subscription": sub})))
        yield clients
    finally:
        # Close all at once and keep reading meanwhile: a client that stopped reading could
        # hold the host back (back-pressure) from reading the others' close frames.
        await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
        _, stuck = await asyncio.wait([c.reader for c in clients] or [asyncio.sleep(0)], timeout=TIMEOUT)
        for task in stuck:
            task.cancel()


async def eventually(condition: Callable[[], bool], seconds: float = TIMEOUT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.timeout(60)
async def test_a_live_host_survives_a_flood_of_hostile_frames(
    server: HttpAgentServer, make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    core = server.service.core
    # A real worker serves through the flood: fuzzed calls and events reach it via the host.
    serving = await make_worker()
    inbox: asyncio.Queue[tuple[AgentId, Any, Any]] = asyncio.Queue()
    await Upper.register(serving, "upper", Upper)
    await serving.register_factory("recorder", lambda: Recorder(inbox))
    await bounded(serving.add_subscription(TypeSubscription("fuzz-news", "recorder")))

    rng = random.Random(LIVE_SEED)
    async with fuzz_clients(server, rng) as clients:
        await bounded(asyncio.gather(*(c.flood(FRAMES_PER_CLIENT) for c in clients)), 30)
        assert all(c.received > FRAMES_PER_CLIENT // 2 for c in clients), [c.received for c in clients]

        # A peer beyond saving: a text frame that is not UTF-8 ends its connection, no one else's.
        async with connect(_ws_url(server), open_timeout=TIMEOUT, close_timeout=2) as broken:
            await broken.send(b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}', text=True)
            with pytest.raises(ConnectionClosed):
                await bounded(broken.recv())
            assert broken.close_code == 1007

    # The fuzz clients are gone and so is everything they held.
    await eventually(lambda: len(core.sessions) == 1 and core.pending_calls == 0)
    assert sorted(owners(core)) == ["recorder", "upper"]
    [remaining] = core.sessions.values()
    assert remaining.subscription_ids == {s.id for s in subscriptions(core)}

    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        listing = (await http.get(AGENTS_PATH)).raise_for_status().json()
    assert sorted(listing["agent_types"]) == ["recorder", "upper"] and listing["workers"] == 1

    # The worker that was fuzzed through the host still serves, and two new ones work too.
    caller = await make_worker()
    assert await bounded(caller.send_message(Text("after"), AgentId("upper", "k"))) == Text("AFTER")
    fresh = await make_worker()
    fresh_inbox: asyncio.Queue[tuple[AgentId, Any, Any]] = asyncio.Queue()
    await fresh.register_factory("fresh-recorder", lambda: Recorder(fresh_inbox))
    await bounded(fresh.add_subscription(TypeSubscription("after-fuzz", "fresh-recorder")))
    await Upper.register(fresh, "fresh-upper", Upper)
    assert await bounded(caller.send_message(Text("rpc"), AgentId("fresh-upper", "k"))) == Text("RPC")
    await bounded(caller.publish_message(Text("published"), TopicId("after-fuzz", "src")))
    recipient, message, _ = await bounded(fresh_inbox.get())
    assert recipient == AgentId("fresh-recorder", "src") and message == Text("published")

    host_errors = [r for r in caplog.records if r.name == HOST_LOGGER and r.levelno >= logging.ERROR]
    assert not host_errors, [(r.getMessage(), r.exc_text) for r in host_errors]
    lost = [r for r in caplog.records if "Lost the connection" in r.getMessage()]
    assert not lost, "the fuzzed worker kept its connection"
