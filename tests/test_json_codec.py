"""The wire's JSON codec (``_json``): msgspec and the standard library agree, value for value.

The contract checked here: both codecs read the same text as the same value, ``dumps`` writes
pure-ASCII text that reads back as the same value (with either codec), and values from user
code pass through ``readable`` first, so that a plain ``float("nan")`` stays NaN on the wire.
"Same value" is strict: NaN equals NaN, but ``True`` is not ``1``, ``1`` is not ``1.0``, and
``-0.0`` is not ``0.0``.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from autogen_core import AgentId, BaseAgent, MessageContext
from autogen_core.exceptions import CantHandleException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autogen_http_runtime._protocol import json_codec as _json

from .conftest import WorkerFactory
from .utils import bounded

#: Deterministic and quick: the same examples on every run, nothing stored between runs.
CODEC = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

needs_fast = pytest.mark.skipif(
    not _json.FAST, reason="msgspec is off (not installed, or AUTOGEN_HTTP_JSON=stdlib)"
)

Dumps = Callable[[Any], str]
Loads = Callable[[str | bytes], Any]

#: (dumps, loads) of each codec this process can use: the fast one only when msgspec is on.
STD: tuple[Dumps, Loads] = (_json._std_dumps, _json._std_loads)
CODECS: list[tuple[Dumps, Loads]] = [STD, (_json.dumps, _json.loads)] if _json.FAST else [STD]
LOADERS: list[Loads] = [loads for _, loads in CODECS]
CODEC_IDS = ["stdlib", "fast"][: len(CODECS)]


# -- strict equality ---------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are the same JSON value: NaN is NaN, and bool, int and float never mix."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int) or isinstance(b, int):
        return isinstance(a, int) and isinstance(b, int) and a == b
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, float) and isinstance(b, float)):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, str) or isinstance(b, str):
        return type(a) is str and type(b) is str and a == b
    if isinstance(a, list) or isinstance(b, list):
        return (
            isinstance(a, list)
            and isinstance(b, list)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and list(a) == list(b)  # the same keys in the same order
            and all(same(a[key], b[key]) for key in a)
        )
    return a is None and b is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (True, 1),
        (1, 1.0),
        (0.0, -0.0),
        (float("nan"), None),
        (float("inf"), float("-inf")),
        ([1], [1, 1]),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ({"a": 1}, {"a": True}),
        ("1", 1),
        (None, []),
    ],
)
def test_same_tells_apart_what_json_tells_apart(a: Any, b: Any) -> None:
    assert not same(a, b) and not same(b, a)
    assert same(a, a) and same(b, b)


def test_same_counts_every_nan_as_nan() -> None:
    assert same([float("nan")], [_json.NonFiniteFloat("nan")])
    assert same({"x": -float("nan")}, {"x": float("nan")})


# -- values ------------------------------------------------------------------------------

#: Strings that are awkward to carry: lone surrogates, non-ASCII, controls, escapes.
AWKWARD_STRINGS = [
    "", "\ud800", "\udfff", "\udfff x \ud83d", "\udc00\ud800", "\ud800\ud800", "é", "日本", "😀",
    "\x00", "\x1f", "\x7f", "\u2028\u2029", '"\\/', "NaN", "null", "\ufeff",
]  # fmt: skip

#: A high surrogate then a low one: two code points in a str, but in JSON text (escaped as
#: ``\\ud83d\\ude00``) one character, 😀. No JSON codec can carry such a str unchanged, so the
#: properties leave it out; ``test_a_str_holding_a_surrogate_pair_reads_back_as_one_character``
#: pins what happens to it.
SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def carriable(text: str) -> bool:
    return SURROGATE_PAIR.search(text) is None


#: Every code point, lone surrogates included.
any_char = st.characters(exclude_categories=())
json_strings = st.one_of(st.text(any_char, max_size=10).filter(carriable), st.sampled_from(AWKWARD_STRINGS))
json_ints = st.one_of(
    st.integers(-(2**63), 2**64),
    st.integers(-(2**200), 2**200),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 2**80, -(2**80), 10**400]),
)
json_floats = st.one_of(
    st.floats(),  # NaN, the infinities, -0.0 and subnormals included
    st.sampled_from(
        [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 5e-324, 1.7976931348623157e308, 1e16]
    ),
)
json_scalars = st.one_of(st.none(), st.booleans(), json_ints, json_floats, json_strings)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(json_strings, children, max_size=4),
    ),
    max_leaves=20,
)


def has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(has_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(has_non_finite(item) for item in value.values())
    return False


def check_written(text: str, value: Any) -> None:
    """``text`` is ASCII, and every codec reads it (as text and as bytes) as ``value``."""
    assert isinstance(text, str)
    assert text.isascii(), text
    for loads in LOADERS:
        assert same(loads(text), value), (loads, text, value)
        assert same(loads(text.encode("ascii")), value), (loads, text, value)


# -- properties --------------------------------------------------------------------------


@CODEC
@given(json_values)
def test_stdlib_writes_ascii_that_both_codecs_read_back(value: Any) -> None:
    check_written(_json._std_dumps(value), value)


@needs_fast
@CODEC
@given(json_values)
def test_fast_codec_writes_readable_values_as_ascii_that_both_codecs_read_back(value: Any) -> None:
    ready = _json.readable(value)
    assert same(ready, value)
    check_written(_json.dumps(ready), value)


@needs_fast
@CODEC
@given(json_values.filter(lambda value: not has_non_finite(value)))
def test_fast_codec_writes_finite_values_as_they_are(value: Any) -> None:
    # Without NaN or infinities a value needs no readable() first.
    check_written(_json.dumps(value), value)


@CODEC
@given(json_values)
def test_dumps_always_writes_ascii(value: Any) -> None:
    # Even a value not made readable: msgspec writes a plain NaN as null, but never non-ASCII.
    for dumps, _ in CODECS:
        assert dumps(value).isascii()
    # dumpb is dumps as bytes, for each codec.
    assert _json.dumpb(value) == _json.dumps(value).encode("ascii")
    assert _json._std_dumpb(value) == _json._std_dumps(value).encode("ascii")


@CODEC
@given(json_values)
def test_each_codec_reads_what_the_other_writes_and_writes_it_back(value: Any) -> None:
    # The host's path: read a frame written by a peer (with either codec), write it on as read.
    for writer, _ in CODECS:
        text = writer(_json.readable(value))
        for again, reader in CODECS:
            read = reader(text)
            assert same(read, value), (writer, reader, text)
            check_written(again(read), value)


@CODEC
@given(json_values)
def test_readable_values_keep_nan_through_the_module_codec(value: Any) -> None:
    # The runtime's own path, whichever codec the environment chose.
    ready = _json.readable(value)
    assert same(ready, value)
    assert same(_json.readable(ready), value)
    check_written(_json.dumps(ready), value)


# -- targeted cases ------------------------------------------------------------------------


def test_nan_in_user_state_is_written_as_nan() -> None:
    state = {"x": float("nan"), "y": [float("inf"), float("-inf")], "z": -0.0}
    text = _json.dumps(_json.readable(state))
    assert text.isascii()
    assert "NaN" in text and "-Infinity" in text and "null" not in text
    back = _json.loads(text)
    assert math.isnan(back["x"])
    assert back["y"] == [math.inf, -math.inf]
    assert same(back["z"], -0.0)


@needs_fast
def test_readable_turns_non_finite_floats_into_non_finite_float() -> None:
    ready = _json.readable({"x": float("nan"), "y": [float("inf")], "z": 1.5})
    assert type(ready["x"]) is _json.NonFiniteFloat and math.isnan(ready["x"])
    assert type(ready["y"][0]) is _json.NonFiniteFloat and ready["y"][0] == math.inf
    assert type(ready["z"]) is float


MSGSPEC_REFUSES: list[str | bytes] = [
    b"NaN",
    "NaN",
    "Infinity",
    "-Infinity",
    b"[NaN,1,-Infinity]",
    '{"a":NaN,"b":{"c":Infinity}}',
    '"\\ud800"',
    '"\\udfff x \\ud83d"',
    b'{"\\ud800":"\\udc00\\u00e9"}',
    '"\\ud83d\\ude00"',  # a pair: fine for both, next to the lone ones
    "1e400",
    "-1e400",
    "1" + "0" * 400 + ".0",
    "123456789012345678901234567890",
    "-" + "9" * 40,
    "1" + "0" * 400,
    '[18446744073709551616,-9223372036854775809,1e400,"\\ud800",NaN]',
]


@pytest.mark.parametrize(("dumps", "loads"), CODECS, ids=CODEC_IDS)
@pytest.mark.parametrize("text", MSGSPEC_REFUSES)
def test_what_msgspec_refuses_reads_as_the_standard_library_reads_it(
    text: str | bytes, dumps: Dumps, loads: Loads
) -> None:
    expected = json.loads(text)
    read = loads(text)
    assert same(read, expected)
    # ... and the same codec writes it back as text that reads as the same value.
    check_written(dumps(read), expected)


def test_a_str_holding_a_surrogate_pair_reads_back_as_one_character() -> None:
    # Not the same value: a limit of JSON itself, shared by both codecs (see SURROGATE_PAIR).
    value: dict[str, Any] = {"s": "\ud83d\ude00", "\udbff\udfff": 1}
    assert len(value["s"]) == 2
    for dumps, _ in CODECS:
        text = dumps(_json.readable(value))
        assert text.isascii()
        for loads in LOADERS:
            assert same(loads(text), {"s": "\U0001f600", "\U0010ffff": 1})


@needs_fast
@pytest.mark.parametrize("text", ["NaN", "-Infinity", "1e400", "[NaN]"])
def test_fast_codec_reads_non_finite_numbers_as_non_finite_float(text: str) -> None:
    read = _json.loads(text)
    number = read[0] if isinstance(read, list) else read
    assert type(number) is _json.NonFiniteFloat


NOT_JSON: list[str | bytes] = [
    "",
    " ",
    b"",
    "[1,]",
    '{"a"}',
    '{"a":1,}',
    "01",
    "nan",
    "NaNx",
    "inf",
    "+1",
    ".5",
    "1.",
    '"\x00"',
    "'a'",
    '{"a":1}x',
    "1 2",
    "[",
    "]",
    '"abc',
    '"\\ud80"',
    '"\\x41"',
    "tru",
    "\ufeff{}",
    b"\xff",
    b"\x80",
    b'"\xc3"',
]


@pytest.mark.parametrize("text", NOT_JSON)
def test_text_that_is_not_json_is_a_value_error(text: str | bytes) -> None:
    for loads in LOADERS:
        with pytest.raises(ValueError):
            loads(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b'\xef\xbb\xbf{"a":1}', {"a": 1}),  # UTF-8 with a byte order mark
        ('{"a":"\u00e9"}'.encode("utf-16"), {"a": "\u00e9"}),
        ('["\u00e9"]'.encode("utf-32-le"), ["\u00e9"]),
        (b'"\xed\xa0\x80"', "\ud800"),  # a surrogate encoded as UTF-8, which json reads
    ],
)
def test_bytes_read_as_json_loads_reads_them(text: bytes, value: Any) -> None:
    # HTTP bodies reach loads() as bytes: either codec must take what json.loads takes.
    assert same(_json._std_loads(text), value)
    assert same(_json.loads(text), value)


DEEP = 100_000
DEEP_TEXTS = [
    "[" * DEEP + "]" * DEEP,
    '{"a":' * DEEP + "1" + "}" * DEEP,
    "[" * DEEP + "NaN" + "]" * DEEP,  # msgspec refuses it: the standard library then tries
    "[" * DEEP + '"\\ud800"' + "]" * DEEP,
    "[" * DEEP,
]


@pytest.mark.parametrize("loads", LOADERS, ids=CODEC_IDS)
@pytest.mark.parametrize("index", range(len(DEEP_TEXTS)))
def test_deeply_nested_text_is_a_recursion_or_value_error(index: int, loads: Loads) -> None:
    text = DEEP_TEXTS[index]
    with pytest.raises((RecursionError, ValueError)):
        loads(text)
    with pytest.raises((RecursionError, ValueError)):
        loads(text.encode("ascii"))


def test_deeply_nested_values_are_a_recursion_or_value_error_to_write() -> None:
    value: Any = float("nan")
    for _ in range(DEEP):
        value = [value]
    for dumps, _ in CODECS:
        with pytest.raises((RecursionError, ValueError)):
            dumps(value)
    with pytest.raises((RecursionError, ValueError)):
        _json.dumps(_json.readable(value))


@dataclasses.dataclass
class Point:
    x: int


class Colour(enum.Enum):
    RED = "red"


#: Values JSON cannot carry (the standard library refuses them) that msgspec writes anyway.
MSGSPEC_WRITES = [
    b"bytes",
    bytearray(b"bytes"),
    {1, 2},
    frozenset({1}),
    datetime.date(2020, 1, 1),
    uuid.UUID(int=1),
    decimal.Decimal("1.5"),
    Point(1),
    Colour.RED,
]
CANNOT_CARRY = [*MSGSPEC_WRITES, object(), complex(1, 2), {"a": [object()]}]


@pytest.mark.parametrize("value", CANNOT_CARRY, ids=lambda value: type(value).__name__)
def test_what_json_cannot_carry_is_a_type_error_on_the_way_from_user_code(value: Any) -> None:
    # dumps(readable(...)) is the path of user values to the wire, whichever codec is on.
    with pytest.raises(TypeError):
        _json.dumps(_json.readable(value))
    with pytest.raises(TypeError):
        _json._std_dumps(value)


@needs_fast
@pytest.mark.parametrize("value", CANNOT_CARRY, ids=lambda value: type(value).__name__)
def test_readable_itself_refuses_what_json_cannot_carry(value: Any) -> None:
    # With the standard library readable() returns the value as is, and dumps() refuses it.
    with pytest.raises(TypeError):
        _json.readable(value)


# dumps() itself is given only JSON values (see _protocol/json_codec.py); msgspec would write MSGSPEC_WRITES.
@pytest.mark.parametrize("value", [object(), complex(1, 2)], ids=lambda value: type(value).__name__)
def test_what_no_codec_can_write_is_a_type_error_to_dumps(value: Any) -> None:
    with pytest.raises(TypeError):
        _json.dumps(value)


# -- the environment switch ----------------------------------------------------------------

PROBE = (
    "from autogen_http_runtime._protocol import json_codec as _json; "
    "print(_json.FAST, _json.dumps is _json._std_dumps)"
)


def _probe(env_value: str | None) -> str:
    env = {key: value for key, value in os.environ.items() if key != "AUTOGEN_HTTP_JSON"}
    if env_value is not None:
        env["AUTOGEN_HTTP_JSON"] = env_value
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("env_value", ["stdlib", "STDLIB"])
def test_env_switch_turns_msgspec_off(env_value: str) -> None:
    assert _probe(env_value) == "False True"


def test_msgspec_is_used_when_installed_and_not_turned_off() -> None:
    pytest.importorskip("msgspec")
    assert _probe(None) == "True False"
    assert _probe("") == "True False"


# -- end to end: state with NaN, a big integer and a lone surrogate across workers ----------

ODD_STATE: dict[str, Any] = {"v": float("nan"), "big": 2**80, "s": "\ud800é"}
#: Without the lone surrogate msgspec can write the frame itself, and would write NaN as null.
NAN_STATE: dict[str, Any] = {"v": float("nan"), "big": 2**80}


def check_state(state: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    assert set(state) == set(expected)
    assert isinstance(state["v"], float) and math.isnan(state["v"])
    assert type(state["big"]) is int and state["big"] == 2**80
    if "s" in expected:
        assert type(state["s"]) is str and state["s"] == "\ud800é"


class OddState(BaseAgent):
    """Saves the state it was made with; remembers what it was asked to load."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        super().__init__("keeps awkward state")
        self.state = state
        self.loaded: list[Mapping[str, Any]] = []

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        raise CantHandleException("OddState handles no messages")

    async def save_state(self) -> Mapping[str, Any]:
        return dict(self.state)

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.loaded.append(state)


@pytest.mark.parametrize("state", [ODD_STATE, NAN_STATE], ids=["nan-big-surrogate", "nan-big"])
async def test_awkward_state_crosses_workers_unchanged(
    make_worker: WorkerFactory, state: dict[str, Any]
) -> None:
    serving, calling = await make_worker(), await make_worker()
    await bounded(OddState.register(serving, "odd", lambda: OddState(state)))
    agent_id = AgentId("odd", "k")

    check_state(await bounded(calling.agent_save_state(agent_id)), state)

    await bounded(calling.agent_load_state(agent_id, dict(state)))
    agent = await bounded(serving.try_get_underlying_agent_instance(agent_id, OddState))
    assert len(agent.loaded) == 1
    check_state(agent.loaded[0], state)
    # Saved again after the load: still the same, and the caller's dict was left alone.
    check_state(await bounded(calling.agent_save_state(agent_id)), state)
    assert type(state["v"]) is float
