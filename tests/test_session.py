"""A session's outbox and back-pressure accounting on their own: no router, no sockets."""

from __future__ import annotations

import asyncio

import pytest

from autogen_http_runtime._host.session import Outbox, WorkerSession
from autogen_http_runtime._protocol.batching import MAX_BATCH_BYTES, MAX_BATCH_FRAMES, joined

from .utils import bounded


def test_outbox_is_a_fifo_with_a_close_marker() -> None:
    outbox = Outbox()
    assert outbox.empty() and outbox.qsize() == 0
    with pytest.raises(asyncio.QueueEmpty):
        outbox.get_nowait()
    for item in (b"a", b"b", None):
        outbox.put_nowait(item)
    assert outbox.qsize() == 3
    assert [outbox.get_nowait() for _ in range(3)] == [b"a", b"b", None]
    assert outbox.empty()


async def test_outbox_get_waits_for_a_put() -> None:
    outbox = Outbox()
    loop = asyncio.get_running_loop()
    loop.call_soon(outbox.put_nowait, b"x")  # runs once get() waits
    assert await bounded(outbox.get()) == b"x"
    outbox.put_nowait(b"y")
    assert await bounded(outbox.get()) == b"y"  # something queued: no wait


async def test_a_cancelled_get_loses_nothing_and_another_may_wait() -> None:
    outbox = Outbox()
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(outbox.get())
    # Both run after the getter started waiting: it is cancelled, then something arrives.
    loop.call_soon(first.cancel)
    loop.call_soon(outbox.put_nowait, b"kept")
    with pytest.raises(asyncio.CancelledError):
        await bounded(first)
    assert await bounded(outbox.get()) == b"kept"
    loop.call_soon(outbox.put_nowait, b"next")
    assert await bounded(outbox.get()) == b"next"


async def test_outbox_has_one_waiter_at_a_time() -> None:
    outbox = Outbox()
    waiter = outbox.wait()
    with pytest.raises(RuntimeError, match="already waiting"):
        outbox.wait()
    outbox.put_nowait(b"x")
    assert waiter.done()
    assert outbox.wait().done()  # something is queued: done at once


@pytest.mark.parametrize("batching", [False, True])
@pytest.mark.parametrize("limit", [1024, 64 * 1024, 16 * 1024 * 1024])
def test_take_batch_keeps_order_and_limits_and_stops_at_the_close_marker(batching: bool, limit: int) -> None:
    frames = [
        *(b"f" * size for size in (10, 500, 2000, 30, 100_000, 5, 5)),
        *(b"s" * 7 for _ in range(MAX_BATCH_FRAMES + 3)),
    ]
    outbox = Outbox()
    for item in [*frames, None, b"after the close marker"]:
        outbox.put_nowait(item)
    taken: list[list[bytes]] = []
    while (batch := outbox.take_batch(limit, batching)) is not None:
        taken.append(batch)
    assert [frame for batch in taken for frame in batch] == frames
    for batch in taken:
        assert len(batch) == 1 or (batching and len(joined(batch)) <= min(limit, MAX_BATCH_BYTES))
        assert len(batch) <= MAX_BATCH_FRAMES
    if batching:  # a batch ends only where the next frame would not fit
        for batch, following in zip(taken, taken[1:], strict=False):
            room = min(limit, MAX_BATCH_BYTES) - len(joined(batch))
            assert len(batch) == MAX_BATCH_FRAMES or len(following[0]) + 1 > room
    assert outbox.get_nowait() == b"after the close marker" and outbox.empty()


def test_drained_follows_queued_bytes_with_hysteresis() -> None:
    session = WorkerSession(worker_id="w", max_message_size=1024, high_water=100, max_queued_bytes=1000)
    assert session.drained.is_set()
    session.send_encoded(b"x" * 60)
    session.send_encoded(b"x" * 60)  # 120 > high water
    assert session.backlogged and not session.drained.is_set()
    session.sent(next_frame(session))  # 60 left: above half of high water
    assert not session.drained.is_set()
    session.sent(next_frame(session))
    assert session.drained.is_set() and session.queued_bytes == 0


def test_drained_never_asked_for_is_set_when_first_asked() -> None:
    session = WorkerSession(worker_id="w", max_message_size=1024, high_water=100, max_queued_bytes=1000)
    session.send_encoded(b"x" * 150)
    session.sent(next_frame(session))
    assert session.drained.is_set()


def test_drop_as_slow_lets_go_of_the_backlog_and_releases_senders() -> None:
    dropped: list[WorkerSession] = []
    session = WorkerSession(
        worker_id="w", max_message_size=1024, high_water=100, max_queued_bytes=300, on_overflow=dropped.append
    )
    for _ in range(3):
        session.send_encoded(b"x" * 90)
    assert not session.drained.is_set()
    session.send_encoded(b"x" * 90)  # past max_queued_bytes
    assert dropped == [session] and session.closed and session.close_code == 1008
    assert session.drained.is_set() and session.queued_bytes == 0
    assert session.outbox.get_nowait() is None and session.outbox.empty()


def next_frame(session: WorkerSession) -> bytes:
    frame = session.outbox.get_nowait()
    assert frame is not None
    return frame
