"""The batches hosts of a cluster send each other: sealed, opened, refused when they should
be, and put back in the order they were sent. No I/O."""

from __future__ import annotations

import pytest

from autogen_http_runtime._cluster.envelope import (
    FOR_HOST,
    FOR_WORKER,
    MAX_AGE_MS,
    MAX_WAITING,
    MAX_WAITING_BYTES,
    REMEMBER_GONE,
    Batch,
    BatchReader,
    BatchWriter,
    EnvelopeError,
    Item,
    Sequencer,
    batch_key,
)
from autogen_http_runtime._protocol import wire

NOW = 1_800_000_000_000
KEY = batch_key("the secret", "c1")
ITEMS = [
    Item(FOR_WORKER, "a" * 32, b'{"jsonrpc":"2.0"}'),
    Item(FOR_HOST, "", b"x" * 70_000),
    Item(FOR_WORKER, "w", b""),
]


def seal(sequence: int = 1, previous: int = 0, *, to: str = "host-b", now: int = NOW) -> bytes:
    return BatchWriter(KEY, "c1", "host-a").seal(ITEMS, 42, now, to=to, sequence=sequence, previous=previous)


def reader(host: str = "host-b") -> BatchReader:
    return BatchReader(KEY, "c1", host)


def test_a_sealed_batch_opens_to_what_was_sealed() -> None:
    batch = reader().open(seal(7, 5), NOW + 5)
    assert (batch.source, batch.sequence, batch.previous, batch.version, batch.items) == (
        "host-a",
        7,
        5,
        42,
        ITEMS,
    )


@pytest.mark.parametrize(
    ("opener", "data", "why"),
    [
        (BatchReader(batch_key("another secret", "c1"), "c1", "host-b"), None, "bad signature"),
        (BatchReader(batch_key("the secret", "c2"), "c2", "host-b"), None, "bad signature"),
        (reader(), b"AHC2" + b"\0" * 40, "bad signature"),
        (reader(), b"AHC1" + b"\0" * 40, "not a batch"),  # the version before: hosts must agree
        (reader(), b"nonsense", "not a batch"),
    ],
)
def test_a_batch_that_was_not_signed_with_this_clusters_key_is_refused(
    opener: BatchReader, data: bytes | None, why: str
) -> None:
    with pytest.raises(EnvelopeError, match=why):
        opener.open(data if data is not None else seal(), NOW)


def test_every_byte_is_covered_by_the_signature() -> None:
    data = bytearray(
        BatchWriter(KEY, "c1", "host-a").seal(ITEMS[:1], 1, NOW, to="host-b", sequence=1, previous=0)
    )
    for index in range(4, len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        with pytest.raises(EnvelopeError):
            reader().open(bytes(tampered), NOW)
    assert reader().open(bytes(data), NOW).items == ITEMS[:1]


def test_a_stale_batch_or_one_sealed_for_another_host_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="clock"):
        reader().open(seal(now=NOW - MAX_AGE_MS - 1), NOW)
    with pytest.raises(EnvelopeError, match="clock"):
        reader().open(seal(now=NOW + MAX_AGE_MS + 1), NOW)
    # A batch captured on its way to B cannot be played to C.
    with pytest.raises(EnvelopeError, match="sent to host 'host-b'"):
        reader("host-c").open(seal(), NOW)
    # Numbers count up from 1, each batch naming one before it.
    for sequence, previous in ((0, 0), (3, 3), (3, 4), (2, -1)):
        with pytest.raises(EnvelopeError, match="sequence"):
            reader().open(seal(sequence, previous), NOW)


def test_a_signed_batch_naming_another_cluster_is_refused() -> None:
    # The same secret used by two clusters: the cluster's name is in the key and the header.
    shared = batch_key("the secret", "c1")
    data = BatchWriter(shared, "c2", "host-a").seal(ITEMS, 1, NOW, to="host-b", sequence=1, previous=0)
    with pytest.raises(EnvelopeError, match="cluster"):
        BatchReader(shared, "c1", "host-b").open(data, NOW)


