"""ReconnectPolicy on its own: the backoff schedule, its jitter and bounds, and what is retried."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from autogen_http_runtime import (
    AgentNotFoundError,
    AgentTypeConflictError,
    CallTimeoutError,
    HostConnectionError,
    HostShuttingDownError,
    ProtocolError,
    ReconnectPolicy,
    RemoteAgentError,
)
from autogen_http_runtime._worker import link as _link
from autogen_http_runtime._worker.link import HostLink

from .utils import bounded


def first(policy: ReconnectPolicy, n: int) -> list[float]:
    return list(itertools.islice(policy.delays(), n))


@pytest.fixture
def random_value(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Pin what the policy's ``random.random()`` returns: set ``value[0]``."""
    value = [0.5]
    monkeypatch.setattr(_link.random, "random", lambda: value[0])
    yield value


# -- the schedule ------------------------------------------------------------------------


def test_without_jitter_delays_grow_by_the_multiplier_up_to_max_delay() -> None:
    policy = ReconnectPolicy(initial_delay=0.1, max_delay=2.0, multiplier=2.0, jitter=0.0)
    assert first(policy, 8) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])


def test_other_multiplier_and_cap() -> None:
    policy = ReconnectPolicy(initial_delay=0.5, max_delay=10.0, multiplier=3.0, jitter=0.0)
    assert first(policy, 6) == pytest.approx([0.5, 1.5, 4.5, 10.0, 10.0, 10.0])


def test_multiplier_one_is_a_constant_delay() -> None:
    policy = ReconnectPolicy(initial_delay=0.3, max_delay=5.0, multiplier=1.0, jitter=0.0)
    assert first(policy, 5) == pytest.approx([0.3] * 5)


def test_initial_delay_above_max_delay_is_capped_from_the_first_attempt() -> None:
    # The documented rule is min(initial_delay * multiplier**(n-1), max_delay) for every n.
    policy = ReconnectPolicy(initial_delay=5.0, max_delay=2.0, multiplier=2.0, jitter=0.0)
    assert first(policy, 3) == pytest.approx([2.0, 2.0, 2.0])


def test_the_default_policy_starts_small_and_caps() -> None:
    policy = ReconnectPolicy(jitter=0.0)
    delays = first(policy, 50)
    assert delays[0] == pytest.approx(policy.initial_delay)
    assert delays == sorted(delays)
    assert max(delays) == pytest.approx(policy.max_delay)
    assert policy.max_attempts is None


def test_jitter_stays_within_its_fraction_and_spreads() -> None:
    policy = ReconnectPolicy(initial_delay=0.1, max_delay=2.0, multiplier=2.0, jitter=0.25)
    base = first(ReconnectPolicy(initial_delay=0.1, max_delay=2.0, multiplier=2.0, jitter=0.0), 10)
    seen: list[list[float]] = [[] for _ in base]
    for _ in range(300):
        for n, delay in enumerate(first(policy, len(base))):
            assert base[n] * 0.75 - 1e-12 <= delay <= base[n] * 1.25 + 1e-12, (n, delay)
            seen[n].append(delay)
    for n, samples in enumerate(seen):
        # Random, so not all alike; both halves of the band get used.
        assert min(samples) < base[n] < max(samples), n


@pytest.mark.parametrize(
    ("drawn", "factor"),
    [(0.0, 0.8), (0.5, 1.0), (1.0, 1.2), (0.25, 0.9)],
)
def test_jitter_maps_the_random_draw_linearly(random_value: list[float], drawn: float, factor: float) -> None:
    random_value[0] = drawn
    policy = ReconnectPolicy(initial_delay=1.0, max_delay=8.0, multiplier=2.0, jitter=0.2)
    assert first(policy, 5) == pytest.approx([d * factor for d in (1.0, 2.0, 4.0, 8.0, 8.0)])


def test_jitter_is_applied_around_the_cap_not_before_it(random_value: list[float]) -> None:
    # The cap bounds the base delay; jitter may then lengthen it by up to its fraction.
    random_value[0] = 1.0
    policy = ReconnectPolicy(initial_delay=1.0, max_delay=2.0, multiplier=4.0, jitter=0.5)
    assert first(policy, 3) == pytest.approx([1.5, 3.0, 3.0])


def test_a_jitter_above_one_never_gives_a_negative_delay(random_value: list[float]) -> None:
    random_value[0] = 0.0
    policy = ReconnectPolicy(initial_delay=1.0, max_delay=4.0, jitter=1.5)
    assert first(policy, 4) == [0.0, 0.0, 0.0, 0.0]


def test_jitter_zero_is_exact_whatever_the_random_draw(random_value: list[float]) -> None:
    policy = ReconnectPolicy(initial_delay=0.25, max_delay=1.0, multiplier=2.0, jitter=0.0)
    for drawn in (0.0, 0.3, 0.999):
        random_value[0] = drawn
        assert first(policy, 4) == [0.25, 0.5, 1.0, 1.0]


