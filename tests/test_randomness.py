"""Random values drawn a page at a time: message ids are version 4 UUIDs; masking keys are fresh."""

from __future__ import annotations

import itertools
import os
import uuid
import warnings

import pytest

from autogen_http_runtime._randomness import message_ids, random_chunks


def test_message_ids_are_version_4_uuids_as_uuid4_writes_them() -> None:
    ids = list(itertools.islice(message_ids(), 3000))  # across several draws of a page
    for text in ids:
        value = uuid.UUID(text)
        assert (value.version, value.variant, str(value)) == (4, uuid.RFC_4122, text)
    assert len(set(ids)) == len(ids)


def test_masking_keys_are_fresh_for_each_frame() -> None:
    keys = list(itertools.islice(random_chunks(4), 3000))  # across several draws of a page
    assert {len(key) for key in keys} == {4}
    assert len(set(keys)) > 2990  # 4 random bytes each: a few repeats at most


def test_a_forked_child_does_not_repeat_its_parents_values() -> None:
    ids = message_ids()
    next(ids)  # a page drawn before the fork
    reader, writer = os.pipe()
    with warnings.catch_warnings():  # 3.12 warns of fork() in a process with threads; the
        warnings.simplefilter("ignore", DeprecationWarning)  # child takes no lock
        child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(writer, next(ids).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        in_child = pipe.read()
    assert os.waitpid(child, 0)[1] == 0
    assert uuid.UUID(in_child) and in_child != next(ids)


def test_chunk_size_must_divide_a_page() -> None:
    with pytest.raises(ValueError, match="divide"):
        random_chunks(3)