def test_requests_and_cancels_are_told_from_event_copies_by_their_first_bytes() -> None:
    # _host/relay.py delivers anything else for a worker as an event copy, unparsed.
    assert wire.encode_bytes(wire.request(7, "send", {"a": 1})).startswith(b'{"jsonrpc":')
    assert wire.encode_bytes(wire.notification("cancel", {"id": 7})).startswith(b'{"jsonrpc":')


def batch(sequence: int, previous: int, source: str = "host-a", size: int = 100) -> Batch:
    return Batch(source, sequence, previous, 1, [], size)


def numbers(batches: list[Batch]) -> list[int]:
    return [b.sequence for b in batches]


def test_batches_go_on_in_the_order_they_were_sent_whichever_came_first() -> None:
    order = Sequencer(max_wait=1.0)
    assert numbers(order.offer(batch(1, 0), 0.0)) == [1]
    assert numbers(order.offer(batch(3, 2), 0.0)) == []  # overtook 2 (a link, while 2 was in Redis)
    assert numbers(order.offer(batch(4, 3), 0.0)) == []
    assert order.waiting == 2
    assert numbers(order.offer(batch(2, 1), 0.1)) == [2, 3, 4]
    # Numbers the sender never handed over (its publish failed), or sealed for other hosts,
    # are not waited for.
    assert numbers(order.offer(batch(7, 4), 0.2)) == [7]
    # Another sender's numbers are its own; its first batch goes on at once.
    assert numbers(order.offer(batch(50, 49, "host-c"), 0.2)) == [50]


def test_a_batch_seen_before_is_refused_whether_it_went_on_or_waits() -> None:
    order = Sequencer(max_wait=1.0)
    order.offer(batch(1, 0), 0.0)
    order.offer(batch(3, 2), 0.0)
    for again in (batch(1, 0), batch(3, 2)):
        with pytest.raises(EnvelopeError, match="replayed"):
            order.offer(again, 0.0)
    # Gone: what waited from it goes; its numbers stay a while, for it may come back (it was
    # declared gone while it lived) and a batch of its must not be played again meanwhile.
    order.forget("host-a", 10.0)
    assert order.waiting == 0
    with pytest.raises(EnvelopeError, match="replayed"):
        order.offer(batch(1, 0), 11.0)
    assert numbers(order.offer(batch(5, 0), 11.0)) == [5]  # back: its next batch goes on
    order.forget("host-a", 20.0)
    order.forget("host-z", 21.0 + REMEMBER_GONE)  # later: what is remembered of host-a goes
    assert numbers(order.offer(batch(1, 0), 22.0 + REMEMBER_GONE)) == [1]


def test_batches_waiting_for_a_lost_one_go_on_without_it_in_time() -> None:
    order = Sequencer(max_wait=1.0)
    order.offer(batch(1, 0), 0.0)
    order.offer(batch(3, 2), 0.5)  # 2 was lost on a link that broke
    order.offer(batch(4, 3), 0.6)
    order.offer(batch(6, 5), 0.7)  # and 5 too
    assert order.next_due() == 1.5
    assert order.overdue(1.4) == []
    assert numbers(order.overdue(1.5)) == [3, 4]
    assert order.next_due() == pytest.approx(1.7)  # 6 came at 0.7
    assert numbers(order.overdue(1.8)) == [6]
    order.offer(batch(9, 8), 1.9)
    order.offer(batch(11, 10), 1.9)
    assert numbers(order.overdue(2.9)) == [9, 11]  # every gap that waited long enough, at once
    assert order.next_due() is None
    with pytest.raises(EnvelopeError, match="replayed"):
        order.offer(batch(2, 1), 1.6)  # came after all: too late, and it is not taken twice
    # Too many waiting, or too many bytes: the oldest gap is given up at once.
    for sequence in range(13, 13 + MAX_WAITING):
        assert order.offer(batch(sequence, sequence - 1), 3.0) == []
    assert numbers(order.offer(batch(13 + MAX_WAITING, 12 + MAX_WAITING), 3.0)) == list(
        range(13, 14 + MAX_WAITING)
    )
    big = MAX_WAITING_BYTES // 2 + 1
    assert order.offer(batch(5000, 4999, size=big), 3.0) == []
    assert numbers(order.offer(batch(5001, 5000, size=big), 3.0)) == [5000, 5001]