@pytest.mark.parametrize("attempts", [0, 1, 3, 10])
def test_max_attempts_bounds_the_number_of_delays(attempts: int) -> None:
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.1, max_attempts=attempts)
    assert len(list(policy.delays())) == attempts


def test_without_max_attempts_the_schedule_never_ends() -> None:
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.1, jitter=0.0)
    delays = first(policy, 10_000)
    assert len(delays) == 10_000 and delays[-1] == pytest.approx(0.1)


def test_each_call_to_delays_starts_over() -> None:
    policy = ReconnectPolicy(initial_delay=0.1, max_delay=1.0, jitter=0.0, max_attempts=3)
    assert list(policy.delays()) == list(policy.delays()) == pytest.approx([0.1, 0.2, 0.4])


def test_the_policy_is_an_immutable_value() -> None:
    policy = ReconnectPolicy(initial_delay=0.2)
    assert policy == ReconnectPolicy(initial_delay=0.2)
    with pytest.raises(AttributeError):
        policy.initial_delay = 1.0


# -- what is retried ------------------------------------------------------------------------


class _MyConnectionError(HostConnectionError):
    pass


@pytest.mark.parametrize(
    "error",
    [
        HostConnectionError("connection refused"),
        CallTimeoutError("hello timed out"),
        HostShuttingDownError("draining"),
        _MyConnectionError("a subclass of a retryable error"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_connection_failures_and_a_draining_host_are_retried(error: BaseException) -> None:
    assert ReconnectPolicy().is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        AgentTypeConflictError("type 'a' is already registered"),
        AgentNotFoundError("no such type"),
        RemoteAgentError("ValueError: bad"),
        ProtocolError("bad frame"),
        ValueError("bad value"),
        RuntimeError("boom"),
        KeyboardInterrupt(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_everything_else_is_fatal(error: BaseException) -> None:
    assert not ReconnectPolicy().is_retryable(error)


# -- overriding ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedPolicy(ReconnectPolicy):
    """Three immediate attempts; a ValueError is worth retrying, a conflict still is not."""

    def delays(self) -> Iterator[float]:
        return iter([0.0, 0.0, 0.0])

    def is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, ValueError) and not isinstance(error, AgentTypeConflictError)


def test_a_subclass_overrides_both_rules() -> None:
    policy = FixedPolicy(initial_delay=9.0)
    assert list(policy.delays()) == [0.0, 0.0, 0.0]
    assert policy.is_retryable(ValueError("now retried"))
    assert not policy.is_retryable(AgentTypeConflictError("still fatal"))
    assert not policy.is_retryable(HostConnectionError("no longer retried"))


class _FakeConnection:
    """Just enough of a HostConnection for HostLink."""

    def __init__(self) -> None:
        self.closed = False

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = True


async def _reconnect_with(policy: ReconnectPolicy, failures: list[BaseException]) -> tuple[HostLink, int]:
    """Open a link, lose it, and reconnect it by ``policy`` through a connect that first fails."""
    calls = 0

    async def connect() -> _FakeConnection:
        nonlocal calls
        calls += 1
        if 1 < calls <= 1 + len(failures):
            raise failures[calls - 2]
        return _FakeConnection()

    link = HostLink(
        connect,
        policy=policy,
        reconnect_timeout=5.0,
        logger=logging.getLogger("test.reconnect"),
    )
    await bounded(link.open())
    assert link.connected
    old = link.connection
    assert old is not None
    old.closed = True
    link.connection_lost(old, "test")
    assert link.reconnecting
    try:
        await bounded(link.ready())
    except HostConnectionError:
        pass
    return link, calls - 1


async def test_the_link_follows_an_overridden_policy() -> None:
    # ValueError is fatal for the default policy but retried by this one.
    link, attempts = await _reconnect_with(FixedPolicy(), [ValueError("flaky"), ValueError("flaky")])
    assert link.connected and attempts == 3
    await link.close()


async def test_the_link_stops_at_an_error_its_policy_calls_fatal() -> None:
    conflict = AgentTypeConflictError("Agent type 'a' is already registered")
    link, attempts = await _reconnect_with(FixedPolicy(), [conflict, ValueError("never reached")])
    assert attempts == 1 and not link.connected and not link.reconnecting
    with pytest.raises(HostConnectionError, match="will not be retried"):
        await bounded(link.ready())
    await link.close()


async def test_the_link_gives_up_when_the_overridden_schedule_runs_out() -> None:
    link, attempts = await _reconnect_with(FixedPolicy(), [ValueError("down")] * 5)
    assert attempts == 3 and not link.connected
    with pytest.raises(HostConnectionError, match="gave up reconnecting after 3 attempt"):
        await bounded(link.ready())
    await link.close()


async def test_the_default_policy_sleeps_its_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(_link.asyncio, "sleep", record)
    policy = ReconnectPolicy(initial_delay=0.5, max_delay=1.0, jitter=0.0, max_attempts=4)
    link, attempts = await _reconnect_with(policy, [HostConnectionError("down")] * 2)
    assert link.connected and attempts == 3
    assert slept == [0.5, 1.0, 1.0]
    await link.close()
