"""The batches hosts of a cluster send each other: sealed, opened, and refused when they should be. No I/O."""

from __future__ import annotations

import pytest

from autogen_http_runtime._cluster.envelope import (
    FOR_HOST,
    FOR_WORKER,
    MAX_AGE_MS,
    REPLAY_WINDOW,
    BatchReader,
    BatchWriter,
    EnvelopeError,
    Item,
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


def test_a_sealed_batch_opens_to_what_was_sealed() -> None:
    data = BatchWriter(KEY, "c1", "host-a").seal(ITEMS, 42, NOW)
    batch = BatchReader(KEY, "c1").open(data, NOW + 5)
    assert (batch.source, batch.sequence, batch.version, batch.items) == ("host-a", 1, 42, ITEMS)


@pytest.mark.parametrize(
    ("reader", "data", "why"),
    [
        (BatchReader(batch_key("another secret", "c1"), "c1"), None, "bad signature"),
        (BatchReader(batch_key("the secret", "c2"), "c2"), None, "bad signature"),
        (BatchReader(KEY, "c1"), b"AHC1" + b"\0" * 40, "bad signature"),
        (BatchReader(KEY, "c1"), b"nonsense", "not a batch"),
    ],
)
def test_a_batch_that_was_not_signed_with_this_clusters_key_is_refused(
    reader: BatchReader, data: bytes | None, why: str
) -> None:
    sealed = data if data is not None else BatchWriter(KEY, "c1", "host-a").seal(ITEMS, 1, NOW)
    with pytest.raises(EnvelopeError, match=why):
        reader.open(sealed, NOW)


def test_every_byte_is_covered_by_the_signature() -> None:
    data = bytearray(BatchWriter(KEY, "c1", "host-a").seal(ITEMS[:1], 1, NOW))
    reader = BatchReader(KEY, "c1")
    for index in range(4, len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        with pytest.raises(EnvelopeError):
            reader.open(bytes(tampered), NOW)
    assert reader.open(bytes(data), NOW).items == ITEMS[:1]


def test_a_replayed_or_stale_batch_is_refused() -> None:
    writer, reader = BatchWriter(KEY, "c1", "host-a"), BatchReader(KEY, "c1")
    first = writer.seal(ITEMS, 1, NOW)
    reader.open(first, NOW)
    with pytest.raises(EnvelopeError, match="replayed"):
        reader.open(first, NOW)
    with pytest.raises(EnvelopeError, match="clock"):
        reader.open(writer.seal(ITEMS, 1, NOW - MAX_AGE_MS - 1), NOW)
    with pytest.raises(EnvelopeError, match="clock"):
        reader.open(writer.seal(ITEMS, 1, NOW + MAX_AGE_MS + 1), NOW)
    # Another host's numbers are its own; a host forgotten (gone) starts over.
    reader.open(BatchWriter(KEY, "c1", "host-b").seal(ITEMS, 1, NOW), NOW)
    reader.forget("host-a")
    reader.open(BatchWriter(KEY, "c1", "host-a").seal(ITEMS, 1, NOW), NOW)


def test_a_signed_batch_naming_another_cluster_is_refused() -> None:
    # The same secret used by two clusters: the cluster's name is in the key and the header.
    shared = batch_key("the secret", "c1")
    data = BatchWriter(shared, "c2", "host-a").seal(ITEMS, 1, NOW)
    with pytest.raises(EnvelopeError, match="cluster"):
        BatchReader(shared, "c1").open(data, NOW)


def test_requests_and_cancels_are_told_from_event_copies_by_their_first_bytes() -> None:
    # _host/relay.py delivers anything else for a worker as an event copy, unparsed.
    assert wire.encode_bytes(wire.request(7, "send", {"a": 1})).startswith(b'{"jsonrpc":')
    assert wire.encode_bytes(wire.notification("cancel", {"id": 7})).startswith(b'{"jsonrpc":')


def test_a_batch_overtaken_by_a_later_one_is_taken_once_within_the_window() -> None:
    # Two paths between hosts (a direct link and Redis) can swap two batches of one sender.
    writer, reader = BatchWriter(KEY, "c1", "host-a"), BatchReader(KEY, "c1")
    sealed = [writer.seal(ITEMS, 1, NOW) for _ in range(REPLAY_WINDOW + 3)]
    reader.open(sealed[2], NOW)
    assert reader.open(sealed[0], NOW).sequence == 1  # overtaken: still taken
    assert reader.open(sealed[1], NOW).sequence == 2
    for data in sealed[:3]:
        with pytest.raises(EnvelopeError, match="replayed"):
            reader.open(data, NOW)  # each once only
    reader.open(sealed[-1], NOW)  # sequence REPLAY_WINDOW + 3: the window moves on
    assert reader.open(sealed[3], NOW).sequence == 4  # still within the window: taken
    with pytest.raises(EnvelopeError, match="replayed"):
        reader.open(sealed[3], NOW)
    reader.forget("host-a")
    fresh = BatchReader(KEY, "c1")
    fresh.open(sealed[-1], NOW)
    with pytest.raises(EnvelopeError, match="replayed"):
        fresh.open(sealed[1], NOW)  # further behind than the window: refused, cheaply
